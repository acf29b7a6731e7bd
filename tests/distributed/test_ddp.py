"""DDP with 2 CPU processes (gloo) follows the same loss trajectory, and ends on the same weights, as 1 process with
the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.helpers import write_jsonl

SCRIPT = ROOT / "tests" / "distributed" / "ddp_run.py"


def run(tiny_model_dir, out, devices: int) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tiny_model_dir), str(out), str(devices)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_two_gloo_processes_equal_one_with_the_same_global_batch(tiny_model_dir, tmp_path):
    single = run(tiny_model_dir, tmp_path / "single.pt", devices=1)
    ddp = run(tiny_model_dir, tmp_path / "ddp.pt", devices=2)
    assert len(single["losses"]) == len(ddp["losses"]) == 3
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), atol=1e-5, rtol=1e-5)
    for name, weight in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], weight, atol=1e-5, rtol=1e-4, msg=name)
    for devices in (1, 2):  # checkpoints and exports under DDP (a collective on rank 0 alone would hang)
        run_dir = tmp_path / f"run-{devices}"
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
        assert (run_dir / "hf" / "final" / "lightning_ft.json").exists()


GROUPED_SCRIPT = ROOT / "tests" / "distributed" / "grouped_run.py"


def test_length_grouped_batches_are_dealt_across_ranks(tiny_model_dir, tmp_path):
    """With Lightning's default distributed sampling, the two ranks split global batches of one length-grouped
    order: together they cover every example once per epoch, and each step's two batches hold neighbouring lengths
    (here everything is one mega-batch, so a step takes four consecutive lengths of the sorted order)."""
    words = ["ok", "yes please", "a somewhat longer answer", "the longest answer of them all, by a clear margin"]
    records = [{"instruction": f"Reply {i}.", "output": f"{words[i % 4]} " * (i % 3 + 1)} for i in range(12)]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(GROUPED_SCRIPT), str(tiny_model_dir), str(train), str(tmp_path / "out")]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.rank{rank}", weights_only=False) for rank in (0, 1)]
    first, second = ranks[0]["batches"], ranks[1]["batches"]
    assert len(first) == len(second) == 3  # 12 examples, batches of 2, 2 ranks
    assert sorted(i for batch in first + second for i in batch) == list(range(12))
    lengths = ranks[0]["lengths"]
    descending = sorted(lengths, reverse=True)
    consecutive = sorted(descending[4 * k : 4 * k + 4] for k in range(3))
    steps = [[lengths[i] for i in a] + [lengths[i] for i in b] for a, b in zip(first, second, strict=True)]
    assert sorted(sorted(step, reverse=True) for step in steps) == consecutive
    assert all(min(lengths[i] for i in a) >= max(lengths[i] for i in b) for a, b in zip(first, second, strict=True))


RL_SCRIPT = ROOT / "tests" / "distributed" / "rl_run.py"


def rl_run(tiny_model_dir, out, devices: int, algorithm: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(RL_SCRIPT), str(tiny_model_dir), str(out), str(devices), algorithm]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_grpo_token_aggregation_pools_the_tokens_of_every_rank(tiny_model_dir, tmp_path):
    """DAPO's token-level loss divides by the tokens of the whole global rollout: 2 processes whose completions have
    different lengths end on the weights of 1 process with both halves (a per-rank mean weighs them differently)."""
    single = rl_run(tiny_model_dir, tmp_path / "single.pt", 1, "grpo")
    ddp = rl_run(tiny_model_dir, tmp_path / "ddp.pt", 2, "grpo")
    moved = [name for name, weight in single["weights"].items() if not torch.equal(weight, ddp["weights"][name])]
    assert moved  # the runs trained
    for name, weight in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], weight, atol=1e-6, rtol=1e-5, msg=name)


def test_ppo_adaptive_kl_counts_the_rollouts_of_every_rank(tiny_model_dir, tmp_path):
    """The controller's step is ``steps / horizon`` with steps the global rollout size: 2 processes of 1 rollout each
    move the coefficient as 1 process of 2 does (0.2 · (1 - 0.2 · 2/10) = 0.192 after a step at KL 0, then again)."""
    single = rl_run(tiny_model_dir, tmp_path / "single.pt", 1, "ppo")
    ddp = rl_run(tiny_model_dir, tmp_path / "ddp.pt", 2, "ppo")
    assert ddp["kl_coef"] == pytest.approx(single["kl_coef"], rel=1e-9)
    assert single["kl_coef"] < 0.2 * (1 - 0.2 * 2 / 10) + 1e-9  # moved at least one full step of a 2-rollout batch

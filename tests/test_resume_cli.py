"""Resume through the CLI, as users run it, each run its own process: a run killed with SIGKILL after its step-k
checkpoint and restarted with ``--ckpt_path last`` resumes at step k, in the same run directory, and ends on the
weights of an uninterrupted run (fp32, CPU, dropout on where the recipe has it, so the RNG must resume too); so does a
resume from a periodic checkpoint; several kill/restart cycles in a row too. Each recipe is shuffled, sets
``max_epochs`` (which builds the data loader before the checkpoint is restored) and crosses an epoch boundary after
the resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.helpers import write_jsonl

WORDS = ["hello", "world", "autumn", "leaves", "quiet", "pond", "paris", "france", "metres", "haiku", "tea", "sun"]
STARTUP_LIMIT_S = 300  # a CLI process reaching its hang point; tiny models train in well under a second a step


@dataclass
class Recipe:
    config: str
    data: str  # sft | pairs | prompts
    max_steps: int
    kill_after: list[int]  # the steps whose checkpoints the killed runs stop after, in order
    overrides: list[str] = field(default_factory=list)


RECIPES = {
    # 18 training records in micro-batches of 2, two per step: 5 steps an epoch; dropout 0.05; epoch-end validation.
    "sft_padded": Recipe(
        "sft/lora.yaml",
        "sft",
        max_steps=12,
        kill_after=[4, 8],
        overrides=["--data.packing", "false", "--data.val_fraction", "0.25", "--trainer.accumulate_grad_batches", "2"],
    ),
    "sft_packed": Recipe(
        "sft/lora.yaml",
        "sft",
        max_steps=8,
        kill_after=[4],
        overrides=["--data.val_fraction", "0", "--trainer.accumulate_grad_batches", "1", "--data.max_length", "48"],
    ),
    "dpo_live_reference": Recipe("dpo/dpo_lora.yaml", "pairs", max_steps=6, kill_after=[2]),
    "dpo_precomputed_reference": Recipe(
        "dpo/dpo_lora.yaml",
        "pairs",
        max_steps=6,
        kill_after=[2],
        overrides=["--model.precompute_reference_logps", "true"],
    ),
    "grpo": Recipe(
        "grpo/gsm8k_lora.yaml",
        "prompts",
        max_steps=6,
        kill_after=[2],
        overrides=[
            "--model.reward_funcs",
            "[tests.helpers.reward_target_letter]",
            "--model.reward_weights",
            "[1.0]",
            "--model.num_generations",
            "4",
            "--model.max_new_tokens",
            "8",
        ],
    ),
}


def data_file(directory: Path, kind: str) -> Path:
    if kind == "sft":
        records = [{"instruction": f"Say {w} {i} times.", "output": f"{w} " * (i % 4 + 1)} for i, w in enumerate(WORDS)]
        records *= 2
    elif kind == "pairs":
        records = [{"prompt": f"Say {w}.", "chosen": f"{w} {w}", "rejected": "no"} for w in WORDS[:8]]
    else:
        records = [{"question": f"Say something about {w}.", "answer": str(i)} for i, w in enumerate(WORDS[:8])]
    return write_jsonl(directory / f"{kind}.jsonl", records)


def fit_command(recipe: Recipe, model_dir: Path, train: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_ft.cli",
        "fit",
        "--config",
        str(ROOT / "configs" / recipe.config),
        "--model.model.path",
        str(model_dir),
        "--data.train",
        str(train),
        "--data.batch_size",
        "2",
        "--data.val_fraction",
        "0",
        "--trainer.accumulate_grad_batches",
        "1",
        *recipe.overrides,
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        str(recipe.max_steps),
        "--trainer.max_epochs",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--checkpoint.every_n_train_steps",
        "2",
        "--checkpoint.save_top_k",
        "-1",
        *extra,
    ]


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}


def run(command: list[str], cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=ROOT, env=environment(cache), capture_output=True, text=True, timeout=STARTUP_LIMIT_S
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_and_kill(command: list[str], cache: Path, step: int, work: Path) -> None:
    """Runs until ``step`` optimiser steps and their checkpoint are done, then kills the process with SIGKILL."""
    marker = work / f"hang-{step}"
    log = work / f"killed-at-{step}.log"
    hang = ["--trainer.callbacks+", "tests.helpers.HangAfterStep"]
    hang += ["--trainer.callbacks.step", str(step), "--trainer.callbacks.marker", str(marker)]
    with log.open("w") as output:
        process = subprocess.Popen(command + hang, cwd=ROOT, env=environment(cache), stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + STARTUP_LIMIT_S
            while not marker.exists():
                assert process.poll() is None, f"the run ended before step {step}: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no step {step} within {STARTUP_LIMIT_S} s"
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
    assert marker.read_text() == str(step)


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "lightning_logs" / "version_0" / "hf" / "final" / "adapter_model.safetensors")


def assert_same_weights(resumed: dict[str, torch.Tensor], uninterrupted: dict[str, torch.Tensor]) -> None:
    assert resumed.keys() == uninterrupted.keys()
    for name, weight in uninterrupted.items():
        torch.testing.assert_close(resumed[name], weight, atol=1e-7, rtol=0, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    """``name -> (run root, final weights, data file, datasets cache)`` of the uninterrupted run of each recipe,
    started with ``--ckpt_path last`` on an empty directory: it says so in one line and starts from step 0."""
    runs = {}

    def get(name: str):
        if name not in runs:
            work = tmp_path_factory.mktemp(f"uninterrupted-{name}")
            recipe = RECIPES[name]
            train, cache = data_file(work, recipe.data), work / "hf-datasets"
            result = run(fit_command(recipe, tiny_model_dir, train, work / "run", "--ckpt_path", "last"), cache)
            assert f"No checkpoint to resume from under {work / 'run'}" in result.stderr + result.stdout
            assert "Resumed from" not in result.stderr + result.stdout
            runs[name] = (work / "run", final_weights(work / "run"), train, cache)
        return runs[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_a_killed_run_resumes_with_ckpt_path_last_on_the_uninterrupted_weights(
    name, uninterrupted, tiny_model_dir, tmp_path
):
    recipe = RECIPES[name]
    _, expected, train, cache = uninterrupted(name)
    root = tmp_path / "run"
    command = fit_command(recipe, tiny_model_dir, train, root, "--ckpt_path", "last")
    resumed_at = 0
    for step in recipe.kill_after:  # each cycle resumes the previous one's checkpoint, then is killed again
        run_and_kill(command, cache, step, tmp_path)
        if resumed_at:
            assert f"at step {resumed_at} " in (tmp_path / f"killed-at-{step}.log").read_text()
        resumed_at = step
    output = run(command, cache)
    log = output.stderr + output.stdout
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert re.search(rf"Resumed from {re.escape(str(last))} at step {resumed_at} \(epoch \d+", log), log[-3000:]
    assert sorted(path.name for path in (root / "lightning_logs").iterdir()) == ["version_0"]  # one run directory
    assert_same_weights(final_weights(root), expected)


# Resuming from a named checkpoint is the same restore as from last.ckpt, tested above for every recipe; here once for
# the optimiser-step path (accumulation, dropout, validation) and once for sampling (GRPO's generator state).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sft_padded", "grpo"])
def test_resume_from_a_periodic_checkpoint_ends_on_the_uninterrupted_weights(
    name, uninterrupted, tiny_model_dir, tmp_path
):
    recipe = RECIPES[name]
    run_root, expected, train, cache = uninterrupted(name)
    (checkpoint,) = (run_root / "lightning_logs" / "version_0" / "checkpoints").glob("*-step=4.ckpt")
    root = tmp_path / "run"
    output = run(fit_command(recipe, tiny_model_dir, train, root, "--ckpt_path", str(checkpoint)), cache)
    assert f"Resumed from {checkpoint} at step 4 " in output.stderr + output.stdout
    assert_same_weights(final_weights(root), expected)


def test_require_checkpoint_stops_instead_of_starting_over(tiny_model_dir, tmp_path):
    recipe = RECIPES["sft_packed"]
    train, root = data_file(tmp_path, "sft"), tmp_path / "run"
    command = fit_command(recipe, tiny_model_dir, train, root, "--ckpt_path", "last", "--require_checkpoint", "true")
    result = run(command, tmp_path / "hf-datasets", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"No checkpoint to resume from under {root} (no last.ckpt or hpc_ckpt_N.ckpt); "
        "--require_checkpoint is set, so the run does not start over"
    )
    assert not root.exists() or not any(root.rglob("*.ckpt"))

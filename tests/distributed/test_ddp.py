"""DDP with 2 CPU processes (gloo) follows the same loss trajectory, and ends on the same weights, as 1 process with
the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import ROOT

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

"""Which checkpoint `--ckpt_path last` means: the newest complete one of any run under the root directory, a SLURM
requeue's ``hpc_ckpt_N.ckpt`` included, so a requeued job and `--ckpt_path last` continue from the same file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from lightning_ft.callbacks.resume import (
    NoCheckpointError,
    RunLocation,
    latest_checkpoint,
    resolve_resume,
    run_location,
)


def checkpoint(path: Path, age_s: int) -> Path:
    """A complete checkpoint file written ``age_s`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 1}, path)
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_last_is_the_newest_last_ckpt_across_run_versions(tmp_path):
    checkpoint(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", age_s=30)
    newest = checkpoint(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", age_s=10)
    checkpoint(tmp_path / "lightning_logs/version_1/checkpoints/epoch=0-step=8.ckpt", age_s=0)  # not a "last"
    assert latest_checkpoint(tmp_path) == newest
    assert resolve_resume("last", tmp_path) == newest
    assert run_location(newest, tmp_path) == RunLocation(tmp_path, "lightning_logs", "version_1")


@pytest.mark.parametrize("hpc_is_newer", [True, False])
def test_a_slurm_requeue_and_last_pick_the_same_file(tmp_path, hpc_is_newer):
    hpc = checkpoint(tmp_path / "hpc_ckpt_1.ckpt", age_s=0 if hpc_is_newer else 20)
    last = checkpoint(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", age_s=10)
    expected = hpc if hpc_is_newer else last
    assert resolve_resume("last", tmp_path) == expected
    assert resolve_resume(None, tmp_path, on_slurm=True) == expected  # a requeued job passes no path
    assert resolve_resume(None, tmp_path, on_slurm=False) is None  # outside SLURM nothing resumes unasked
    assert run_location(hpc, tmp_path) is None  # an hpc checkpoint's run continues in a new version


def test_a_checkpoint_cut_short_is_passed_over(tmp_path):
    whole = checkpoint(tmp_path / "hpc_ckpt_1.ckpt", age_s=10)
    cut = tmp_path / "hpc_ckpt_2.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.warns(UserWarning, match="hpc_ckpt_2.ckpt: not a complete checkpoint"):
        assert latest_checkpoint(tmp_path) == whole


def test_explicit_paths_and_no_checkpoint(tmp_path, caplog, monkeypatch):
    # Lightning stops its logger propagating when it is imported before the root logger has a handler (which depends
    # on which test module imported it first): let the message reach caplog's root handler either way
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    assert resolve_resume("some/file.ckpt", tmp_path) == "some/file.ckpt"
    assert resolve_resume(None, tmp_path) is None
    with caplog.at_level("INFO"):
        assert resolve_resume("last", tmp_path / "missing") is None
    assert "No checkpoint to resume from under" in caplog.text and "starts from step 0" in caplog.text
    with pytest.raises(NoCheckpointError, match="does not start over"):
        resolve_resume("last", tmp_path, required=True)
    with pytest.raises(NoCheckpointError, match="no --ckpt_path is given"):
        resolve_resume(None, tmp_path, required=True)


def test_a_checkpoint_directory_named_by_dirpath_is_searched(tmp_path):
    elsewhere = checkpoint(tmp_path / "shared-disk/last.ckpt", age_s=0)
    assert latest_checkpoint(tmp_path / "root") is None
    assert latest_checkpoint(tmp_path / "root", [elsewhere.parent]) == elsewhere
    assert run_location(elsewhere, tmp_path / "root") is None

"""Resuming a run: which checkpoint ``--ckpt_path last`` means, and putting the data loaders back where the
checkpoint says they were.

One rule for ``last``: the newest complete checkpoint a run under ``default_root_dir`` left, whichever run directory
(``lightning_logs/version_N``) it is in: ``last.ckpt`` of any version, or the ``hpc_ckpt_N.ckpt`` that Lightning
writes when SLURM preempts a job. A killed restart, a SLURM requeue and ``--ckpt_path last`` therefore all continue
from the same file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_ft.compat import apply_pending_loader_states

LAST_NAME = re.compile(r"^last(-v?\d+)?\.ckpt$")  # last.ckpt, and the last-v1.ckpt Lightning writes beside one
HPC_NAME = re.compile(r"^hpc_ckpt_\d+\.ckpt$")


@dataclass(frozen=True)
class RunLocation:
    """Where a checkpoint's run logs: ``<save_dir>/<name>/<version>/checkpoints/<file>``."""

    save_dir: Path
    name: str
    version: str


def checkpoint_candidates(root: Path, checkpoint_dirs: Iterable[Path] = ()) -> list[Path]:
    """Every ``last*.ckpt`` below ``root`` (any run version) and in ``checkpoint_dirs``, and every
    ``hpc_ckpt_N.ckpt`` directly in ``root`` (where Lightning's SLURM handler writes them)."""
    found = {path for path in root.rglob("last*.ckpt") if LAST_NAME.match(path.name)} if root.is_dir() else set()
    for directory in checkpoint_dirs:
        if directory.is_dir():
            found |= {path for path in directory.iterdir() if LAST_NAME.match(path.name)}
    if root.is_dir():
        found |= {path for path in root.iterdir() if HPC_NAME.match(path.name)}
    return sorted(found)


def is_complete(path: Path) -> bool:
    """A checkpoint file is a zip archive whose directory is written last, so a file cut short by a kill is not one.
    Sharded checkpoints (directories) are swapped in whole by `AtomicModelCheckpoint`."""
    return path.is_dir() or zipfile.is_zipfile(path)


def latest_checkpoint(root: str | Path, checkpoint_dirs: Iterable[Path] = ()) -> Path | None:
    """The newest complete checkpoint under ``root`` (by modification time), or ``None``. Incomplete files (a save
    killed midway, as Lightning's own SLURM handler can leave) are passed over with a warning naming them."""
    complete = []
    for path in checkpoint_candidates(Path(root), checkpoint_dirs):
        if is_complete(path):
            complete.append(path)
        else:
            rank_zero_warn(f"Skipping {path}: not a complete checkpoint (its save was cut short)")
    return max(complete, key=lambda path: path.stat().st_mtime, default=None)


def run_location(checkpoint: Path, root: str | Path) -> RunLocation | None:
    """The default logger's run directory a checkpoint was written in: ``<root>/<name>/<version>/checkpoints/``."""
    parents = checkpoint.resolve().parents
    if checkpoint.parent.name != "checkpoints" or len(parents) < 4 or parents[3] != Path(root).resolve():
        return None
    return RunLocation(save_dir=Path(root), name=parents[2].name, version=parents[1].name)


class ResumeDataPosition(L.Callback):
    """After a checkpoint is restored, puts the training data loaders at the position it recorded and says where the
    run resumes.

    Lightning applies a checkpoint's loader states only while it builds the training loader after the restore; when
    the loader was built earlier (``trainer.estimated_stepping_batches`` in ``configure_optimizers`` builds it before
    anything is restored, which every learning-rate schedule here needs), the states are never applied and the epoch
    starts over from its first batch (Lightning issue 20550). This loads the pending states and restarts the loader's
    iterator, as Lightning's own resume path does; it does nothing when Lightning has applied them itself.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.ckpt_path:
            return
        apply_pending_loader_states(trainer)
        fit_loop = trainer.fit_loop
        batches = fit_loop.epoch_loop.batch_progress.current.processed
        rank_zero_info(
            f"Resumed from {trainer.ckpt_path} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, {batches} batches into it)"
        )


class NoCheckpointError(SystemExit):
    """Resuming was required and there is nothing to resume from (exits with the message, no traceback)."""


def resolve_resume(
    ckpt_path: str | Path | None,
    root: str | Path,
    checkpoint_dirs: Iterable[Path] = (),
    required: bool = False,
    on_slurm: bool = False,
) -> str | Path | None:
    """The checkpoint a run resumes from: ``last`` becomes the newest checkpoint under ``root`` (see the module), as
    does no path at all on a SLURM job that left an ``hpc_ckpt_N.ckpt`` (a requeued job); other values pass through.

    When ``last`` finds nothing the run starts fresh, saying so in one line, or with ``required`` stops with that line.
    """
    root = Path(root)
    requeued = ckpt_path is None and on_slurm and any(HPC_NAME.match(path.name) for path in checkpoint_candidates(root))
    if ckpt_path != "last" and not requeued:
        if required and ckpt_path is None:
            raise NoCheckpointError("--require_checkpoint is set but no --ckpt_path is given (e.g. --ckpt_path last)")
        return ckpt_path
    found = latest_checkpoint(root, checkpoint_dirs)
    if found is not None:
        return found
    message = f"No checkpoint to resume from under {root} (no last.ckpt or hpc_ckpt_N.ckpt)"
    if required:
        raise NoCheckpointError(f"{message}; --require_checkpoint is set, so the run does not start over")
    rank_zero_info(f"{message}: training starts from step 0")
    return None

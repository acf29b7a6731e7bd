"""`AtomicModelCheckpoint`: checkpoints that appear whole or not at all, so a save killed midway never destroys the
previous good one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ft.compat import mark_checkpoint_saved


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, writing each checkpoint (``last.ckpt`` included) under a temporary name beside
    its destination and moving it into place with one rename once every rank has finished writing.

    Lightning's own writer stages through the system's temporary directory, and moving a file across filesystems (a
    local ``/tmp`` to a shared checkpoint disk, as on most clusters) copies it into place, where a kill leaves half a
    file under the real name. A rename within one directory cannot be seen half done. Sharded checkpoints
    (directories) keep the previous version until the new one is complete.

    Args:
        **kwargs: `lightning.pytorch.callbacks.ModelCheckpoint` arguments (``dirpath``, ``save_last``,
            ``every_n_train_steps``, ``save_top_k``, ``monitor``, ...).
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        staging = staging_path(filepath)
        trainer.save_checkpoint(staging, self.save_weights_only)
        trainer.strategy.barrier("atomic_checkpoint_written")
        if trainer.is_global_zero:
            move_into_place(staging, Path(filepath))
        trainer.strategy.barrier("atomic_checkpoint_in_place")
        mark_checkpoint_saved(self, trainer, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def staging_path(filepath: str | Path) -> Path:
    filepath = Path(filepath)
    return filepath.with_name(f".{filepath.name}.partial")


def move_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging``: one rename for a file; for a directory the old one is moved aside first
    and deleted only once the new one is in place."""
    if staging.is_dir():
        previous = target.with_name(f".{target.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(staging, target)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(staging, target)

"""A training process killed (SIGKILL) while writing last.ckpt leaves the previous last.ckpt whole, and the run
resumes from it; Lightning's plain ModelCheckpoint, as the control, is left with half a file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import ROOT

KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning_ft.algorithms import SFT
    from lightning_ft.callbacks import AtomicModelCheckpoint
    from lightning_ft.model.spec import ModelSpec
    from tests.conftest import build_tiny_tokenizer
    from tests.helpers import adamw, repeated_batch_loader

    model_dir, root, callback = sys.argv[1], sys.argv[2], sys.argv[3]
    saves = 0
    write = L.Trainer.save_checkpoint

    def dying_save(trainer, filepath, *args, **kwargs):
        global saves
        saves += 1
        if saves == 6:  # step 3's last.ckpt (each step writes its top-k file, then last)
            write(trainer, filepath, *args, **kwargs)
            data = open(filepath, "rb").read()
            with open(filepath, "wb") as half:  # a kill while the bytes are going out
                half.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        write(trainer, filepath, *args, **kwargs)

    L.Trainer.save_checkpoint = dying_save
    checkpoint_class = AtomicModelCheckpoint if callback == "atomic" else ModelCheckpoint
    checkpoint = checkpoint_class(dirpath=root, save_last=True, every_n_train_steps=1)
    module = SFT(ModelSpec(path=model_dir), optimizer=adamw(1e-3))
    trainer = L.Trainer(
        max_steps=5, callbacks=[checkpoint], logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, train_dataloaders=repeated_batch_loader(build_tiny_tokenizer(), steps=5))
    """
)


def killed_run(tiny_model_dir, root, callback: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tiny_model_dir), str(root), callback],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == -9, result.stderr[-2000:]  # SIGKILL: no handler ran


def test_a_kill_during_the_save_leaves_the_previous_checkpoint(tiny_model_dir, tmp_path):
    killed_run(tiny_model_dir, tmp_path, "atomic")
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2
    from lightning_ft.algorithms import SFT
    from lightning_ft.model.spec import ModelSpec
    from tests.conftest import build_tiny_tokenizer
    from tests.helpers import adamw, quiet_trainer, repeated_batch_loader

    trainer = quiet_trainer(max_steps=5)
    module = SFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-3))
    loader = repeated_batch_loader(build_tiny_tokenizer(), steps=5)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 5


def test_control_plain_model_checkpoint_is_left_half_written(tiny_model_dir, tmp_path):
    killed_run(tiny_model_dir, tmp_path, "plain")
    # the first half of a zip archive: its central directory, written last, is missing
    with pytest.raises(RuntimeError, match="PytorchStreamReader failed reading zip archive: failed finding central"):
        torch.load(tmp_path / "last.ckpt", weights_only=False)

"""Test helpers: tiny batches, a short fit, and a callback recording the per-step training loss."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_ft.data.collate import PadCollator
from lightning_ft.data.tokenize import ConversationTokenizer

if TYPE_CHECKING:
    from lightning_ft.cli import FineTuneCLI

CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Convert 3 kilometres to metres."},
        {"role": "assistant", "content": "3000 metres."},
    ],
    [
        {"role": "user", "content": "Write a haiku about autumn."},
        {"role": "assistant", "content": "Autumn leaves falling on a quiet pond."},
        {"role": "user", "content": "Thank you!"},
        {"role": "assistant", "content": "Hello, goodbye!"},
    ],
]


def tokenized_examples(tokenizer, conversations: Sequence = CONVERSATIONS, max_length: int = 128) -> list[dict]:
    encode = ConversationTokenizer(tokenizer, max_length=max_length)
    return [dict(encode(conversation)) for conversation in conversations]


def repeated_batch_loader(tokenizer, steps: int, batch_size: int = 3) -> DataLoader:
    """The same examples every step, so any working method must lower the loss."""
    examples = tokenized_examples(tokenizer)[:batch_size]
    return DataLoader([examples] * steps, batch_size=None, collate_fn=PadCollator(tokenizer.pad_token_id))


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if "train/loss" in trainer.callback_metrics:
            self.losses.append(float(trainer.callback_metrics["train/loss"]))


class HangAfterStep(L.Callback):
    """Stands still once ``step`` optimiser steps are done (and their checkpoint written), after writing ``marker``,
    so a test can kill the process at a known point."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            Path(self.marker).write_text(str(trainer.global_step))
            time.sleep(600)


def quiet_trainer(**trainer_kwargs) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **trainer_kwargs})


def short_fit(module: L.LightningModule, loader: DataLoader, steps: int, **trainer_kwargs) -> LossRecorder:
    recorder = LossRecorder()
    quiet_trainer(max_steps=steps, callbacks=[recorder], **trainer_kwargs).fit(module, train_dataloaders=loader)
    return recorder


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr)


def recipe_cli(recipe: str, model_dir: Path, train: Path | str, val: Path | str, root: Path) -> FineTuneCLI:
    """A recipe from configs/ (e.g. ``rm/minilm_hh_rlhf.yaml``) through the CLI, with the public overrides for the
    model, training and held-out data, and a run directory; nothing run yet."""
    from lightning_ft.algorithms.base import FineTuneModule
    from lightning_ft.cli import FineTuneCLI

    args = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / recipe)]
    args += ["--model.model.path", str(model_dir), "--data.train", str(train), "--data.val", str(val)]
    args += ["--data.val_fraction", "0", "--trainer.default_root_dir", str(root)]
    args += ["--trainer.enable_progress_bar", "false"]
    return FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )

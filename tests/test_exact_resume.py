"""Exact resume: a run stopped mid-epoch at step k and resumed from its checkpoint ends with the same weights as an
uninterrupted run (fp32, CPU): data order (shuffled, packed or length-grouped), optimizer, schedule and RNG states
all continue where they were."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.data import InstructionData, MixSource
from lightning_ft.model.spec import ModelSpec
from tests.helpers import adamw, quiet_trainer, write_jsonl

RECORDS = [
    {"instruction": f"Say {word} {i} times.", "output": f"{word} " * (i % 5 + 1)}
    for i, word in enumerate(
        ["hello", "world", "autumn", "leaves", "quiet", "pond", "paris", "france", "metres", "haiku"] * 2
    )
]
TOTAL_STEPS = 9  # 20 records in batches of 4: 5 steps per epoch, stopped at step 7 (epoch 1, batch 2)
STOP_AT = 7


def data_file(tmp_path) -> str:
    return str(write_jsonl(tmp_path / "train.jsonl", RECORDS))


class SaveAt(L.Callback):
    """Checkpoint in the middle of training and stop there, as a preemption would (the run is configured for all
    its steps: the schedule must not know it was cut short)."""

    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def mix(tmp_path) -> list[MixSource]:
    """The instruction records, mixed 3:1 with raw text (blocks of it replayed during SFT)."""
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"{r['instruction']} {r['output']}"} for r in RECORDS])
    return [MixSource(data_file(tmp_path), weight=3.0), MixSource(str(text), weight=1.0, kind="text")]


def run(
    tiny_model_dir, train: str | list[MixSource], layout: str, max_steps: int, ckpt_path=None, save_to=None
) -> dict:
    L.seed_everything(0)
    module = SFT(
        ModelSpec(path=str(tiny_model_dir)),
        optimizer=adamw(1e-2),
        warmup_steps=2,
        neftune_noise_alpha=5.0,  # random noise every step: the RNG state must resume too
    )
    data = InstructionData(
        train,
        tokenizer=module.tokenizer,
        batch_size=4,
        max_length=64,
        packing=layout in ("packed", "mixed"),
        group_by_length=layout == "grouped",
    )
    trainer = quiet_trainer(max_steps=max_steps, callbacks=[SaveAt(STOP_AT, save_to)] if save_to else [])
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("layout", ["shuffled", "grouped", "packed", "mixed"])
def test_resumed_run_ends_on_the_uninterrupted_weights(tiny_model_dir, tmp_path, layout):
    train = mix(tmp_path) if layout == "mixed" else data_file(tmp_path)
    uninterrupted = run(tiny_model_dir, train, layout, TOTAL_STEPS)
    checkpoint = tmp_path / "stopped.ckpt"
    run(tiny_model_dir, train, layout, TOTAL_STEPS, save_to=checkpoint)
    resumed = run(tiny_model_dir, train, layout, TOTAL_STEPS, ckpt_path=checkpoint)
    for name, weight in uninterrupted.items():
        torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=0, msg=name)

"""Faults: a step with non-finite gradients stops the run naming the step, or is skipped without touching the weights
or the optimiser state; running out of memory names the knobs that lower memory."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.model.spec import ModelSpec
from tests.helpers import adamw, quiet_trainer, repeated_batch_loader

POISONED_BATCH = 2


class PoisonedSFT(SFT):
    """SFT whose loss turns NaN on one batch."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == POISONED_BATCH else loss


class WeightRecorder(L.Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.weights.append({n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad})


def test_non_finite_step_stops_the_run_naming_the_step(tiny_model_dir, tiny_tokenizer):
    module = PoisonedSFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-3))
    with pytest.raises(FloatingPointError, match=r"Step 2 \(epoch 0\): non-finite gradients .*on_non_finite: skip"):
        quiet_trainer(max_steps=4).fit(module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=4))


def test_non_finite_step_is_skipped_exactly(tiny_model_dir, tiny_tokenizer):
    torch.manual_seed(0)
    module = PoisonedSFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-3), on_non_finite="skip")
    recorder = WeightRecorder()
    trainer = quiet_trainer(max_steps=4, callbacks=[recorder])
    with pytest.warns(UserWarning, match="Step 2 .*step skipped"):
        trainer.fit(module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=4))
    before, skipped, after = recorder.weights[1], recorder.weights[2], recorder.weights[3]
    assert all(torch.equal(before[name], skipped[name]) for name in before)  # not one weight moved
    assert not all(torch.equal(skipped[name], after[name]) for name in after)  # training went on
    assert all(torch.isfinite(weight).all() for weight in after.values())
    assert module.skipped_steps == 1 and trainer.global_step == 4
    state = trainer.optimizers[0].state
    assert all(int(s["step"]) == 3 for s in state.values())  # Adam's moments skipped that step too


def test_running_out_of_memory_names_the_knobs(tiny_model_dir, tiny_tokenizer):
    class Exhausted(SFT):
        def training_step(self, batch, batch_idx):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    module = Exhausted(ModelSpec(path=str(tiny_model_dir)))
    with pytest.warns(UserWarning, match="data.batch_size.*gradient_checkpointing.*fsdp_offload"):
        with pytest.raises(torch.OutOfMemoryError):
            quiet_trainer(max_steps=1).fit(module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=1))


def test_unknown_action_lists_the_valid_ones(tiny_model_dir):
    with pytest.raises(ValueError, match="Unknown on_non_finite 'retry'; valid: stop, skip"):
        SFT(ModelSpec(path=str(tiny_model_dir)), on_non_finite="retry")

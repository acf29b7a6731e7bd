"""What a run does when a step goes wrong: non-finite gradients stop the run or skip the step, naming the step;
running out of memory names the knobs that lower memory."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer

NonFiniteAction = Literal["stop", "skip"]

MEMORY_KNOBS = (
    "Out of memory. Knobs that lower memory, roughly in order of cost: a smaller micro-batch (data.batch_size, with "
    "trainer.accumulate_grad_batches to keep the global batch), a shorter data.max_length, "
    "model.gradient_checkpointing: true, LoRA (model.peft) instead of full fine-tuning, QLoRA "
    "(model.model.quantization: nf4), bf16 (trainer.precision: bf16-mixed or bf16-true), and sharding or offload "
    "(--config configs/strategies/fsdp.yaml, fsdp_offload.yaml, deepspeed_zero3_offload.yaml)."
)


def gradients_are_finite(optimizer: Optimizer) -> bool:
    """Whether every gradient the optimiser is about to apply is finite."""
    flags = [
        torch.isfinite(parameter.grad).all()
        for group in optimizer.param_groups
        for parameter in group["params"]
        if parameter.grad is not None
    ]
    return bool(torch.stack(flags).all()) if flags else True


def drop_gradients(optimizer: Optimizer) -> None:
    """Set every gradient to ``None``: optimisers leave such parameters and their state untouched, so the step
    becomes a no-op (unlike zeroed gradients, which still move Adam's moments and apply weight decay)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def non_finite_message(step: int, epoch: int, loss: torch.Tensor | None) -> str:
    loss_text = "unknown" if loss is None else f"{float(loss):.6g}"
    return f"Step {step} (epoch {epoch}): non-finite gradients (the loss of the last micro-batch was {loss_text})"


NON_FINITE_ADVICE = (
    "Lower the learning rate or warm up longer, clip gradients (trainer.gradient_clip_val), look at this step's "
    "batch, prefer bf16 to fp16, or set model.on_non_finite: skip to skip such steps."
)


class OutOfMemoryAdvice(L.Callback):
    """When a run dies of running out of memory, say which settings lower memory."""

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, torch.OutOfMemoryError):
            rank_zero_warn(MEMORY_KNOBS)

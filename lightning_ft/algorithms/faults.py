"""What a run does when a step's gradients are not finite: stop the run or skip the step, naming the step (running
out of memory is `lightning_ft.callbacks.OutOfMemoryAdvice`)."""

from __future__ import annotations

from typing import Literal

import torch
from torch.optim import Optimizer

NonFiniteAction = Literal["stop", "skip"]


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
    "Lower the learning rate or warm up longer, clip gradients (`trainer.gradient_clip_val: 1.0`), look at this "
    "step's batch, prefer bf16 to fp16 (`trainer.precision: bf16-mixed`), or skip such steps "
    "(`model.on_non_finite: skip`)."
)

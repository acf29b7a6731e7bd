"""The reference policy of DPO, PPO and GRPO: the base with the adapter disabled when training an adapter (no second
copy in memory), else a frozen copy of the base loaded from the spec."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peft import PeftModel
from torch import nn

from lightning_ft.model.spec import ModelSpec


def needs_frozen_copy(model: nn.Module) -> bool:
    """Only a PEFT model can switch its adapter off; anything else needs a copy of the base as its reference."""
    return not isinstance(model, PeftModel)


def load_frozen_reference(spec: ModelSpec, disable_dropout: bool = True) -> nn.Module:
    reference = spec.load_model()
    reference.requires_grad_(False)
    if disable_dropout:
        turn_off_dropout(reference)
    return reference.eval()


@contextmanager
def reference_policy(model: nn.Module, frozen_copy: nn.Module | None) -> Iterator[nn.Module]:
    """The model to score the reference with: ``model`` with its adapter disabled, or ``frozen_copy``."""
    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    elif frozen_copy is not None:
        yield frozen_copy
    else:
        raise RuntimeError("No reference model: a frozen copy of the base was not loaded")


def turn_off_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0

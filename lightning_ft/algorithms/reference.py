"""The reference policy of DPO, PPO and GRPO: the base with the adapter disabled when training an adapter (no second
copy in memory), else a frozen copy of the base loaded from the spec."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peft import PeftModel
from torch import nn

from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.model.spec import ModelSpec


class ReferencedPolicy(FineTuneModule):
    """Base of the algorithms that keep a policy near a reference (DPO, GRPO): dropout off, so the policy and its
    reference agree at the start, and a frozen copy of the base loaded in `configure_model` when the policy has no
    adapter to disable and `live_reference` says a reference runs during training.

    Args:
        disable_dropout: Turn dropout off in the policy and the reference.
        **kwargs: `FineTuneModule` arguments.
    """

    def __init__(self, model: ModelSpec, disable_dropout: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.disable_dropout = disable_dropout
        self.reference_model: nn.Module | None = None

    @property
    def live_reference(self) -> bool:
        """Whether reference log-probs are computed during training (subclasses narrow this)."""
        return True

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if self.disable_dropout:
            turn_off_dropout(self.model)
        if self.live_reference and needs_frozen_copy(self.model):
            self.reference_model = load_frozen_reference(self.model_spec, self.disable_dropout)

    def train(self, mode: bool = True) -> ReferencedPolicy:
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # Lightning puts every submodule in train mode at fit start
        return self


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

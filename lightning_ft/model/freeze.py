"""Freeze-tuning: train only the last decoder layers and/or named modules of a full model."""

from __future__ import annotations

import re

from torch import nn

from lightning_ft.errors import UsageError


class FreezePolicy:
    """Which parameters of a full model stay trainable; everything else is frozen.

    Args:
        trainable_layers: Train the last N decoder layers (found from the model's ``_no_split_modules``).
        trainable_modules: Regular expressions searched in parameter names, e.g. ``["lm_head", "norm\\.weight$"]``.
    """

    def __init__(self, trainable_layers: int = 0, trainable_modules: list[str] | None = None) -> None:
        if trainable_layers < 0:
            raise UsageError(f"model.freeze.trainable_layers must be >= 0, got {trainable_layers}")
        self.trainable_layers = trainable_layers
        self.trainable_modules = list(trainable_modules or [])
        if trainable_layers == 0 and not self.trainable_modules:
            raise UsageError(
                "FreezePolicy trains nothing: set model.freeze.trainable_layers > 0 and/or "
                "model.freeze.trainable_modules."
            )

    def apply(self, model: nn.Module) -> None:
        model.requires_grad_(False)
        layers = decoder_layers(model)
        if self.trainable_layers > len(layers):
            raise UsageError(
                f"model.freeze.trainable_layers={self.trainable_layers} but the model has {len(layers)} decoder layers"
            )
        for layer in layers[len(layers) - self.trainable_layers :]:
            layer.requires_grad_(True)
        names = [name for name, _ in model.named_parameters()]
        for pattern in self.trainable_modules:
            matched = [name for name in names if re.search(pattern, name)]
            if not matched:
                raise UsageError(
                    f"model.freeze.trainable_modules pattern {pattern!r} matches no parameter; parameter names look "
                    f"like {names[:3] + names[-3:]}"
                )
            for name, parameter in model.named_parameters():
                if name in matched:
                    parameter.requires_grad_(True)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks, in order, identified by the class names the model declares unsplittable."""
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in block_names]
    if not layers:
        raise UsageError(
            f"Cannot find the decoder layers of {type(model).__name__}: it declares no `_no_split_modules`."
        )
    return layers

"""`torch.compile` of a model's decoder layers (regional compilation).

Compiling each repeated block instead of the whole model compiles one graph that every layer reuses (fast to
compile), leaves the PEFT wrappers, hooks and the chunked loss outside the graph, and keeps working when packed rows
change length from batch to batch (``dynamic=True``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lightning_ft.model.freeze import decoder_layers
from lightning_ft.model.heads import unwrap

DEFAULT_COMPILE_OPTIONS: dict[str, Any] = {"dynamic": True}


def compile_decoder_layers(model: nn.Module, options: dict[str, Any] | None = None) -> int:
    """Compile every decoder layer of ``model`` in place with ``torch.compile(**options)``; returns how many."""
    layers = decoder_layers(unwrap(model))
    for layer in layers:
        layer.compile(**{**DEFAULT_COMPILE_OPTIONS, **(options or {})})
    return len(layers)

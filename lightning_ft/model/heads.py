"""Reach the last hidden states and the output projection of a causal LM, through PEFT wrappers.

Losses that never build full-vocabulary logits for the whole batch (chunked cross-entropy) need the final hidden
states and the projection that turns them into logits, not the logits themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from peft import PeftModel
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def final_hidden_states(model: nn.Module, **inputs: Any) -> torch.Tensor:
    """Run ``model`` and return its decoder's final (normed) hidden states, ``(batch, length, hidden)``.

    The full forward runs (so PEFT prompt methods still prepend their virtual tokens), but the language-model head
    projects a single position only (``logits_to_keep=1``). No cache is built unless ``inputs`` pass one
    (``cache`` with ``use_cache=True``).
    """
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple, output: Any) -> None:
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = unwrap(model).get_decoder().register_forward_hook(capture)
    try:
        model(**{"use_cache": False, **inputs}, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[-1]


def output_projection(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Hidden states -> logits exactly as the model computes them: its output embedding (LoRA-wrapped or tied, as
    it is), followed by the logit scaling or soft-capping some architectures apply."""
    base = unwrap(model)
    head = base.get_output_embeddings()
    config = base.config
    scale = getattr(config, "logit_scale", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    if scale is None and softcap is None:
        return head

    def project(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        if scale is not None:
            logits = logits * scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return project

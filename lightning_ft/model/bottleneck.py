"""Houlsby-style bottleneck adapters: a small down-project, non-linearity, up-project block with a residual.

No maintained adapter library installs beside transformers 5 (AdapterHub's ``adapters`` pins transformers 4.x), so
this small module is ours. Each adapter is attached to the output of a target sub-layer (by default the attention
output projection and the MLP down projection, Houlsby's two places per block) through a forward hook, so the base
model's parameter names never change. The up projection starts at zero: the adapted model starts equal to the base.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.activations import ACT2FN

from lightning_ft.errors import UsageError

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "bottleneck_model.safetensors"
ADAPTER_ATTRIBUTE = "bottleneck_adapter"


class BottleneckAdapter(nn.Module):
    """``y + up(dropout(act(down(y))))`` on a sub-layer output ``y`` of shape ``(..., hidden_size)``."""

    def __init__(self, hidden_size: int, bottleneck_size: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.activation = ACT2FN[activation]
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck_size, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = hidden
        hidden = hidden.to(self.down.weight.dtype)
        return residual + self.up(self.dropout(self.activation(self.down(hidden)))).to(residual.dtype)


def _apply_adapter_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, ADAPTER_ATTRIBUTE)(output)


class BottleneckConfig:
    """Configuration of Houlsby bottleneck adapters (the ``peft`` slot of a recipe accepts it beside peft configs).

    Args:
        bottleneck_size: Width of the bottleneck.
        target_modules: Regular expressions; every ``nn.Linear`` whose qualified name ends with a match gets one.
        activation: Non-linearity between the projections.
        dropout: Dropout inside the adapter.
    """

    def __init__(
        self,
        bottleneck_size: int = 64,
        target_modules: list[str] | None = None,
        activation: Literal["relu", "gelu", "silu", "tanh"] = "gelu",
        dropout: float = 0.0,
    ) -> None:
        self.bottleneck_size = bottleneck_size
        self.target_modules = list(target_modules or ["o_proj", "down_proj"])
        self.activation = activation
        self.dropout = dropout

    def to_dict(self) -> dict:
        return {
            "bottleneck_size": self.bottleneck_size,
            "target_modules": self.target_modules,
            "activation": self.activation,
            "dropout": self.dropout,
        }

    def attach(self, model: nn.Module) -> nn.Module:
        """Freeze ``model`` and attach a trainable adapter to every target; returns ``model`` itself."""
        model.requires_grad_(False)
        targets = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(re.search(f"(^|\\.){p}$", name) for p in self.target_modules)
        ]
        if not targets:
            linear_names = sorted(
                {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise UsageError(
                f"Bottleneck target_modules {self.target_modules} match no Linear layer; have {linear_names}: set "
                "model.peft.target_modules to some of them"
            )
        for _, module in targets:
            adapter = BottleneckAdapter(module.out_features, self.bottleneck_size, self.activation, self.dropout)
            adapter.to(device=module.weight.device)
            module.add_module(ADAPTER_ATTRIBUTE, adapter)
            module.register_forward_hook(_apply_adapter_hook)
        model.bottleneck_config = self
        return model


def has_bottleneck_adapters(model: nn.Module) -> bool:
    return isinstance(getattr(model, "bottleneck_config", None), BottleneckConfig)


def save_bottleneck_adapters(model: nn.Module, directory: Path) -> None:
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if ADAPTER_ATTRIBUTE in name}
    save_file(weights, str(directory / WEIGHTS_NAME))
    (directory / CONFIG_NAME).write_text(json.dumps(model.bottleneck_config.to_dict(), indent=2))


def load_bottleneck_adapters(model: nn.Module, directory: Path) -> nn.Module:
    config = BottleneckConfig(**json.loads((directory / CONFIG_NAME).read_text()))
    config.attach(model)
    missing, unexpected = [], []
    weights = load_file(str(directory / WEIGHTS_NAME))
    parameters = dict(model.named_parameters())
    for name, tensor in weights.items():
        if name not in parameters:
            unexpected.append(name)
        else:
            parameters[name].data.copy_(tensor)
    missing = [name for name in parameters if ADAPTER_ATTRIBUTE in name and name not in weights]
    if missing or unexpected:
        raise UsageError(
            f"Bottleneck weights in {directory} do not fit the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; load them onto the base model they were trained on"
        )
    return model

"""Turn a `ModelSpec` and a training method (full, freeze, PEFT or bottleneck adapter) into a trainable module."""

from __future__ import annotations

from typing import Any

import peft
from peft import PeftConfig, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import AutoModelForCausalLM

from lightning_ft.errors import UsageError
from lightning_ft.model.bottleneck import BottleneckConfig
from lightning_ft.model.freeze import FreezePolicy
from lightning_ft.model.sharding import has_float_quant_storage
from lightning_ft.model.spec import ModelSpec

AdapterConfig = PeftConfig | BottleneckConfig


def build_trainable_model(
    spec: ModelSpec,
    adapter: AdapterConfig | None = None,
    freeze: FreezePolicy | None = None,
    gradient_checkpointing: bool = False,
    auto_class: type = AutoModelForCausalLM,
    **model_kwargs: Any,
) -> nn.Module:
    """Load the model (``auto_class``, a causal LM by default) and decide what trains: an adapter, a freeze policy, or
    (neither given) every parameter."""
    if adapter is not None and freeze is not None:
        raise UsageError(
            "Set either an adapter (model.peft) or a freeze policy (model.freeze), not both: an adapter already "
            "freezes the base."
        )
    model = load_for_training(spec, adapter is not None, gradient_checkpointing, auto_class, **model_kwargs)
    if isinstance(adapter, BottleneckConfig):
        return adapter.attach(model)
    if adapter is not None:
        return get_peft_model(model, adapter)
    if freeze is not None:
        freeze.apply(model)
    return model


def load_for_training(
    spec: ModelSpec,
    with_adapter: bool,
    gradient_checkpointing: bool = False,
    auto_class: type = AutoModelForCausalLM,
    **model_kwargs: Any,
) -> nn.Module:
    """Load the model (``auto_class``) ready for training, before any adapter: no generation cache, and k-bit
    weights prepared for QLoRA (``prepare_model_for_kbit_training``) unless stored in a float dtype for sharding;
    gradient checkpointing when asked.

    Raises:
        ValueError: The weights are k-bit quantized and no adapter (``with_adapter``) will train in their place.
    """
    model = spec.load_model(auto_class, **model_kwargs)
    model.config.use_cache = False
    checkpointing_kwargs = {"use_reentrant": False}
    if is_quantized(model) and not with_adapter:
        raise UsageError("k-bit quantized weights cannot be trained directly: add an adapter (QLoRA): set model.peft.")
    if is_quantized(model) and not has_float_quant_storage(spec):
        # Not when sharding (float storage): its upcast of the other weights to float32 would mix dtypes in a layer.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
    return model


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors count once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total


def known_adapter_configs() -> list[str]:
    """Class paths accepted as an adapter: peft's configs and our bottleneck adapter."""
    peft_configs = [
        f"peft.{name}"
        for name, value in vars(peft).items()
        if isinstance(value, type)
        and issubclass(value, PeftConfig)
        and name.endswith("Config")
        and value not in (PeftConfig, peft.PromptLearningConfig)
    ]
    return sorted(peft_configs) + [f"{BottleneckConfig.__module__.rsplit('.', 1)[0]}.BottleneckConfig"]

"""`DecoderLayerFSDP`: Lightning's FSDP with its auto-wrap and activation-checkpointing policies set to the loaded
model's own decoder-layer class, found when the model is wrapped (after `configure_model` has loaded it)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy, ModuleWrapPolicy

from lightning_ft.compat import fsdp_activation_checkpointing, set_fsdp_activation_checkpointing
from lightning_ft.errors import UsageError


class DecoderLayerFSDP(FSDPStrategy):
    """FSDP that shards (and optionally activation-checkpoints) each decoder layer of whatever model was loaded.
    Adapter modules of another dtype than the frozen base (float32 LoRA on a bfloat16 or 4-bit base) are wrapped as
    units of their own, since a unit holds one dtype.

    Args:
        checkpoint_decoder_layers: Recompute each decoder layer's activations in backward (FSDP's activation
            checkpointing; use it instead of ``model.gradient_checkpointing`` under FSDP).
        **kwargs: `lightning.pytorch.strategies.FSDPStrategy` arguments: ``sharding_strategy``, ``cpu_offload``,
            ``state_dict_type``, ``mixed_precision``, ... An explicit ``auto_wrap_policy`` or
            ``activation_checkpointing_policy`` is kept as given.
    """

    def __init__(self, checkpoint_decoder_layers: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_decoder_layers = checkpoint_decoder_layers

    def _setup_model(self, model: nn.Module) -> nn.Module:
        self.set_decoder_layer_policies(model)
        return super()._setup_model(model)

    def set_decoder_layer_policies(self, model: nn.Module) -> None:
        layers = decoder_layer_classes(model)
        odd = odd_dtype_modules(model)
        wrap = ModuleWrapPolicy(layers) if not odd else CustomPolicy(lambda m: isinstance(m, tuple(layers)) or m in odd)
        self.kwargs.setdefault("auto_wrap_policy", wrap)
        if self.checkpoint_decoder_layers and not fsdp_activation_checkpointing(self):
            set_fsdp_activation_checkpointing(self, {"auto_wrap_policy": ModuleWrapPolicy(layers)})


def odd_dtype_modules(model: nn.Module) -> set[nn.Module]:
    """Modules whose own parameters all have another dtype than the model's frozen weights (float32 adapters on a
    bfloat16 or 4-bit base). FSDP flattens each unit into one tensor of one dtype, so these get units of their own."""
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    if len(frozen) != 1:
        return set()
    (base,) = frozen
    return {
        module
        for module in model.modules()
        if (own := list(module.parameters(recurse=False))) and all(p.dtype != base for p in own)
    }


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of the model's repeated transformer blocks: those its ``transformers`` classes declare must never
    be split across devices (``_no_split_modules``), as found among its submodules.

    Raises:
        ValueError: No submodule declares them (not a ``transformers`` model, or a custom one without the attribute).
    """
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    classes = {type(module) for module in model.modules() if type(module).__name__ in names}
    if not classes:
        raise UsageError(
            f"Cannot find the decoder-layer class of {type(model).__name__}: none of its modules declares "
            "_no_split_modules. Pass auto_wrap_policy (a set of layer classes) to the strategy."
        )
    return classes

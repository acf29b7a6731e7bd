"""QLoRA under parameter sharding: FSDP and ZeRO-3 shard only floating-point tensors of one dtype per unit, so the
4-bit weights are stored in the dtype the strategy computes in (bitsandbytes' ``bnb_4bit_quant_storage``) and the rest
of the frozen base is loaded in that dtype too."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from lightning_ft.model.spec import ModelSpec

PRECISION_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
    "32-true": torch.float32,
}


def sharded_param_dtype(strategy: L.pytorch.strategies.Strategy, precision: str) -> torch.dtype | None:
    """The dtype a sharding strategy holds parameters in while computing (FSDP's ``MixedPrecision.param_dtype``,
    as Lightning sets it from the precision), or ``None`` when the strategy does not shard parameters."""
    shards = isinstance(strategy, FSDPStrategy) or (
        isinstance(strategy, DeepSpeedStrategy) and strategy.config.get("zero_optimization", {}).get("stage") == 3
    )
    return PRECISION_DTYPES[precision] if shards else None


def has_float_quant_storage(spec: ModelSpec) -> bool:
    quantization = spec.quantization
    return (
        quantization is not None and quantization.load_in_4bit and quantization.bnb_4bit_quant_storage.is_floating_point
    )


def shardable_spec(spec: ModelSpec, param_dtype: torch.dtype) -> ModelSpec:
    """``spec`` itself unless it loads 4-bit weights; then a copy that stores them, and loads the other weights, in
    ``param_dtype``. The sharding strategy's cast to ``param_dtype`` is then a no-op on the packed 4-bit data (a cast
    from any other dtype would destroy it), and each decoder layer holds a single dtype."""
    if spec.quantization is None or not spec.quantization.load_in_4bit:
        return spec
    dtype = str(param_dtype).removeprefix("torch.")
    return spec.with_quantization(dtype=dtype, bnb_4bit_quant_storage=param_dtype)

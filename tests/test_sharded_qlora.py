"""QLoRA under FSDP, on CPU: torch's FSDP wraps a 4-bit LoRA model in a one-process gloo group (Lightning refuses
FSDP without CUDA, so the module is built as Lightning would and wrapped with the strategy's own policy)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from peft import LoraConfig
from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT
from lightning_ft.model.sharding import sharded_param_dtype
from lightning_ft.model.spec import ModelSpec
from lightning_ft.strategies import decoder_layer_classes
from tests.helpers import strategy_from

PROMPT = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])


def strategy(fragment: str):
    return DDPStrategy() if fragment == "ddp.yaml" else strategy_from(fragment)  # ddp.yaml names Lightning's "ddp"


@pytest.mark.parametrize(
    ("fragment", "precision", "expected"),
    [
        ("fsdp.yaml", "bf16-mixed", torch.bfloat16),
        ("fsdp_offload.yaml", "bf16-true", torch.bfloat16),
        ("fsdp.yaml", "16-mixed", torch.float16),
        ("fsdp.yaml", "32-true", torch.float32),
        ("deepspeed_zero3.yaml", "bf16-mixed", torch.bfloat16),
        ("deepspeed_zero2.yaml", "bf16-mixed", None),  # ZeRO-2 does not shard parameters
        ("ddp.yaml", "bf16-mixed", None),
    ],
)
def test_the_storage_dtype_is_the_strategys_parameter_dtype(fragment, precision, expected):
    assert sharded_param_dtype(strategy(fragment), precision) == expected


@pytest.fixture
def one_process_group():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def qlora_module(tiny_model_dir, dtype: torch.dtype, fragment: str = "fsdp.yaml", precision: str = "bf16-mixed"):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)  # non-zero: the adapter counts
    module = SFT(ModelSpec(path=str(tiny_model_dir), quantization=quantization), peft=lora)
    module._trainer = SimpleNamespace(strategy=strategy(fragment), precision=precision)
    module.configure_model()
    return module


def logits(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return model(input_ids=PROMPT).logits.float()


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_fsdp_shards_qlora_and_computes_what_the_unsharded_model_does(
    tiny_model_dir, one_process_group, precision, dtype
):
    module = qlora_module(tiny_model_dir, dtype, precision=precision)
    model = module.model
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {dtype}  # 4-bit storage and the rest of the base alike
    assert module.model_spec.quantization.bnb_4bit_quant_storage == dtype
    expected = logits(model, dtype)
    fsdp = strategy_from("fsdp.yaml")
    fsdp.set_decoder_layer_policies(model)
    sharded = FullyShardedDataParallel(
        model,
        auto_wrap_policy=fsdp.kwargs["auto_wrap_policy"],
        use_orig_params=True,
        device_id=torch.device("cpu"),
        mixed_precision=MixedPrecision(param_dtype=dtype, reduce_dtype=dtype, buffer_dtype=dtype),
    )
    units = sum(isinstance(unit, FullyShardedDataParallel) for unit in sharded.modules())
    # root + 2 decoder layers; on the bfloat16 base each float32 LoRA A/B (7 linears x 2 layers x 2) is its own unit
    assert units == (3 + 28 if dtype == torch.bfloat16 else 3)
    # The cast to the parameter dtype left the packed 4-bit data intact: the same logits, up to a few bf16
    # units in the last place (the logits are about 0.4).
    torch.testing.assert_close(logits(sharded, dtype), expected, atol=8e-3 if dtype == torch.bfloat16 else 0, rtol=0)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        sharded(input_ids=PROMPT, labels=PROMPT).loss.backward()
    grads = [p.grad for p in sharded.parameters() if p.requires_grad]
    assert len(grads) == 28 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_without_float_storage_or_separate_adapter_units_fsdp_refuses(tiny_model_dir, one_process_group):
    """The controls: what the measures above prevent."""
    integer_storage = qlora_module(tiny_model_dir, torch.bfloat16, fragment="ddp.yaml").model
    with pytest.raises(ValueError, match="integer dtype|uint8"):
        FullyShardedDataParallel(integer_storage, use_orig_params=True, device_id=torch.device("cpu"))
    mixed = qlora_module(tiny_model_dir, torch.bfloat16).model
    layers_only = ModuleWrapPolicy(decoder_layer_classes(mixed))
    with pytest.raises(ValueError, match="uniform dtype"):
        FullyShardedDataParallel(mixed, auto_wrap_policy=layers_only, use_orig_params=True, device_id="cpu")
    float32_storage = qlora_module(tiny_model_dir, torch.bfloat16, precision="32-true").model
    bf16_compute = MixedPrecision(param_dtype=torch.bfloat16)  # casts the packed data: the 4-bit weights are lost
    sharded = FullyShardedDataParallel(
        float32_storage, mixed_precision=bf16_compute, use_orig_params=True, device_id="cpu"
    )
    with pytest.raises(RuntimeError, match="is invalid for input of size"):
        logits(sharded, torch.bfloat16)

"""k-bit preparation, one path for causal LMs and vision-language models: 4-bit weights stored in a float dtype (as
sharded QLoRA stores them) skip `prepare_model_for_kbit_training`, whose upcast of every other bf16/fp16 weight to
float32 would leave one layer holding two dtypes (FSDP and ZeRO-3 shard one dtype per unit). Integer storage is
prepared as before: the packed 4-bit weights stay uint8 and the rest of the frozen base becomes float32."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT, VisionLanguageSFT
from lightning_ft.model.spec import ModelSpec

QUANTIZED_LINEARS = 2 * 7  # two decoder layers of q/k/v/o/gate/up/down; the vision tower and projector stay float


@pytest.mark.parametrize("algorithm", [SFT, VisionLanguageSFT])
@pytest.mark.parametrize(
    ("storage", "expected_packed", "expected_rest"),
    [
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),  # sharded QLoRA: nothing is cast
        (torch.uint8, torch.uint8, torch.float32),  # bitsandbytes' default: prepared for QLoRA
    ],
)
def test_float_quant_storage_keeps_the_frozen_base_in_its_dtype(
    request, algorithm, storage, expected_packed, expected_rest
):
    directory = request.getfixturevalue("tiny_llava_dir" if algorithm is VisionLanguageSFT else "tiny_model_dir")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_storage=storage, bnb_4bit_compute_dtype=torch.bfloat16
    )
    spec = ModelSpec(path=str(directory), dtype="bfloat16", quantization=quantization)
    module = algorithm(spec, peft=LoraConfig(r=4, target_modules="all-linear"))
    module.configure_model()
    frozen = [p for p in module.model.parameters() if not p.requires_grad]
    packed = [p for p in frozen if isinstance(p, bnb.nn.Params4bit)]
    assert len(packed) == QUANTIZED_LINEARS
    assert {p.dtype for p in packed} == {expected_packed}
    assert {p.dtype for p in frozen if not isinstance(p, bnb.nn.Params4bit)} == {expected_rest}

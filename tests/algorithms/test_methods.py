"""Every training method builds on a tiny Llama, lowers the loss on a repeated batch, and trains exactly the
parameters it should.

Tiny Llama (tests/conftest.py): hidden 32, intermediate 64, 2 layers, 4 heads of 8, 2 KV heads (k/v width 16),
vocab 400, untied embeddings. Per layer the linears are q 32x32, k 32x16, v 32x16, o 32x32, gate 32x64, up 32x64,
down 64x32, plus two 32-wide RMSNorms: 9,216 + 64 = 9,280 parameters. Whole model: 2 x 9,280 + embeddings 12,800
+ lm_head 12,800 + final norm 32 = 44,192.
"""

from __future__ import annotations

import bitsandbytes as bnb
import peft
import pytest
import torch
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT
from lightning_ft.model import BottleneckConfig, FreezePolicy, ModelSpec
from lightning_ft.model.trainable import count_parameters
from tests.helpers import adamw, repeated_batch_loader, short_fit

LORA_R4 = 4 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + (32 + 64) + (32 + 64) + (64 + 32))  # r*(in+out)
METHODS = {
    # name: (adapter or None, freeze or None, quantization, expected trainable parameters, learning rate)
    "full": (None, None, None, 44_192, 1e-3),
    # last layer (9,280) + final norm (32)
    "freeze": (None, FreezePolicy(trainable_layers=1, trainable_modules=[r"^model\.norm\."]), None, 9_312, 1e-3),
    "lora": (peft.LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"), None, None, 2 * LORA_R4, 1e-2),
    # DoRA adds one magnitude per output feature of every adapted linear: 32+16+16+32+64+64+32 = 256 per layer
    "dora": (
        peft.LoraConfig(r=4, target_modules="all-linear", use_dora=True, task_type="CAUSAL_LM"),
        None,
        None,
        2 * (LORA_R4 + 256),
        1e-2,
    ),
    "rslora": (
        peft.LoraConfig(r=4, target_modules="all-linear", use_rslora=True, task_type="CAUSAL_LM"),
        None,
        None,
        2 * LORA_R4,
        1e-2,
    ),
    # IA3 on Llama scales k (16), v (16) outputs and the down projection's input (64): 96 per layer
    "ia3": (peft.IA3Config(task_type="CAUSAL_LM"), None, None, 2 * 96, 1e-1),
    # 5 virtual tokens x hidden 32
    "prompt": (peft.PromptTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM"), None, None, 160, 1e-1),
    # 5 virtual tokens x 2 layers x (key + value) x KV width 16
    "prefix": (peft.PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM"), None, None, 5 * 2 * 2 * 16, 1e-1),
    # adaption prompt 4 x 32 in the top layer + its gate (1)
    "llama_adapter": (
        peft.AdaptionPromptConfig(adapter_len=4, adapter_layers=1, task_type="CAUSAL_LM"),
        None,
        None,
        129,
        1e-1,
    ),
    # per adapter: down 32x8 + 8, up 8x32 + 32 = 552; on o_proj and down_proj of 2 layers
    "bottleneck": (BottleneckConfig(bottleneck_size=8), None, None, 4 * 552, 1e-2),
    "qlora_nf4": (
        peft.LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
        None,
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        ),
        2 * LORA_R4,
        1e-2,
    ),
    "qlora_8bit": (
        peft.LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
        None,
        BitsAndBytesConfig(load_in_8bit=True),
        2 * LORA_R4,
        1e-2,
    ),
}
QUANTIZED_LAYER = {"qlora_nf4": bnb.nn.Linear4bit, "qlora_8bit": bnb.nn.Linear8bitLt}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_exactly_its_parameters_and_lowers_the_loss(method, tiny_model_dir, tiny_tokenizer):
    adapter, freeze, quantization, expected_trainable, lr = METHODS[method]
    torch.manual_seed(0)
    module = SFT(
        ModelSpec(path=str(tiny_model_dir), quantization=quantization),
        peft=adapter,
        freeze=freeze,
        optimizer=adamw(lr),
        lr_scheduler="constant",
    )
    module.configure_model()
    trainable, _ = count_parameters(module.model)
    assert trainable == expected_trainable
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}

    recorder = short_fit(module, repeated_batch_loader(tiny_tokenizer, steps=3), steps=3)

    losses = recorder.losses
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] > losses[1] > losses[2], losses
    changed = {name for name, p in module.model.named_parameters() if not torch.equal(p.detach(), before[name])}
    trained = {name for name, p in module.model.named_parameters() if p.requires_grad}
    assert changed <= trained  # frozen weights stay bit-identical
    if quantization is not None:  # every decoder linear (7 per layer) is quantized; lm_head stays in float
        quantized = [m for m in module.model.modules() if isinstance(m, QUANTIZED_LAYER[method])]
        assert len(quantized) == 2 * 7


def test_adapter_and_freeze_together_are_rejected(tiny_model_dir):
    module = SFT(ModelSpec(path=str(tiny_model_dir)), peft=peft.LoraConfig(r=2), freeze=FreezePolicy(1))
    with pytest.raises(ValueError, match="either an adapter"):
        module.configure_model()


def test_quantized_base_without_adapter_is_rejected(tiny_model_dir):
    module = SFT(ModelSpec(path=str(tiny_model_dir), quantization=BitsAndBytesConfig(load_in_4bit=True)))
    with pytest.raises(ValueError, match="add an adapter"):
        module.configure_model()


def test_freeze_pattern_matching_nothing_names_the_parameters(tiny_model_dir):
    module = SFT(ModelSpec(path=str(tiny_model_dir)), freeze=FreezePolicy(trainable_modules=["no_such_module"]))
    with pytest.raises(ValueError, match="matches no parameter"):
        module.configure_model()

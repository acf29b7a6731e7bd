"""bf16 LoRA: the frozen base runs in bf16, the adapter and its optimiser state stay fp32, and a bf16-mixed
step gives the fp32 step's loss within bf16 rounding."""

from __future__ import annotations

import peft
import pytest
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.model import ModelSpec
from tests.helpers import repeated_batch_loader, short_fit


def lora_module(model_dir, dtype: str) -> SFT:
    torch.manual_seed(0)
    return SFT(
        ModelSpec(path=str(model_dir), dtype=dtype),
        peft=peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
        lr_scheduler="constant",
    )


def test_bf16_base_keeps_adapter_and_optimiser_state_in_fp32(tiny_model_dir, tiny_tokenizer):
    module = lora_module(tiny_model_dir, "bfloat16")
    recorder = short_fit(module, repeated_batch_loader(tiny_tokenizer, steps=3), steps=3, precision="bf16-mixed")
    frozen = {p.dtype for p in module.model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in module.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert trainable == {torch.float32}
    states = module.trainer.optimizers[0].state.values()
    assert {state["exp_avg"].dtype for state in states} == {torch.float32}
    assert recorder.losses[-1] < recorder.losses[0]


def test_bf16_mixed_loss_matches_fp32(tiny_model_dir, tiny_tokenizer):
    losses = {}
    for dtype, precision in (("float32", "32-true"), ("bfloat16", "bf16-mixed")):
        module = lora_module(tiny_model_dir, dtype)
        recorder = short_fit(module, repeated_batch_loader(tiny_tokenizer, steps=1), steps=1, precision=precision)
        losses[dtype] = recorder.losses[0]
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.02 * losses["float32"]
    assert losses["bfloat16"] != losses["float32"]  # the bf16 run really computed in bf16


def test_bf16_on_a_cpu_without_native_bf16_warns(tiny_model_dir, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr("lightning_ft.model.precision.cpu_has_native_bf16", lambda: False)
    module = lora_module(tiny_model_dir, "bfloat16")
    with pytest.warns(UserWarning, match="no native bf16 matrix instructions"):
        short_fit(module, repeated_batch_loader(tiny_tokenizer, steps=1), steps=1, precision="bf16-mixed")


def test_fp32_never_warns_about_bf16(tiny_model_dir, tiny_tokenizer, monkeypatch, recwarn):
    monkeypatch.setattr("lightning_ft.model.precision.cpu_has_native_bf16", lambda: False)
    short_fit(lora_module(tiny_model_dir, "float32"), repeated_batch_loader(tiny_tokenizer, steps=1), steps=1)
    assert not [w for w in recwarn if "bf16" in str(w.message)]

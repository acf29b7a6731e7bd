"""Export round trips: logits in training == reloaded adapter on its base == merged standalone model."""

from __future__ import annotations

import json
import subprocess
import sys

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_ft.algorithms import SFT
from lightning_ft.model import BottleneckConfig, ModelSpec
from lightning_ft.model.export import MANIFEST_NAME, load_export, merge_export, save_export
from tests.helpers import adamw, repeated_batch_loader, short_fit

INPUT_IDS = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 3]])


def trained_module(model_dir, tokenizer, adapter) -> SFT:
    torch.manual_seed(0)
    module = SFT(ModelSpec(path=str(model_dir)), peft=adapter, optimizer=adamw(5e-2), lr_scheduler="constant")
    short_fit(module, repeated_batch_loader(tokenizer, steps=3), steps=3)
    return module.eval()


@torch.no_grad()
def logits_of(model) -> torch.Tensor:
    return model(input_ids=INPUT_IDS).logits[:, -INPUT_IDS.shape[1] :]


def test_lora_export_reload_and_merge_match_training_logits(tiny_model_dir, tiny_tokenizer, tmp_path):
    module = trained_module(tiny_model_dir, tiny_tokenizer, peft.LoraConfig(r=4, target_modules="all-linear"))
    training_logits = logits_of(module.model)
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert (training_logits - base_logits).abs().max() > 1e-2  # the adapter learned something

    export = save_export(module.model, module.tokenizer, module.model_spec, tmp_path / "final")
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", MANIFEST_NAME} <= {
        p.name for p in export.iterdir()
    }
    reloaded, tokenizer = load_export(export)
    assert isinstance(reloaded, peft.PeftModel)
    assert tokenizer.chat_template == module.tokenizer.chat_template
    torch.testing.assert_close(logits_of(reloaded), training_logits, atol=1e-4, rtol=0)

    merged_dir = merge_export(export, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    torch.testing.assert_close(logits_of(merged), training_logits, atol=1e-4, rtol=0)


def test_merged_model_loads_without_peft_installed(tiny_model_dir, tiny_tokenizer, tmp_path):
    module = trained_module(tiny_model_dir, tiny_tokenizer, peft.LoraConfig(r=4, target_modules="all-linear"))
    merged_dir = merge_export(
        save_export(module.model, module.tokenizer, module.model_spec, tmp_path / "a"), tmp_path / "merged"
    )
    torch.save(logits_of(module.model), tmp_path / "expected.pt")
    script = f"""
import sys
sys.modules["peft"] = None  # any import of peft now fails
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(merged_dir)!r})
with torch.no_grad():
    logits = model(input_ids=torch.tensor({INPUT_IDS.tolist()})).logits
torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}), atol=1e-4, rtol=0)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "adapter",
    [None, BottleneckConfig(bottleneck_size=8), peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")],
    ids=["full", "bottleneck", "prompt"],
)
def test_other_exports_reload_with_training_logits(adapter, tiny_model_dir, tiny_tokenizer, tmp_path):
    module = trained_module(tiny_model_dir, tiny_tokenizer, adapter)
    export = save_export(module.model, module.tokenizer, module.model_spec, tmp_path / "final")
    kind = json.loads((export / MANIFEST_NAME).read_text())["kind"]
    expected_kind = "full" if adapter is None else "bottleneck" if isinstance(adapter, BottleneckConfig) else "peft"
    assert kind == expected_kind
    reloaded, _ = load_export(export)
    torch.testing.assert_close(logits_of(reloaded), logits_of(module.model), atol=1e-4, rtol=0)
    if kind == "bottleneck":
        with pytest.raises(ValueError, match="cannot be merged"):
            merge_export(export, tmp_path / "merged")


def test_interrupted_export_keeps_the_previous_one(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    module = trained_module(tiny_model_dir, tiny_tokenizer, peft.LoraConfig(r=4, target_modules="all-linear"))
    export = save_export(module.model, module.tokenizer, module.model_spec, tmp_path / "final")
    before = (export / "adapter_model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(module.tokenizer), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_export(module.model, module.tokenizer, module.model_spec, tmp_path / "final")
    assert (export / "adapter_model.safetensors").read_bytes() == before
    assert (export / MANIFEST_NAME).exists()

"""Merging LoRA exports of one base: at the adapter level with peft (the default when it applies), or as full
models (forced, or when the method has no adapter-level counterpart)."""

from __future__ import annotations

import math

import peft
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_ft.cli import main
from lightning_ft.merge import merge_models
from lightning_ft.model.export import load_export, read_manifest
from tests.helpers import greedy_continuation
from tests.merge.conftest import TRAINED_TEMPLATE, weights, write_config

SCALING = 8 / 4  # lora_alpha / r of both exports
INPUT_IDS = torch.tensor([[5, 17, 42, 99, 123, 7]])


def lora_factors(export) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per adapted module (``model.layers.0.self_attn.q_proj``): its (A, B)."""
    tensors = load_file(export / "adapter_model.safetensors")
    modules = {name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for name in tensors}
    prefix = "base_model.model."
    return {
        module: (tensors[f"{prefix}{module}.lora_A.weight"], tensors[f"{prefix}{module}.lora_B.weight"])
        for module in modules
    }


def linear_config(tmp_path, lora_exports, method="linear"):
    models = [
        {"model": str(export), "parameters": {"weight": w}} for export, w in zip(lora_exports, (1.0, 3.0), strict=True)
    ]
    return write_config(tmp_path / "merge.yaml", {"merge_method": method, "models": models})


def test_linear_of_adapters_is_the_weighted_sum_of_their_deltas(lora_exports, tiny_model_dir, tmp_path, capsys):
    """MergeKit's linear with weights 1 and 3 (normalised: 1/4, 3/4) on the full models W0 + s * B_i @ A_i is
    W0 + s * (1/4 * B_1 @ A_1 + 3/4 * B_2 @ A_2). peft's ``cat`` gives exactly that delta as one adapter of rank 8."""
    report = merge_models(linear_config(tmp_path, lora_exports), tmp_path / "out")
    assert report.path == "adapter"
    assert "lightning-ft merge: adapter path: every model is a LoRA export" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "out")
    assert manifest["kind"] == "peft" and manifest["base"]["path"] == str(tiny_model_dir)
    assert manifest["merge"]["path"] == "adapter" and manifest["merge"]["method"] == "linear"
    assert manifest["merge"]["adapter_merge"] == {"combination_type": "cat", "weights": [0.25, 0.75], "density": None}

    merged, tokenizer = load_export(tmp_path / "out", merge=True)
    assert tokenizer.chat_template == TRAINED_TEMPLATE
    base = weights(tiny_model_dir)
    first, second = lora_factors(lora_exports[0]), lora_factors(lora_exports[1])
    state = merged.state_dict()
    for module, (a1, b1) in first.items():
        a2, b2 = second[module]
        expected = base[f"{module}.weight"] + SCALING * (0.25 * b1 @ a1 + 0.75 * b2 @ a2)
        torch.testing.assert_close(state[f"{module}.weight"], expected, rtol=1e-5, atol=1e-6)

    # The same YAML forced through MergeKit on materialised full models: the same model.
    main(["merge", str(tmp_path / "merge.yaml"), str(tmp_path / "full"), "--materialize", "true"])
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    with torch.no_grad():
        torch.testing.assert_close(full(INPUT_IDS).logits, merged(INPUT_IDS).logits, rtol=1e-4, atol=1e-5)
    assert read_manifest(tmp_path / "full")["merge"]["reason"].startswith("--materialize")


def test_peft_linear_combination_scales_both_factors(lora_exports, tmp_path):
    """peft's ``linear`` (a rough, rank-keeping approximation) sums sqrt(w_i * s_i) * A_i and sqrt(w_i * s_i) * B_i,
    and the new adapter has lora_alpha = r (scaling 1)."""
    config = linear_config(tmp_path, lora_exports)
    main(["merge", str(config), str(tmp_path / "out"), "--adapter-combination", "linear"])
    merged = lora_factors(tmp_path / "out")
    first, second = lora_factors(lora_exports[0]), lora_factors(lora_exports[1])
    c1, c2 = math.sqrt(0.25 * SCALING), math.sqrt(0.75 * SCALING)
    for module, (a, b) in merged.items():
        torch.testing.assert_close(a, c1 * first[module][0] + c2 * second[module][0])
        torch.testing.assert_close(b, c1 * first[module][1] + c2 * second[module][1])
    model, _ = load_export(tmp_path / "out")
    adapter_config = model.peft_config["default"]
    assert isinstance(model, peft.PeftModel) and adapter_config.r == adapter_config.lora_alpha == 4


def test_adapter_merge_generates(lora_exports, tmp_path):
    yaml_config = {
        "merge_method": "ties",
        "models": [{"model": str(export), "parameters": {"weight": 1.0, "density": 0.5}} for export in lora_exports],
    }
    report = merge_models(write_config(tmp_path / "merge.yaml", yaml_config), tmp_path / "out", seed=3)
    assert report.path == "adapter"
    assert read_manifest(tmp_path / "out")["merge"]["adapter_merge"]["density"] == 0.5
    model, tokenizer = load_export(tmp_path / "out")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    assert isinstance(greedy_continuation(model, tokenizer, inputs, max_new_tokens=4), str)


def test_a_method_without_adapter_counterpart_falls_back_to_full_models(lora_exports, tmp_path, capsys):
    yaml_config = {
        "merge_method": "slerp",
        "base_model": str(lora_exports[0]),
        "models": [{"model": str(export)} for export in lora_exports],
        "parameters": {"t": 0.5},
    }
    report = merge_models(write_config(tmp_path / "merge.yaml", yaml_config), tmp_path / "out")
    assert report.path == "full"
    assert "adapters materialised as full models, since" in capsys.readouterr().out
    assert read_manifest(tmp_path / "out")["merge"]["sources"][0]["kind"] == "adapter"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # plain transformers, no peft, no lightning-ft
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.chat_template == TRAINED_TEMPLATE
    inputs = tokenizer("hello world", return_tensors="pt")
    assert isinstance(greedy_continuation(model, tokenizer, inputs, max_new_tokens=4), str)

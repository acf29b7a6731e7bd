"""The ``generation_config.json`` of an export: exactly the decoding defaults given (or the base model's own), the
stop tokens that end a trained turn and the pad token; it passes transformers' strict validation, an adapter export
and its merged model carry it, and `load_export` hands it to the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import peft
import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

from lightning_ft.model.export import load_export, merge_export, save_export
from lightning_ft.model.generation_defaults import GenerationDefaults
from lightning_ft.model.heads import unwrap
from lightning_ft.model.spec import ModelSpec

CONFIG = "generation_config.json"


def recorded(directory: Path) -> dict:
    """The file's entries, less the transformers version; it also loads and passes strict validation."""
    GenerationConfig.from_pretrained(directory).validate(strict=True)
    entries = json.loads((directory / CONFIG).read_text())
    entries.pop("transformers_version")
    return entries


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    return spec, spec.load_model(), spec.load_tokenizer()


@pytest.fixture(scope="module")
def stops(model_and_tokenizer) -> dict:
    """``<|im_end|>`` is both EOS and the end-of-turn token of the tiny ChatML tokenizer; ``<pad>`` pads."""
    _, _, tokenizer = model_and_tokenizer
    return {"eos_token_id": [tokenizer.convert_tokens_to_ids("<|im_end|>")], "pad_token_id": 3}


def test_sampling_defaults_are_recorded_exactly_with_the_stop_tokens(model_and_tokenizer, stops, tmp_path):
    spec, model, tokenizer = model_and_tokenizer
    defaults = GenerationDefaults(max_new_tokens=64, temperature=0.7, top_p=0.9)
    export = save_export(model, tokenizer, spec, tmp_path / "final", generation=defaults)
    assert tokenizer.convert_ids_to_tokens(stops["pad_token_id"]) == "<pad>"
    assert recorded(export) == {
        "do_sample": True,
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,  # recorded, or transformers would apply its default of 50
        "repetition_penalty": 1.0,
        **stops,
    }


def test_greedy_defaults_record_no_sampling_option(model_and_tokenizer, stops, tmp_path):
    spec, model, tokenizer = model_and_tokenizer
    export = save_export(
        model, tokenizer, spec, tmp_path / "final", generation=GenerationDefaults(repetition_penalty=1.2)
    )
    assert recorded(export) == {"do_sample": False, "repetition_penalty": 1.2, **stops}
    with pytest.raises(ValueError, match="top_p=0.9 and top_k=0 only apply when sampling"):
        GenerationDefaults(top_p=0.9)
    with pytest.raises(ValueError, match=r"top_k=-1 is out of range: top_k must be an integer >= 0"):
        GenerationDefaults(temperature=0.7, top_k=-1)


def test_without_defaults_a_base_without_a_generation_config_gets_the_stop_tokens_only(
    model_and_tokenizer, stops, tmp_path
):
    spec, model, tokenizer = model_and_tokenizer
    assert model.generation_config._from_model_config  # derived from config.json: eos 2, pad 0, bos 1
    assert recorded(save_export(model, tokenizer, spec, tmp_path / "final")) == stops


def test_without_defaults_the_base_models_own_generation_config_is_kept(tiny_model_dir, stops, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    # as published configs often are: greedy, yet with a temperature transformers ignores (and refuses to save)
    GenerationConfig(bos_token_id=1, eos_token_id=9, do_sample=False, temperature=0.6, top_p=0.95).to_json_file(
        base / CONFIG
    )
    spec = ModelSpec(path=str(base))
    export = save_export(spec.load_model(), spec.load_tokenizer(), spec, tmp_path / "greedy")
    assert recorded(export) == {"bos_token_id": 1, "do_sample": False, **stops}

    GenerationConfig(bos_token_id=1, do_sample=True, temperature=0.6, top_p=0.95, min_p=0.05).to_json_file(
        base / CONFIG
    )
    export = save_export(spec.load_model(), spec.load_tokenizer(), spec, tmp_path / "sampling")
    expected = {"bos_token_id": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95, "min_p": 0.05, **stops}
    assert recorded(export) == expected

    defaults = GenerationDefaults(temperature=0.8, top_k=20)
    export = save_export(spec.load_model(), spec.load_tokenizer(), spec, tmp_path / "given", generation=defaults)
    expected = {"bos_token_id": 1, "do_sample": True, "temperature": 0.8, "top_p": 1.0, "top_k": 20, **stops}
    assert recorded(export) == {**expected, "repetition_penalty": 1.0}  # the base's min_p is replaced too


def test_an_adapter_export_and_its_merged_model_carry_the_generation_config(model_and_tokenizer, stops, tmp_path):
    spec, _, tokenizer = model_and_tokenizer
    model = peft.get_peft_model(spec.load_model(), peft.LoraConfig(r=4, target_modules="all-linear"))
    defaults = GenerationDefaults(temperature=0.7, top_k=5)
    export = save_export(model, tokenizer, spec, tmp_path / "final", generation=defaults)
    expected = {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "top_k": 5, "repetition_penalty": 1.0, **stops}
    assert recorded(export) == expected

    reloaded, _ = load_export(export)
    config = unwrap(reloaded).generation_config
    assert (config.do_sample, config.temperature, config.top_k, config.eos_token_id) == (
        True,
        0.7,
        5,
        stops["eos_token_id"],
    )

    merged = merge_export(export, tmp_path / "merged")
    assert recorded(merged) == expected
    assert AutoModelForCausalLM.from_pretrained(merged).generation_config.top_k == 5


def test_a_model_that_does_not_generate_records_no_generation_config(tiny_model_dir, tmp_path):
    spec = ModelSpec(path=str(tiny_model_dir))
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    export = save_export(classifier, spec.load_tokenizer(), spec, tmp_path / "reward")
    assert not (export / CONFIG).exists()
    with pytest.raises(ValueError, match="a LlamaForSequenceClassification does not generate text"):
        save_export(classifier, spec.load_tokenizer(), spec, tmp_path / "other", generation=GenerationDefaults())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["reward"]  # failed before writing anything

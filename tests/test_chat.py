"""`lightning-ft chat` answers with the model's greedy continuation under the chat template it was trained with,
stopping at the end of the assistant turn: a tiny Llama fine-tuned to give one answer gives exactly that answer, and
a tiny Llama whose outputs depend on the context gives, one-shot and interactively (with the history), what plain
transformers' greedy decoding gives."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_ft.algorithms import SFT
from lightning_ft.cli import main
from lightning_ft.data.collate import PadCollator
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_tokenizer
from tests.helpers import adamw, context_dependent, greedy_reply, short_fit, tokenized_examples

QUESTION, ANSWER = "What is the capital of France?", "The capital of France is Paris."
STEPS = 50  # the loss on the answer is below 0.02 after about 35 full fine-tuning steps at lr 1e-2
NEW_TOKENS = 12
GREETING = "Chat with the model; an empty line or Ctrl-D ends."


@pytest.fixture(scope="module")
def parrot(tiny_model_dir, tmp_path_factory) -> Path:
    """A full export of the tiny Llama trained on the one conversation QUESTION -> ANSWER."""
    torch.manual_seed(0)
    module = SFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-2), lr_scheduler="constant")
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    examples = tokenized_examples(build_tiny_tokenizer(), [conversation])
    loader = DataLoader([examples] * STEPS, batch_size=None, collate_fn=PadCollator(module.tokenizer.pad_token_id))
    losses = short_fit(module, loader, STEPS).losses
    assert losses[-1] < 0.05, losses
    return module.export(tmp_path_factory.mktemp("parrot") / "export")


@pytest.fixture(scope="module")
def talker(tiny_model_dir, tmp_path_factory) -> Path:
    """A plain model directory: the tiny Llama with `context_dependent` weights, so every prompt gets its own reply."""
    directory = tmp_path_factory.mktemp("talker")
    context_dependent(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


def chat(capsys, model: Path, *args: str, max_new_tokens: int = NEW_TOKENS) -> str:
    capsys.readouterr()
    main(["chat", "--model", str(model), "--max_new_tokens", str(max_new_tokens), *args])
    return capsys.readouterr().out


def reference(model_dir: Path, messages: list[dict[str, str]]) -> str:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    return greedy_reply(model, tokenizer, messages, max_new_tokens=NEW_TOKENS)


def test_the_trained_answer_and_nothing_after_it(parrot, capsys):
    assert chat(capsys, parrot, "--prompt", QUESTION, max_new_tokens=256) == ANSWER + "\n"


@pytest.mark.parametrize(
    ("prompt", "system"), [(QUESTION, None), ("Say hello.", None), ("Write a haiku about autumn.", "Answer briefly.")]
)
def test_a_reply_is_the_greedy_continuation(talker, capsys, prompt, system):
    opening = [{"role": "system", "content": system}] if system else []
    expected = reference(talker, [*opening, {"role": "user", "content": prompt}])
    assert expected
    assert chat(capsys, talker, "--prompt", prompt, *(["--system", system] if system else [])) == expected + "\n"


def test_the_interactive_chat_keeps_the_history(talker, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTION}\nThank you!\n\n"))
    out = chat(capsys, talker)
    first = reference(talker, [{"role": "user", "content": QUESTION}])
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first}]
    second = reference(talker, [*history, {"role": "user", "content": "Thank you!"}])
    assert second != reference(talker, [{"role": "user", "content": "Thank you!"}])  # the history changes the reply
    # input() writes its "user: " prompt without a newline: each reply follows one
    assert out == f"{GREETING}\nuser: assistant: {first}\nuser: assistant: {second}\nuser: "

"""`lightning-ft chat` answers with the model's greedy continuation under the chat template it was trained with,
stopping at the end of the assistant turn: a tiny Llama fine-tuned to give one answer gives exactly that answer, and
a tiny Llama whose outputs depend on the context gives, one-shot and interactively (with the history), what plain
transformers' greedy decoding gives. Without sampling options it samples as the export's generation_config.json says
(seeded: what plain transformers gives with that file and seed); explicit options win; bad ones fail first."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lightning_ft.algorithms import SFT
from lightning_ft.cli import main
from lightning_ft.data.collate import PadCollator
from lightning_ft.model.export import save_export
from lightning_ft.model.generation_defaults import GenerationDefaults
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


@pytest.fixture(scope="module")
def sampler(talker, tmp_path_factory) -> Path:
    """A full export of the talker whose generation_config.json records sampling at temperature 0.7 within the
    top 5 tokens, at most NEW_TOKENS long."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(talker), AutoTokenizer.from_pretrained(talker)
    spec = ModelSpec(path=str(talker))
    defaults = GenerationDefaults(max_new_tokens=NEW_TOKENS, temperature=0.7, top_k=5)
    return save_export(model, tokenizer, spec, tmp_path_factory.mktemp("sampler") / "export", generation=defaults)


def sampled_reference(export: Path, seed: int) -> str:
    """Plain transformers sampling with the export's generation_config.json, after ``torch.manual_seed(seed)``."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(export), AutoTokenizer.from_pretrained(export)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(export))
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_without_options_chat_samples_as_the_export_records(sampler, capsys):
    """`generate` with the recorded config and the same seed gives the same reply; other seeds give others, and
    greedy decoding is neither of them."""
    capsys.readouterr()
    replies = {}
    for seed in (0, 1):
        main(["chat", "--model", str(sampler), "--prompt", QUESTION, "--seed", str(seed)])
        replies[seed] = capsys.readouterr().out
        assert replies[seed] == sampled_reference(sampler, seed) + "\n"
    greedy = reference(sampler, [{"role": "user", "content": QUESTION}])
    assert len({replies[0], replies[1], greedy + "\n"}) == 3


def test_explicit_options_override_the_recorded_ones(sampler, capsys):
    greedy = reference(sampler, [{"role": "user", "content": QUESTION}]) + "\n"
    assert chat(capsys, sampler, "--prompt", QUESTION, "--temperature", "0", "--seed", "1") == greedy
    assert chat(capsys, sampler, "--prompt", QUESTION, "--top_k", "1", "--seed", "1") == greedy  # top-1 sampling


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--top_p", "0", "top_p=0.0 is out of range: top_p must be in (0, 1]"),
        ("--top_p", "1.2", "top_p=1.2 is out of range: top_p must be in (0, 1]"),
        ("--temperature", "-1", "temperature=-1.0 is out of range: temperature must be a number >= 0"),
        ("--top_k", "-3", "top_k=-3 is out of range: top_k must be an integer >= 0"),
    ],
)
def test_a_bad_option_fails_before_the_model_loads(flag, value, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        main(["chat", "--model", str(tmp_path / "no-such-model"), "--prompt", "hi", flag, value])

"""/v1/chat/completions: replies equal the repo's chat path (`generate_reply` on `load_export`, greedy), streamed
deltas concatenate to the same reply, every adapter answers with its own weights in one concurrent burst, and
``stop`` / ``max_tokens`` are honoured exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lightning_ft.model.export import load_export
from lightning_ft.model.generation import generate_reply
from lightning_ft.model.sampling import SamplingOptions

PROMPTS = ["What is the capital of France?", "Say hello.", "Write a haiku about autumn."]
NEW_TOKENS = 12


def expected_reply(model_dir: Path, prompt: str, max_new_tokens: int = NEW_TOKENS) -> str:
    model, tokenizer = load_export(model_dir)
    messages = [{"role": "user", "content": prompt}]
    return generate_reply(model, tokenizer, messages, SamplingOptions(max_new_tokens=max_new_tokens))


def ask(client, model: str, prompt: str, **options):  # noqa: ANN001, ANN201
    messages = [{"role": "user", "content": prompt}]
    return client.chat.completions.create(model=model, messages=messages, temperature=0, **options)


def test_a_reply_is_the_greedy_chat_reply(client, base_dir):
    response = ask(client, str(base_dir), PROMPTS[0], max_tokens=NEW_TOKENS)
    assert response.choices[0].message.content == expected_reply(base_dir, PROMPTS[0])
    assert response.choices[0].message.role == "assistant"
    assert response.model == str(base_dir)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streamed_deltas_make_the_same_reply(client, base_dir):
    whole = ask(client, str(base_dir), PROMPTS[1], max_tokens=NEW_TOKENS).choices[0].message.content
    chunks = list(ask(client, str(base_dir), PROMPTS[1], max_tokens=NEW_TOKENS, stream=True))
    deltas = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
    assert whole and "".join(deltas) == whole
    assert len([delta for delta in deltas if delta]) > 1  # streamed, not sent in one piece
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_every_adapter_answers_with_its_own_weights_in_one_burst(client, base_dir, adapter_dirs):
    """Base, alpha and beta are asked the same prompts at once (batched together); each reply is its model's."""
    models = {str(base_dir): base_dir, **{name: directory for name, directory in adapter_dirs.items()}}
    asks = [(name, prompt) for prompt in PROMPTS[:2] for name in models]
    with ThreadPoolExecutor(len(asks)) as pool:
        replies = list(pool.map(lambda item: ask(client, item[0], item[1], max_tokens=NEW_TOKENS), asks))
    got = {item: reply.choices[0].message.content for item, reply in zip(asks, replies, strict=True)}
    for name, prompt in asks:
        assert got[name, prompt] == expected_reply(models[name], prompt), (name, prompt)
    for prompt in PROMPTS[:2]:
        assert len({got[name, prompt] for name in models}) == len(models)  # the adapters answer differently


def test_max_tokens_is_honoured_exactly(client, base_dir):
    response = ask(client, str(base_dir), PROMPTS[2], max_tokens=3)
    reply = expected_reply(base_dir, PROMPTS[2], max_new_tokens=3)
    assert response.choices[0].message.content == reply
    assert response.usage.completion_tokens == 3
    assert response.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_cuts_the_reply(client, base_dir, stream):
    full = expected_reply(base_dir, PROMPTS[0], max_new_tokens=NEW_TOKENS)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip() and len(full) > 4, full
    cut = full[: full.find(stop)].strip()
    response = ask(client, str(base_dir), PROMPTS[0], max_tokens=NEW_TOKENS, stop=[stop], stream=stream)
    if stream:
        chunks = list(response)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        finish_reason = chunks[-1].choices[0].finish_reason
    else:
        text, finish_reason = response.choices[0].message.content, response.choices[0].finish_reason
        assert response.usage.completion_tokens < NEW_TOKENS
    assert text == cut
    assert finish_reason == "stop"


def test_a_seeded_sampled_reply_is_the_chat_reply_of_that_seed(client, base_dir):
    """Sampled at temperature 1 with seed 7 (model left empty: the default), twice: `lightning-ft chat`'s reply
    with that seed both times."""
    model, tokenizer = load_export(base_dir)
    sampling = SamplingOptions(max_new_tokens=8, temperature=1.0, seed=7)
    expected = generate_reply(model, tokenizer, [{"role": "user", "content": PROMPTS[1]}], sampling)
    messages = [{"role": "user", "content": PROMPTS[1]}]
    for _ in range(2):
        response = client.chat.completions.create(model="", messages=messages, max_tokens=8, seed=7, temperature=1.0)
        assert response.choices[0].message.content == expected


def test_tools_reach_the_chat_template(client, base_dir):
    """The tiny ChatML template ignores tools, so a request with tools is answered as one without them."""
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
    plain = ask(client, str(base_dir), PROMPTS[0], max_tokens=NEW_TOKENS)
    with_tools = ask(client, str(base_dir), PROMPTS[0], max_tokens=NEW_TOKENS, tools=tools)
    assert with_tools.choices[0].message.content == plain.choices[0].message.content

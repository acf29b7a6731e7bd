"""/v1/completions continues the raw prompt exactly as greedy ``generate`` does; /v1/models lists every served
name."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_ft.model.generation import stop_token_ids

PROMPT = "The capital of France is"
NEW_TOKENS = 10


def greedy_continuation(model_dir, prompt: str, max_new_tokens: int) -> str:  # noqa: ANN001
    """Plain transformers: the tokenizer's default encoding of ``prompt``, greedy, stopped at the end-of-turn
    tokens, special tokens skipped, nothing stripped."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(tokenizer)
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_a_completion_is_the_greedy_continuation(client, base_dir):
    response = client.completions.create(model=str(base_dir), prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0)
    expected = greedy_continuation(base_dir, PROMPT, NEW_TOKENS)
    assert expected
    assert response.choices[0].text == expected
    assert response.usage.prompt_tokens == len(AutoTokenizer.from_pretrained(base_dir)(PROMPT)["input_ids"])


def test_a_streamed_completion_is_the_same_text(client, base_dir):
    chunks = client.completions.create(
        model=str(base_dir), prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in chunks) == greedy_continuation(base_dir, PROMPT, NEW_TOKENS)


def test_the_models_are_the_base_and_every_adapter(client, base_dir):
    assert [model.id for model in client.models.list()] == [str(base_dir), "alpha", "beta"]

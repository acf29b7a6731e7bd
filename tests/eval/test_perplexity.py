"""Teacher-forced loss of reference answers, masked as in SFT."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_ft.eval.items import EvalItem
from lightning_ft.eval.perplexity import reference_losses
from lightning_ft.model.spec import ModelSpec

ITEMS = [
    EvalItem("a", [{"role": "user", "content": "What is the capital of France?"}], reference="Paris."),
    EvalItem("b", [{"role": "user", "content": "hello"}]),  # no reference: not scored
    EvalItem(
        "c",
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Convert 3 kilometres to metres"},
        ],
        reference="3000 metres",
    ),
    EvalItem("d", [{"role": "user", "content": "Pick"}], choices=["x", "y"], answer=0),  # multiple choice: not scored
]


def test_only_the_reference_and_its_end_of_turn_are_scored(tiny_model_dir: Path) -> None:
    """By hand: render prompt + generation prompt, then the reference and ``<|im_end|>``; the loss is minus the sum
    of log_softmax(logits[t - 1])[token t] over exactly the tokens after the generation prompt, up to and including
    ``<|im_end|>`` (the newline after it is not part of the turn)."""
    spec = ModelSpec(path=str(tiny_model_dir))
    model, tokenizer = spec.load_model().eval(), spec.load_tokenizer()
    results = reference_losses(model, tokenizer, ITEMS, batch_size=2)
    assert results[1] is None and results[3] is None
    for item, result in ((ITEMS[0], results[0]), (ITEMS[2], results[2])):
        prompt = tokenizer.apply_chat_template(item.prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(item.reference + "<|im_end|>", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        positions = range(len(prompt_ids), len(prompt_ids) + len(answer_ids))
        expected = -sum(logps[t - 1, ids[0, t]].item() for t in positions)
        assert result.tokens == len(answer_ids)
        assert abs(result.loss_sum - expected) < 1e-4
        assert not result.truncated


def test_a_conversation_longer_than_max_length_is_cut_and_flagged(tiny_model_dir: Path) -> None:
    spec = ModelSpec(path=str(tiny_model_dir))
    model, tokenizer = spec.load_model().eval(), spec.load_tokenizer()
    long_item = EvalItem("long", [{"role": "user", "content": "hi"}], reference="the capital of France " * 20)
    full, cut = (
        reference_losses(model, tokenizer, [long_item])[0],
        reference_losses(model, tokenizer, [long_item], 24)[0],
    )
    assert cut.truncated and not full.truncated
    prompt = tokenizer.apply_chat_template(long_item.prompt, tokenize=False, add_generation_prompt=True)
    assert cut.tokens == 24 - len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

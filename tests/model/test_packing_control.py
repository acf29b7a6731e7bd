"""The control for the per-token comparison of packed and unpacked logits (tests/gpu/test_cuda.py runs it under
flash-attention): on the context-dependent tiny model, correct packing stays within the tolerance, in fp32 and bf16,
while attention that leaks across the packed sequences (positions restarted, no block-diagonal mask) misses it by
far more than the tolerance. With the default initialisation the same leak moves the logits by about 0.25 only."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from lightning_ft.data.collate import PadCollator
from lightning_ft.data.packing import PackingCollator
from tests.helpers import BF16_LOGITS_ATOL, context_dependent, per_token_logits, split_by_sequence, tokenized_examples


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-4), (torch.bfloat16, BF16_LOGITS_ATOL)])
def test_packed_logits_equal_one_by_one_and_a_leak_would_show(tiny_model_dir, tiny_tokenizer, dtype, atol):
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=dtype).eval()
    context_dependent(model)
    examples = tokenized_examples(tiny_tokenizer)
    packed = PackingCollator(tiny_tokenizer.pad_token_id)(
        [{"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}]
    )
    sequence_ids = packed["sequence_ids"][0]
    alone = [per_token_logits(model, PadCollator(tiny_tokenizer.pad_token_id)([e])) for e in examples]
    together = split_by_sequence(per_token_logits(model, packed), sequence_ids)
    for got, expected in zip(together, alone, strict=True):
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)
    with torch.no_grad():  # the leak: restarted positions alone, every token sees all the earlier sequences
        leaking = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0].float()
    leaked = split_by_sequence(leaking, sequence_ids)
    torch.testing.assert_close(leaked[0], alone[0], atol=atol, rtol=0)  # the first sequence has nothing before it
    worst = max(float((got - expected).abs().max()) for got, expected in zip(leaked[1:], alone[1:], strict=True))
    assert worst > 10 * BF16_LOGITS_ATOL, worst

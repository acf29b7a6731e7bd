"""A packed batch gives every sequence the same logits and loss as running it alone."""

from __future__ import annotations

import peft
import pytest
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.data.collate import PadCollator
from lightning_ft.data.packing import PackingCollator
from lightning_ft.losses import cross_entropy
from lightning_ft.model import ModelSpec
from lightning_ft.model.attention import model_inputs, tokens_per_sequence
from lightning_ft.model.heads import final_hidden_states, output_projection
from tests.helpers import tokenized_examples

ADAPTERS = {
    "full": None,
    "lora": peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    "llama_adapter": peft.AdaptionPromptConfig(adapter_len=3, adapter_layers=1, task_type="CAUSAL_LM"),
}


def module_for(model_dir, adapter, attn_implementation="sdpa") -> SFT:
    torch.manual_seed(0)
    module = SFT(
        ModelSpec(path=str(model_dir), attn_implementation=attn_implementation), peft=adapter, loss_fn=cross_entropy
    )
    module.configure_model()
    if adapter is not None and not isinstance(adapter, peft.LoraConfig):  # make the zero-init gate matter
        for name, parameter in module.model.named_parameters():
            if "adaption_gate" in name:
                parameter.data.fill_(0.5)
    return module.eval()


def logits(module: SFT, batch: dict) -> torch.Tensor:
    base = module.model.get_base_model() if isinstance(module.model, peft.PeftModel) else module.model
    inputs = model_inputs(batch, base.config._attn_implementation, torch.float32)
    with torch.no_grad():
        return output_projection(module.model)(
            final_hidden_states(module.model, input_ids=batch["input_ids"], **inputs)
        )


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_packed_logits_and_loss_equal_one_by_one(adapter, attn_implementation, tiny_model_dir, tiny_tokenizer):
    module = module_for(tiny_model_dir, ADAPTERS[adapter], attn_implementation)
    examples = tokenized_examples(tiny_tokenizer)
    packed = PackingCollator(tiny_tokenizer.pad_token_id)(
        [{"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}]
    )
    packed_logits = logits(module, packed)[0]
    start = 0
    single_sums, single_counts = [], []
    for example in examples:
        alone = PadCollator(tiny_tokenizer.pad_token_id)([example])
        alone_logits = logits(module, alone)[0]
        length = len(example["input_ids"])
        torch.testing.assert_close(packed_logits[start : start + length], alone_logits, atol=1e-5, rtol=0)
        start += length
        with torch.no_grad():
            loss_sum, count = module.loss_sum(alone)
        single_sums.append(loss_sum)
        single_counts.append(count)
    with torch.no_grad():
        packed_sum, packed_count = module.loss_sum(packed)
    assert packed_count == sum(single_counts)
    torch.testing.assert_close(packed_sum, sum(single_sums), atol=1e-5, rtol=1e-6)


def test_prompt_tuning_refuses_packed_batches(tiny_model_dir, tiny_tokenizer):
    module = module_for(tiny_model_dir, peft.PromptTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"))
    examples = tokenized_examples(tiny_tokenizer)
    packed = PackingCollator(tiny_tokenizer.pad_token_id)(
        [{"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}]
    )
    with pytest.raises(ValueError, match="set `data.packing: false`"):
        module.loss_sum(packed)


def test_tokens_per_sequence_for_padded_and_packed_batches():
    padded = {"attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    assert tokens_per_sequence(padded).tolist() == [[3, 3, 3], [2, 2, 0]]
    packed = {"attention_mask": torch.tensor([[1, 1, 1, 1, 0]]), "sequence_ids": torch.tensor([[0, 0, 0, 1, 2]])}
    assert tokens_per_sequence(packed).tolist() == [[3, 3, 3, 1, 0]]

"""A prompt run once for its group of continuations gives what running every row in full gives: the same hidden
states and gradients, the same log-probs in GRPO, and the same samples from `generate` under the same seed."""

from __future__ import annotations

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_ft.algorithms import GRPO
from lightning_ft.model.heads import final_hidden_states
from lightning_ft.model.shared_prefix import can_share_prefix, shared_prefix_hidden_states
from lightning_ft.model.spec import ModelSpec
from tests.helpers import REWARD

GROUP = 3


def lora_model(tiny_model_dir) -> peft.PeftModel:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    config = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)  # a non-zero adapter
    return peft.get_peft_model(model, config)


def grouped_rows(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two left-padded prompts (5 and 2 real tokens, 5 columns), each continued by GROUP rows of 4 tokens, some
    of which end early (right padding)."""
    generator = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(3, vocab_size, (2, 5), generator=generator)
    prompt_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    continuation = torch.randint(3, vocab_size, (2 * GROUP, 4), generator=generator)
    continuation_mask = torch.ones_like(continuation)
    continuation_mask[1, 2:] = 0
    continuation_mask[4, 1:] = 0
    input_ids = torch.cat([prompt_ids.repeat_interleave(GROUP, dim=0), continuation], dim=1)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(GROUP, dim=0), continuation_mask], dim=1)
    return input_ids, attention_mask, prompt_ids.shape[1]


def full_hidden_states(model, input_ids, attention_mask) -> torch.Tensor:
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return final_hidden_states(model, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


def test_shared_prefix_hidden_states_and_gradients_equal_the_full_forward(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    input_ids, attention_mask, prompt_length = grouped_rows(model.config.vocab_size)
    real = attention_mask[:, prompt_length - 1 :].bool()  # the positions whose states are used

    def gradients(hidden: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        weights = torch.linspace(-1, 1, hidden.shape[-1])
        (hidden[real] * weights).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full = full_hidden_states(model, input_ids, attention_mask)[:, prompt_length - 1 :]
    full_gradients = gradients(full)
    shared = shared_prefix_hidden_states(model, input_ids, attention_mask, prompt_length, GROUP)
    shared_gradients = gradients(shared)

    assert shared.shape == full.shape == (2 * GROUP, 5, model.config.hidden_size)
    torch.testing.assert_close(shared[real], full[real], atol=1e-5, rtol=1e-5)
    for shared_gradient, full_gradient in zip(shared_gradients, full_gradients, strict=True):
        torch.testing.assert_close(shared_gradient, full_gradient, atol=1e-5, rtol=1e-4)


def test_grpo_log_probs_of_a_group_equal_those_of_ungrouped_rows(tiny_model_dir):
    module = GRPO(ModelSpec(path=str(tiny_model_dir)), reward_funcs=[REWARD], temperature=0.7)
    module.configure_model()
    torch.manual_seed(0)
    encoded = module.tokenizer(["Say hello.", "What is the capital of France?"], padding=True, padding_side="left")
    batch = {name: torch.tensor(values) for name, values in encoded.items() if name != "token_type_ids"}
    batch["prompt_text"] = ["a", "b"]
    completions, _ = module.complete(batch, generations=GROUP, temperature=0.7)
    assert completions.group_size == GROUP

    grouped = module.completion_logprobs(module.model, completions)
    ungrouped = module.completion_logprobs(module.model, completions.rows(torch.arange(2 * GROUP)))
    torch.testing.assert_close(grouped, ungrouped, atol=1e-5, rtol=1e-5)
    assert (grouped[completions.completion_mask == 0] == 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_sampling_from_one_prefill_per_prompt_draws_what_generate_draws(tiny_model_dir, temperature):
    """`GRPO.sample` (one prompt forward per group) against `generate` on the repeated prompts, same seed."""
    module = GRPO(ModelSpec(path=str(tiny_model_dir)), reward_funcs=[REWARD], max_new_tokens=12)
    module.configure_model()
    encoded = module.tokenizer(["Say hello.", "What is the capital of France?"], padding=True, padding_side="left")
    input_ids, attention_mask = torch.tensor(encoded["input_ids"]), torch.tensor(encoded["attention_mask"])

    torch.manual_seed(7)
    sequences, completion_mask, _ = module.sample(input_ids, attention_mask, temperature, generations=4)
    torch.manual_seed(7)
    module.model.eval()
    expected = module.model.generate(
        input_ids=input_ids.repeat_interleave(4, dim=0),
        attention_mask=attention_mask.repeat_interleave(4, dim=0),
        max_new_tokens=12,
        eos_token_id=module.tokenizer.eos_token_id,
        pad_token_id=module.tokenizer.pad_token_id,
        do_sample=temperature > 0,
        temperature=temperature or None,
        top_p=1.0,
        top_k=0,
    )
    assert torch.equal(sequences, expected)
    if temperature > 0:
        assert len({tuple(row.tolist()) for row in sequences[:4]}) > 1  # the group's samples differ


def test_prefix_is_not_shared_under_prompt_learning_or_checkpointed_training(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert can_share_prefix(model)
    prompt_tuned = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert not can_share_prefix(prompt_tuned)

    checkpointed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    checkpointed.gradient_checkpointing_enable()
    checkpointed.train()
    assert not can_share_prefix(checkpointed)  # the checkpointed layers would replay without the cache
    with torch.no_grad():
        assert can_share_prefix(checkpointed)  # sampling: nothing to replay

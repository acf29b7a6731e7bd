"""Online RL samples from the distribution its loss scores: no truncation or penalty from transformers' defaults or
the model's generation_config.json, log-probs at the sampling temperature; and PPO takes exactly the optimiser steps
the schedule counts, for any data size."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from lightning_ft.algorithms import GRPO
from lightning_ft.data import PromptData
from lightning_ft.model.spec import ModelSpec
from tests.helpers import REWARD, build_ppo, prompt_file, quiet_trainer


@pytest.fixture
def model_with_generation_defaults(tiny_model_dir, tmp_path):
    """The tiny Llama with a generation_config.json that truncates and penalises, as many published models ship."""
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    GenerationConfig(top_k=5, repetition_penalty=1.3, min_p=0.2, do_sample=True).save_pretrained(directory)
    return directory


def processors_used(monkeypatch) -> list:
    used: list = []
    original = GenerationMixin._get_logits_processor

    def record(self, *args, **kwargs):
        processors = original(self, *args, **kwargs)
        used.append(list(processors))
        return processors

    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", record)
    return used


def prompts(module: GRPO) -> dict[str, torch.Tensor]:
    encoded = module.tokenizer(["Say hello.", "What is the capital of France?"], padding=True, padding_side="left")
    return {name: torch.tensor(values) for name, values in encoded.items() if name != "token_type_ids"}


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 1.0), (1.0, 1.0), (1.3, 0.9), (0.0, 1.0)])
def test_sampling_applies_only_the_temperature_and_top_p_asked_for(
    model_with_generation_defaults, monkeypatch, temperature, top_p
):
    module = GRPO(ModelSpec(path=str(model_with_generation_defaults)), reward_funcs=[REWARD], top_p=top_p)
    module.configure_model()
    used = processors_used(monkeypatch)
    batch = prompts(module)
    module.sample(batch["input_ids"], batch["attention_mask"], temperature)
    (processors,) = used
    expected = []
    if temperature not in (0.0, 1.0):
        expected.append((TemperatureLogitsWarper, temperature))
    if temperature > 0 and top_p < 1:
        expected.append((TopPLogitsWarper, top_p))
    found = [(type(p), getattr(p, "temperature", getattr(p, "top_p", None))) for p in processors]
    assert found == expected
    assert module.model.generation_config.top_k == 5  # the model's own config is back in place


def test_completion_log_probs_are_those_of_the_tempered_distribution(tiny_model_dir):
    """log softmax(logits / T) of each sampled token, from the model's full logits (a reference implementation)."""
    L.seed_everything(0)
    temperature = 0.7
    module = GRPO(ModelSpec(path=str(tiny_model_dir)), reward_funcs=[REWARD], temperature=temperature)
    module.configure_model()
    batch = prompts(module)
    batch["prompt_text"] = ["a", "b"]
    completions, _ = module.complete(batch, generations=2, temperature=temperature)
    logprobs = module.completion_logprobs(module.model, completions)

    mask = completions.attention_mask
    with torch.no_grad():
        logits = module.model(
            input_ids=completions.input_ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).logits
    start = completions.prompt_length
    predicted = torch.log_softmax(logits[:, start - 1 : -1].float() / temperature, dim=-1)
    tokens = completions.input_ids[:, start:]
    expected = predicted.gather(2, tokens[..., None]).squeeze(2) * completions.completion_mask
    torch.testing.assert_close(logprobs, expected, atol=1e-5, rtol=1e-5)
    untempered = torch.log_softmax(logits[:, start - 1 : -1].float(), dim=-1).gather(2, tokens[..., None]).squeeze(2)
    assert not torch.allclose(logprobs, untempered * completions.completion_mask, atol=1e-3)


@pytest.mark.parametrize(("prompts_in_file", "batch_size", "minibatches"), [(6, 6, 4), (7, 2, 2), (9, 4, 3)])
def test_ppo_takes_exactly_the_optimiser_steps_the_schedule_counts(
    tiny_model_dir, tmp_path, prompts_in_file, batch_size, minibatches
):
    """6 rollouts in 4 minibatches is 4 steps (``chunk`` made 3); a last partial batch smaller than the minibatch
    count is left out of the epoch instead of stopping the run."""
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir, ppo_epochs=2, num_minibatches=minibatches, max_new_tokens=4)
    data = PromptData(prompt_file(tmp_path, prompts_in_file), tokenizer=module.tokenizer, batch_size=batch_size)
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    full_batches = prompts_in_file // batch_size
    assert trainer.global_step == full_batches * 2 * minibatches
    assert trainer.global_step == trainer.estimated_stepping_batches * module.optimizer_steps_per_batch
    assert module.lr_schedulers().last_epoch == trainer.global_step

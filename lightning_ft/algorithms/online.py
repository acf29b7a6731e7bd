"""`OnlinePolicy`: what PPO and GRPO share: sample completions of `PromptData` prompts from the policy, score them
with reward functions and reward models, run the policy (or reference) over them, and step the optimiser by hand."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lightning_ft.algorithms.reference import ReferencedPolicy
from lightning_ft.errors import UsageError
from lightning_ft.losses.logps import token_logps
from lightning_ft.losses.sft import IGNORE_INDEX, Projection
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.generation import policy_sampling, stop_token_ids, without_generation_defaults
from lightning_ft.model.heads import output_projection
from lightning_ft.model.shared_prefix import (
    cache_keyword,
    can_share_prefix,
    prefix_cache,
    shared_prefix_hidden_states,
)
from lightning_ft.model.spec import ModelSpec
from lightning_ft.rewards.loading import load_rewards, reward_name, score_completions

PROMPT_COLUMNS = ("input_ids", "attention_mask", "prompt_text", "record")


@dataclass
class Completions:
    """Sampled completions of left-padded prompts, scored: ``(N, length)`` tensors of prompt + completion."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # (N, completion length): 1 up to and including the first stop token
    prompt_length: int
    scores: torch.Tensor  # (N,) weighted sum of the rewards
    group_size: int = 1  # consecutive rows that continue the same prompt

    def rows(self, index: torch.Tensor) -> Completions:
        """The completions at ``index`` (no longer grouped by prompt)."""
        return replace(
            self,
            group_size=1,
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            completion_mask=self.completion_mask[index],
            scores=self.scores[index],
        )

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


class OnlinePolicy(ReferencedPolicy):
    """Base of the online RL algorithms (manual optimisation): sampling, rewards, log-probs, validation.

    Lightning's ``gradient_clip_val`` and ``accumulate_grad_batches`` do not apply to manual optimisation: clip with
    ``max_grad_norm``. ``trainer.max_steps`` counts optimiser steps, of which a training step may take several.

    Args:
        model: The policy.
        reward_funcs: Rewards, each either the import path of a function ``fn(prompts, completions, **fields) ->
            list[float]`` (the prompt records' other fields, e.g. ``answer``, and ``prompt_messages`` arrive as
            ``fields``; see `lightning_ft.rewards`) or the path (or hub id) of a reward model: a `RewardModel`
            export or any one-output sequence classifier, which scores the prompt's messages plus the completion
            rendered with its own chat template.
        reward_weights: One weight per reward (default 1 each).
        max_new_tokens: Longest completion.
        temperature: Sampling temperature (above 0); log-probs, ratios and KL are computed at it too.
        top_p: Nucleus sampling. Below 1 the completions come from a truncated distribution that the log-probs do
            not model (as in TRL), so ratios and KL are then approximate; the default 1 keeps them exact.
        max_grad_norm: Clip the gradient norm; ``None`` turns it off.
        val_temperature: Sampling temperature of validation completions; 0 samples greedily (deterministic).
        val_generations: Completions per validation prompt (more give a steadier mean when sampling).
        **kwargs: `ReferencedPolicy` / `FineTuneModule` arguments (``disable_dropout`` is on by default, so sampling
            and scoring see the same network), peft, freeze, optimizer, schedule, ...
    """

    def __init__(
        self,
        model: ModelSpec,
        reward_funcs: list[str],
        reward_weights: list[float] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_grad_norm: float | None = 1.0,
        val_temperature: float = 0.0,
        val_generations: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not reward_funcs:
            raise UsageError(
                f"{type(self).__name__} needs at least one entry in reward_funcs: set model.reward_funcs (reward "
                "function import paths or reward model directories)"
            )
        if temperature <= 0:
            raise UsageError(f"model.temperature must be above 0 (training samples from the policy), got {temperature}")
        if reward_weights is not None and len(reward_weights) != len(reward_funcs):
            raise UsageError(
                f"{len(reward_weights)} reward_weights for {len(reward_funcs)} reward_funcs: give model.reward_weights "
                "one weight per model.reward_funcs entry"
            )
        self.automatic_optimization = False
        self.reward_functions = load_rewards(reward_funcs)
        self.reward_weights = list(reward_weights or [1.0] * len(reward_funcs))
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.max_grad_norm = max_grad_norm
        self.val_temperature = val_temperature
        self.val_generations = val_generations

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Mean reward of ``val_generations`` completions per held-out prompt at ``val_temperature``."""
        completions, per_reward = self.complete(batch, self.val_generations, self.val_temperature)
        size = len(completions.scores)
        self.log("val/reward", completions.scores.mean(), prog_bar=True, batch_size=size, sync_dist=True)
        for name, scores in per_reward.items():
            self.log(f"val/rewards/{name}", scores.mean(), batch_size=size, sync_dist=True)
        self.log("val/completion_length", completions.lengths.float().mean(), batch_size=size, sync_dist=True)

    @torch.no_grad()
    def complete(
        self, batch: dict[str, Any], generations: int, temperature: float
    ) -> tuple[Completions, dict[str, torch.Tensor]]:
        """Sample ``generations`` completions of every prompt (next to each other) and score them.

        Returns:
            ``(completions, per_reward)``: ``per_reward`` maps each reward's name to its ``(N,)`` unweighted scores.
        """
        sequences, completion_mask, texts = self.sample(
            batch["input_ids"], batch["attention_mask"], temperature, generations
        )
        prompt_mask = batch["attention_mask"].repeat_interleave(generations, dim=0)
        prompts = [text for text in batch["prompt_text"] for _ in range(generations)]
        for function in self.reward_functions.values():
            if isinstance(function, nn.Module):  # reward models score where the policy runs
                function.to(self.device)
        total, per_reward = score_completions(
            self.reward_functions, self.reward_weights, prompts, texts, reward_fields(batch, generations)
        )
        completions = Completions(
            input_ids=sequences,
            attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
            completion_mask=completion_mask,
            prompt_length=prompt_mask.shape[1],
            scores=total.to(self.device),
            group_size=generations,
        )
        return completions, {reward_name(name): scores.to(self.device) for name, scores in per_reward.items()}

    @torch.no_grad()
    def sample(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float, generations: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Complete left-padded prompts ``generations`` times each (greedily at temperature 0): ``(sequences,
        completion_mask, texts)``, the completions of each prompt in consecutive rows.

        Each prompt is run once: its key/value cache (all but its last token) is repeated for its completions, and
        ``generate`` continues from it, drawing the same samples as from the repeated prompts.
        """
        was_training = self.model.training
        self.model.eval()
        stops = stop_token_ids(self.tokenizer)
        rows = input_ids.repeat_interleave(generations, dim=0)
        rows_mask = attention_mask.repeat_interleave(generations, dim=0)
        cache = None
        if generations > 1 and input_ids.shape[1] > 1 and can_share_prefix(self.model):
            _, cache = prefix_cache(self.model, input_ids[:, :-1], attention_mask[:, :-1], generations)
        with without_generation_defaults(self.model):
            sequences = self.model.generate(
                input_ids=rows,
                attention_mask=rows_mask,
                **{cache_keyword(self.model): cache},
                max_new_tokens=self.max_new_tokens,
                eos_token_id=stops,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                **policy_sampling(temperature, self.top_p),
            )
        self.model.train(was_training)
        completions = sequences[:, rows.shape[1] :]
        completion_mask = through_first_stop(completions, stops)
        texts = [
            self.tokenizer.decode(row[:length], skip_special_tokens=True)
            for row, length in zip(completions, completion_mask.sum(dim=1).tolist(), strict=True)
        ]
        return sequences, completion_mask, texts

    def hidden_states(self, model: nn.Module, completions: Completions) -> torch.Tensor:
        """``(N, length, hidden)`` final hidden states of ``model`` over prompt + completion."""
        attention_mask = completions.attention_mask
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # prompts are left-padded
        batch = {"input_ids": completions.input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return sequence_hidden_states(model, batch)

    def completion_logprobs(
        self, model: nn.Module, completions: Completions, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(N, completion length)`` log-probs of the sampled completion tokens (0 after each completion's end)
        under the sampling distribution, ``softmax(logits / temperature)``: the policy, its reference and the
        sampling policy are all scored at the temperature the completions were drawn at.

        Completions of one prompt share its forward (`shared_prefix_hidden_states`) unless ``hidden`` is given.
        """
        labels = completion_labels(completions)
        projection = self.sampling_projection(model)
        start = completions.prompt_length
        if hidden is None and completions.group_size > 1 and can_share_prefix(model):
            hidden = shared_prefix_hidden_states(
                model, completions.input_ids, completions.attention_mask, start, completions.group_size
            )
            return token_logps(hidden, projection, labels[:, start - 1 :])[:, 1:]
        if hidden is None:
            hidden = self.hidden_states(model, completions)
        return token_logps(hidden, projection, labels)[:, start:]

    def sampling_projection(self, model: nn.Module) -> Projection:
        """Hidden states -> the logits completions are sampled from: the output layer's, divided by the
        temperature."""
        projection = output_projection(model)
        if self.temperature == 1.0:
            return projection
        return lambda hidden: projection(hidden) / self.temperature

    def manual_step(self, loss: torch.Tensor) -> None:
        """One manual optimiser step on ``loss``, with gradient clipping and a schedule step (the schedule counts
        optimiser steps, as ``trainer.max_steps`` does)."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()  # clips in `on_before_optimizer_step`
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip here, not before ``optimizer.step()``: under fp16 the gradients are unscaled only inside the step,
        just before this hook (clipping scaled gradients would shrink every update by the loss scale)."""
        super().on_before_optimizer_step(optimizer)
        if self.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")

    def log_metrics(self, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in metrics.items():
            self.log(f"train/{name}", value, prog_bar=name in ("reward", "loss"), batch_size=batch_size)


def completion_labels(completions: Completions) -> torch.Tensor:
    """``(N, length)`` labels scoring the completion tokens only (prompt and padding ``-100``)."""
    labels = completions.input_ids.masked_fill(completions.attention_mask == 0, IGNORE_INDEX)
    labels[:, : completions.prompt_length] = IGNORE_INDEX
    return labels


def through_first_stop(completions: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """``(N, length)`` long mask: 1 on each completion's tokens up to and including its first stop token."""
    is_stop = torch.isin(completions, torch.tensor(stop_ids, device=completions.device))
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()
    return (stops_before == 0).long()


def ends_with_stop(completions: torch.Tensor, completion_mask: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """``(N,)`` bool: whether each completion ended with a stop token (rather than running out of tokens)."""
    last = (completion_mask.sum(dim=1) - 1).clamp(min=0)
    last_tokens = completions.gather(1, last[:, None]).squeeze(1)
    return torch.isin(last_tokens, torch.tensor(stop_ids, device=completions.device)) & (completion_mask.sum(1) > 0)


def reward_fields(batch: dict[str, Any], repeats: int) -> dict[str, list[Any]]:
    """The prompt records' own fields, each value repeated for the ``repeats`` completions of its prompt."""
    return {
        name: [value for value in values for _ in range(repeats)]
        for name, values in batch.items()
        if name not in PROMPT_COLUMNS
    }

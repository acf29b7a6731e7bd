"""`GRPO`: group relative policy optimisation: sample G completions per prompt, score them with reward functions,
and push the policy towards the completions that beat their group, with a KL penalty to the reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lightning_ft.algorithms.reference import ReferencedPolicy, reference_policy
from lightning_ft.losses.logps import token_logps
from lightning_ft.losses.rl import GroupBaseline, clipped_policy_loss, group_advantages, kl_k3, masked_mean
from lightning_ft.losses.sft import IGNORE_INDEX
from lightning_ft.model.generation import stop_token_ids
from lightning_ft.model.heads import final_hidden_states, output_projection
from lightning_ft.model.spec import ModelSpec
from lightning_ft.rewards.loading import load_reward_function, score_completions

LossAggregation = Literal["sequence", "token", "constant"]


@dataclass
class Rollout:
    """G sampled completions per prompt, scored: ``(N, length)`` tensors of prompt + completion, with ``N = B·G``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # (N, completion length): 1 up to and including the first stop token
    prompt_length: int
    advantages: torch.Tensor  # (N,)
    old_logprobs: torch.Tensor | None  # (N, completion length), when the policy moves between iterations
    reference_logprobs: torch.Tensor | None


class GRPO(ReferencedPolicy):
    """GRPO (Shao et al. 2024) with the Dr. GRPO and RLOO variants, as a LightningModule with manual optimisation.

    Each training step takes ``B`` prompts (`PromptData`), samples ``num_generations`` completions for each, scores
    them with ``reward_funcs`` (weighted by ``reward_weights``), turns the rewards into group-relative advantages,
    then takes ``num_iterations`` optimiser steps on the clipped objective plus ``beta`` times the k3 KL estimate to
    the reference (the base with the adapter disabled, or a frozen copy). Gradient clipping is ``max_grad_norm``
    (Lightning's ``gradient_clip_val`` does not apply to manual optimisation, nor does ``accumulate_grad_batches``).

    Args:
        model: The policy.
        reward_funcs: Import paths of reward functions ``fn(prompts, completions, **fields) -> list[float]``; the
            prompt records' other fields (e.g. ``answer``) arrive as ``fields``. See `lightning_ft.rewards`.
        reward_weights: One weight per reward function (default 1 each).
        num_generations: Completions sampled per prompt (the group size G, at least 2).
        max_new_tokens: Longest completion.
        temperature: Sampling temperature.
        top_p: Nucleus sampling.
        beta: Weight of the KL penalty (0: no reference model at all).
        clip_range: ε of the clipped objective.
        num_iterations: Optimiser steps per rollout (μ); above 1 the ratio to the sampling policy matters.
        scale_rewards: Divide advantages by the group's reward std (off for Dr. GRPO).
        baseline: ``mean`` of the group, or ``rloo`` (leave-one-out mean, never scaled).
        loss_aggregation: ``sequence``: mean over each completion's tokens, then over completions (GRPO);
            ``token``: mean over all tokens of the step (DAPO); ``constant``: sum over tokens divided by
            ``N · max_new_tokens`` (Dr. GRPO, no length bias).
        max_grad_norm: Clip the gradient norm; ``None`` turns it off.
        **kwargs: `ReferencedPolicy` / `FineTuneModule` arguments: ``disable_dropout`` (default on, so sampling, old
            and new log-probs see the same network), peft, freeze, optimizer, schedule, ...
    """

    def __init__(
        self,
        model: ModelSpec,
        reward_funcs: list[str],
        reward_weights: list[float] | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        beta: float = 0.04,
        clip_range: float = 0.2,
        num_iterations: int = 1,
        scale_rewards: bool = True,
        baseline: GroupBaseline = "mean",
        loss_aggregation: LossAggregation = "sequence",
        max_grad_norm: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not reward_funcs:
            raise ValueError("GRPO needs at least one reward function in reward_funcs")
        if reward_weights is not None and len(reward_weights) != len(reward_funcs):
            raise ValueError(f"{len(reward_weights)} reward_weights for {len(reward_funcs)} reward_funcs")
        if num_generations < 2:
            raise ValueError(f"num_generations must be at least 2 (a group to compare with), got {num_generations}")
        if loss_aggregation not in ("sequence", "token", "constant"):
            raise ValueError(f"Unknown loss_aggregation {loss_aggregation!r}; valid: sequence, token, constant")
        self.automatic_optimization = False
        self.reward_functions = {path: load_reward_function(path) for path in reward_funcs}
        self.reward_weights = list(reward_weights or [1.0] * len(reward_funcs))
        self.num_generations = num_generations
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.beta = beta
        self.clip_range = clip_range
        self.num_iterations = num_iterations
        self.scale_rewards = scale_rewards
        self.baseline = baseline
        self.loss_aggregation = loss_aggregation
        self.max_grad_norm = max_grad_norm

    @property
    def live_reference(self) -> bool:
        return self.beta > 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        rollout, metrics = self._rollout(batch)
        optimizer = self.optimizers()
        for _ in range(self.num_iterations):
            logprobs = self._completion_logprobs(self.model, rollout)
            old = logprobs.detach() if rollout.old_logprobs is None else rollout.old_logprobs
            mask = rollout.completion_mask
            losses, clipped = clipped_policy_loss(logprobs, old, rollout.advantages[:, None], mask, self.clip_range)
            if self.beta:
                kl = kl_k3(logprobs, rollout.reference_logprobs) * mask
                losses = losses + self.beta * kl
                metrics["kl"] = masked_mean(kl.detach(), mask)
            loss = self._aggregate(losses, mask)
            optimizer.zero_grad()
            self.manual_backward(loss)
            if self.max_grad_norm is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            metrics["clip_fraction"] = masked_mean(clipped.float(), mask)
            metrics["loss"] = loss.detach()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        for name, value in metrics.items():
            self.log(f"train/{name}", value, prog_bar=name in ("reward", "loss"), batch_size=len(rollout.advantages))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Mean reward of one greedy completion per held-out prompt (deterministic, so comparable across runs)."""
        _, completion_mask, texts = self._sample(batch["input_ids"], batch["attention_mask"], greedy=True)
        total, per_function = score_completions(
            self.reward_functions, self.reward_weights, batch["prompt_text"], texts, reward_fields(batch, 1)
        )
        size = len(texts)
        self.log("val/reward", total.mean(), prog_bar=True, batch_size=size, sync_dist=True)
        for name, scores in per_function.items():
            self.log(f"val/rewards/{name.rsplit('.', 1)[-1]}", scores.mean(), batch_size=size, sync_dist=True)
        self.log("val/completion_length", completion_mask.sum(dim=1).float().mean(), batch_size=size, sync_dist=True)

    @torch.no_grad()
    def _sample(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Complete left-padded prompts: ``(sequences, completion_mask, completion_texts)``."""
        was_training = self.model.training
        self.model.eval()
        sampling = (
            {"do_sample": False}
            if greedy
            else {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        )
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=stop_token_ids(self.tokenizer),
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
            **sampling,
        )
        self.model.train(was_training)
        completions = sequences[:, input_ids.shape[1] :]
        completion_mask = through_first_stop(completions, stop_token_ids(self.tokenizer))
        lengths = completion_mask.sum(dim=1).tolist()
        texts = [
            self.tokenizer.decode(row[:length], skip_special_tokens=True)
            for row, length in zip(completions, lengths, strict=True)
        ]
        return sequences, completion_mask, texts

    @torch.no_grad()
    def _rollout(self, batch: dict[str, Any]) -> tuple[Rollout, dict[str, torch.Tensor]]:
        group = self.num_generations
        prompt_ids = batch["input_ids"].repeat_interleave(group, dim=0)
        prompt_mask = batch["attention_mask"].repeat_interleave(group, dim=0)
        sequences, completion_mask, texts = self._sample(prompt_ids, prompt_mask)
        prompt_length = prompt_ids.shape[1]
        prompts = [text for text in batch["prompt_text"] for _ in range(group)]
        total, per_function = score_completions(
            self.reward_functions, self.reward_weights, prompts, texts, reward_fields(batch, group)
        )
        total = total.to(self.device)
        advantages = group_advantages(total, group, self.scale_rewards, self.baseline)
        rollout = Rollout(
            input_ids=sequences,
            attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
            completion_mask=completion_mask,
            prompt_length=prompt_length,
            advantages=advantages,
            old_logprobs=None,
            reference_logprobs=None,
        )
        if self.num_iterations > 1:
            rollout.old_logprobs = self._completion_logprobs(self.model, rollout)
        if self.beta:
            with reference_policy(self.model, self.reference_model) as reference:
                rollout.reference_logprobs = self._completion_logprobs(reference, rollout)
        lengths = completion_mask.sum(dim=1).float()
        metrics = {
            "reward": total.mean(),
            "reward_std": total.view(-1, group).std(dim=1).mean(),
            "completion_length": lengths.mean(),
            **{f"rewards/{name.rsplit('.', 1)[-1]}": scores.mean() for name, scores in per_function.items()},
        }
        return rollout, metrics

    def _completion_logprobs(self, model: nn.Module, rollout: Rollout) -> torch.Tensor:
        """``(N, completion length)`` log-probs of the sampled completion tokens (0 after each completion's end)."""
        attention_mask = rollout.attention_mask
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # prompts are left-padded
        labels = rollout.input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        labels[:, : rollout.prompt_length] = IGNORE_INDEX
        hidden = final_hidden_states(
            model, input_ids=rollout.input_ids, attention_mask=attention_mask, position_ids=position_ids
        )
        hidden = hidden[:, -rollout.input_ids.shape[1] :]
        return token_logps(hidden, output_projection(model), labels)[:, rollout.prompt_length :]

    def _aggregate(self, losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.loss_aggregation == "sequence":
            return masked_mean(losses, mask, dim=1).mean()
        if self.loss_aggregation == "token":
            return masked_mean(losses, mask)
        return (losses * mask).sum() / (mask.shape[0] * self.max_new_tokens)


def through_first_stop(completions: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """``(N, length)`` long mask: 1 on each completion's tokens up to and including its first stop token."""
    is_stop = torch.isin(completions, torch.tensor(stop_ids, device=completions.device))
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()
    return (stops_before == 0).long()


def reward_fields(batch: dict[str, Any], repeats: int) -> dict[str, list[Any]]:
    """The prompt records' own fields, each value repeated for the ``repeats`` completions of its prompt."""
    return {
        name: [value for value in values for _ in range(repeats)]
        for name, values in batch.items()
        if name not in ("input_ids", "attention_mask", "prompt_text", "record")
    }

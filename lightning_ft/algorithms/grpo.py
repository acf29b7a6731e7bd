"""`GRPO`: group relative policy optimisation: sample G completions per prompt, score them with rewards, and push
the policy towards the completions that beat their group, with a KL penalty to the reference."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lightning_ft.algorithms.online import Completions, OnlinePolicy
from lightning_ft.algorithms.reference import reference_policy
from lightning_ft.compat import attached_trainer
from lightning_ft.errors import UsageError
from lightning_ft.losses.rl import GroupBaseline, clipped_policy_loss, group_advantages, kl_k3, masked_mean
from lightning_ft.model.spec import ModelSpec
from lightning_ft.options import check_option

LossAggregation = Literal["sequence", "token", "constant"]


class GRPO(OnlinePolicy):
    """GRPO (Shao et al. 2024) with the Dr. GRPO and RLOO variants, as a LightningModule with manual optimisation.

    Each training step takes ``B`` prompts (`PromptData`), samples ``num_generations`` completions for each, scores
    them with ``reward_funcs`` (weighted by ``reward_weights``), turns the rewards into group-relative advantages,
    then takes ``num_iterations`` optimiser steps on the clipped objective plus ``beta`` times the k3 KL estimate to
    the reference (the base with the adapter disabled, or a frozen copy).

    Args:
        model: The policy.
        reward_funcs: Reward function import paths and/or reward-model paths (see `OnlinePolicy`).
        num_generations: Completions sampled per prompt (the group size G, at least 2).
        beta: Weight of the KL penalty (0: no reference model at all).
        clip_range: ε of the clipped objective.
        num_iterations: Optimiser steps per rollout (μ); above 1 the ratio to the sampling policy matters.
        scale_rewards: Divide advantages by the group's reward std (off for Dr. GRPO).
        baseline: ``mean`` of the group, or ``rloo`` (leave-one-out mean, never scaled).
        loss_aggregation: ``sequence``: mean over each completion's tokens, then over completions (GRPO);
            ``token``: mean over all tokens of the step (DAPO); ``constant``: sum over tokens divided by
            ``N · max_new_tokens`` (Dr. GRPO, no length bias).
        **kwargs: `OnlinePolicy` arguments: ``reward_weights``, ``max_new_tokens``, ``temperature``, ``top_p``,
            ``max_grad_norm``, ``val_temperature``, ``val_generations``, peft, freeze, optimizer, schedule, ...
    """

    def __init__(
        self,
        model: ModelSpec,
        reward_funcs: list[str],
        num_generations: int = 8,
        beta: float = 0.04,
        clip_range: float = 0.2,
        num_iterations: int = 1,
        scale_rewards: bool = True,
        baseline: GroupBaseline = "mean",
        loss_aggregation: LossAggregation = "sequence",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, reward_funcs, **kwargs)
        if num_generations < 2:
            raise UsageError(
                f"model.num_generations must be at least 2 (a group to compare with), got {num_generations}"
            )
        check_option("loss_aggregation", loss_aggregation, LossAggregation)
        check_option("baseline", baseline, GroupBaseline)
        self.num_generations = num_generations
        self.beta = beta
        self.clip_range = clip_range
        self.num_iterations = num_iterations
        self.scale_rewards = scale_rewards
        self.baseline = baseline
        self.loss_aggregation = loss_aggregation

    @property
    def live_reference(self) -> bool:
        return self.beta > 0

    @property
    def optimizer_steps_per_batch(self) -> int:
        return self.num_iterations

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        completions, per_reward = self.complete(batch, self.num_generations, self.temperature)
        advantages = group_advantages(completions.scores, self.num_generations, self.scale_rewards, self.baseline)
        old_logprobs, reference_logprobs = self._fixed_logprobs(completions)
        mask = completions.completion_mask
        metrics = {
            "reward": completions.scores.mean(),
            "reward_std": completions.scores.view(-1, self.num_generations).std(dim=1).mean(),
            "completion_length": completions.lengths.float().mean(),
            **{f"rewards/{name}": scores.mean() for name, scores in per_reward.items()},
        }
        for _ in range(self.num_iterations):
            logprobs = self.completion_logprobs(self.model, completions)
            old = logprobs.detach() if old_logprobs is None else old_logprobs
            losses, clipped = clipped_policy_loss(logprobs, old, advantages[:, None], mask, self.clip_range)
            if self.beta:
                kl = kl_k3(logprobs, reference_logprobs) * mask
                losses = losses + self.beta * kl
                metrics["kl"] = masked_mean(kl.detach(), mask)
            loss = self._aggregate(losses, mask)
            self.manual_step(loss)
            metrics["clip_fraction"] = masked_mean(clipped.float(), mask)
            metrics["loss"] = loss.detach()
        self.log_metrics(metrics, batch_size=len(advantages))

    @torch.no_grad()
    def _fixed_logprobs(self, completions: Completions) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Log-probs of the sampling policy (needed when it moves within the step) and of the reference."""
        old = self.completion_logprobs(self.model, completions) if self.num_iterations > 1 else None
        reference = None
        if self.beta:
            with reference_policy(self.model, self.reference_model) as model:
                reference = self.completion_logprobs(model, completions)
        return old, reference

    def _aggregate(self, losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.loss_aggregation == "sequence":
            return masked_mean(losses, mask, dim=1).mean()
        if self.loss_aggregation == "token":  # DAPO: over the tokens of every rank's rollout
            trainer = attached_trainer(self)
            world_size = trainer.world_size if trainer is not None else 1
            tokens = mask.sum().float()
            if world_size > 1:
                tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum") / world_size
            return (losses * mask).sum() / tokens.clamp(min=1)
        return (losses * mask).sum() / (mask.shape[0] * self.max_new_tokens)

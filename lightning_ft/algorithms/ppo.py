"""`PPO`: proximal policy optimisation with a learned value function, per-token KL penalty to the reference, GAE,
and several epochs of minibatch updates over each rollout; a LightningModule with manual optimisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lightning_ft.algorithms.online import Completions, OnlinePolicy, completion_labels, ends_with_stop
from lightning_ft.algorithms.reference import reference_policy, turn_off_dropout
from lightning_ft.errors import UsageError
from lightning_ft.losses.logps import token_entropy
from lightning_ft.losses.rl import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_k1,
    kl_k3,
    masked_mean,
    whiten,
)
from lightning_ft.model.generation import stop_token_ids
from lightning_ft.model.heads import unwrap
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import build_trainable_model
from lightning_ft.options import check_option

Critic = Literal["shared", "separate"]
KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


class ValueHead(nn.Module):
    """Hidden states ``(..., hidden)`` -> value estimates ``(...)``; starts at zero for every input."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.to(self.linear.weight.dtype)).squeeze(-1)


@dataclass
class Rollout:
    """What a PPO update needs of one batch of scored completions, ``(N, completion length)`` each."""

    completions: Completions
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class PPO(OnlinePolicy):
    """PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022), RLHF with a reward model or rewards from
    functions.

    Each training step samples one completion for each of ``B`` prompts (`PromptData`), scores it (the weighted
    rewards, minus ``missing_eos_penalty`` when it never stopped), and makes per-token rewards: ``-kl_coef`` times
    the per-token KL estimate to the reference, plus the score on the last token. GAE over a value function gives
    advantages (whitened) and returns; then ``ppo_epochs`` passes over ``num_minibatches`` shuffled minibatches take
    one optimiser step each on the clipped policy loss plus ``value_loss_coef`` times the clipped value loss. With
    ``target_kl`` the KL coefficient adapts after every rollout to hold the KL near it.

    Args:
        model: The policy.
        reward_funcs: Reward function import paths and/or reward-model paths (see `OnlinePolicy`).
        critic: ``shared``: a value head on the policy's own final hidden states (one forward pass, no second
            model); ``separate``: a second copy of the base, with its own adapter when ``peft`` is set, and its head.
        kl_coef: Initial weight β of the per-token KL penalty (0 with no ``target_kl``: no reference model at all).
        kl_estimator: ``k1`` (``log π - log π_ref``, unbiased) or ``k3`` (never negative).
        target_kl: KL per completion (summed over its tokens) to hold with the adaptive controller; ``None`` keeps
            ``kl_coef`` fixed.
        kl_horizon: Completions over which the adaptive controller makes a full correction.
        gamma: Discount of GAE.
        lam: λ of GAE.
        whiten_advantages: Normalise advantages over the rollout (mean 0, std 1).
        whiten_rewards: Scale per-token rewards by their std over the rollout (mean kept).
        clip_range: ε of the clipped policy loss.
        value_clip_range: ε of the clipped value loss.
        value_loss_coef: Weight of the value loss.
        ppo_epochs: Passes over each rollout.
        num_minibatches: Minibatches (optimiser steps) per pass.
        missing_eos_penalty: Subtracted from the score of completions that ran out of tokens before stopping.
        **kwargs: `OnlinePolicy` arguments: ``reward_weights``, ``max_new_tokens``, ``temperature``, ``top_p``,
            ``max_grad_norm``, ``val_temperature``, ``val_generations``, peft, freeze, optimizer, schedule, ...
    """

    def __init__(
        self,
        model: ModelSpec,
        reward_funcs: list[str],
        critic: Critic = "shared",
        kl_coef: float = 0.05,
        kl_estimator: KLEstimator = "k1",
        target_kl: float | None = None,
        kl_horizon: int = 10000,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        whiten_rewards: bool = False,
        clip_range: float = 0.2,
        value_clip_range: float = 0.2,
        value_loss_coef: float = 0.1,
        ppo_epochs: int = 4,
        num_minibatches: int = 1,
        missing_eos_penalty: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, reward_funcs, **kwargs)
        check_option("critic", critic, Critic)
        check_option("kl_estimator", kl_estimator, KL_ESTIMATORS)
        if target_kl is not None and (target_kl <= 0 or kl_coef <= 0):
            raise UsageError(
                "An adaptive KL controller (model.target_kl) needs target_kl > 0 and an initial kl_coef > 0 "
                "(model.kl_coef)"
            )
        if ppo_epochs < 1 or num_minibatches < 1:
            raise UsageError(
                f"model.ppo_epochs and model.num_minibatches must be at least 1, got {ppo_epochs}, {num_minibatches}"
            )
        self.critic = critic
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.target_kl = target_kl
        self.kl_horizon = kl_horizon
        self.gamma = gamma
        self.lam = lam
        self.whiten_advantages = whiten_advantages
        self.whiten_rewards = whiten_rewards
        self.clip_range = clip_range
        self.value_clip_range = value_clip_range
        self.value_loss_coef = value_loss_coef
        self.ppo_epochs = ppo_epochs
        self.num_minibatches = num_minibatches
        self.missing_eos_penalty = missing_eos_penalty
        self.critic_model: nn.Module | None = None
        self.value_head: ValueHead | None = None

    @property
    def live_reference(self) -> bool:
        return self.kl_coef > 0

    @property
    def optimizer_steps_per_batch(self) -> int:
        return self.ppo_epochs * self.num_minibatches

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if self.critic == "separate":
            self.critic_model = build_trainable_model(
                self.model_spec, self.peft, self.freeze, self.gradient_checkpointing
            ).train()
            if self.disable_dropout:
                turn_off_dropout(self.critic_model)
        backbone = self.model if self.critic_model is None else self.critic_model
        self.value_head = ValueHead(unwrap(backbone).config.hidden_size)

    def values(self, completions: Completions, policy_hidden: torch.Tensor) -> torch.Tensor:
        """``(N, completion length)`` value of the state before each completion token."""
        hidden = policy_hidden
        if self.critic_model is not None:
            hidden = self.hidden_states(self.critic_model, completions)
        start = completions.prompt_length - 1
        return self.value_head(hidden[:, start:-1])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        completions, per_reward = self.complete(batch, 1, self.temperature)
        rollout, metrics = self.rollout(completions)
        metrics.update({f"rewards/{name}": scores.mean() for name, scores in per_reward.items()})
        size = len(completions.scores)
        if size < self.num_minibatches:
            raise UsageError(
                f"A rollout of {size} completions cannot split into {self.num_minibatches} minibatches: lower "
                "model.num_minibatches or raise data.batch_size"
            )
        updates: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.ppo_epochs):
            for index in torch.randperm(size, device=self.device).tensor_split(self.num_minibatches):
                for name, value in self.update(rollout, index).items():
                    updates.setdefault(name, []).append(value)
        metrics.update({name: torch.stack(values).mean() for name, values in updates.items()})
        if self.target_kl is not None:
            measured = float(self.all_gather(metrics["kl"]).mean())  # every rank's rollout is `size` sequences
            world_size = self.trainer.world_size
            self.kl_coef = adaptive_kl_coef(self.kl_coef, measured, self.target_kl, size * world_size, self.kl_horizon)
        metrics["kl_coef"] = torch.tensor(self.kl_coef, device=self.device)
        self.log_metrics(metrics, batch_size=size)

    @torch.no_grad()
    def rollout(self, completions: Completions) -> tuple[Rollout, dict[str, torch.Tensor]]:
        """Log-probs, values, per-token rewards, advantages and returns of freshly sampled completions."""
        mask = completions.completion_mask
        hidden = self.hidden_states(self.model, completions)
        logprobs = self.completion_logprobs(self.model, completions, hidden)
        values = self.values(completions, hidden) * mask
        scores = completions.scores
        if self.missing_eos_penalty is not None:
            stopped = ends_with_stop(
                completions.input_ids[:, completions.prompt_length :], mask, stop_token_ids(self.tokenizer)
            )
            scores = scores - self.missing_eos_penalty * (~stopped).float()
        kl = torch.zeros_like(logprobs)
        if self.kl_coef > 0:
            with reference_policy(self.model, self.reference_model) as reference:
                reference_logprobs = self.completion_logprobs(reference, completions)
            kl = KL_ESTIMATORS[self.kl_estimator](logprobs, reference_logprobs) * mask
        rewards = -self.kl_coef * kl
        last = (completions.lengths - 1).clamp(min=0)
        rewards[torch.arange(len(last), device=last.device), last] += scores
        if self.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = whiten(advantages, mask)
        metrics = {
            "reward": scores.mean(),
            "reward_std": scores.std() if len(scores) > 1 else torch.zeros((), device=scores.device),
            "kl": kl.sum(dim=1).mean(),
            "non_score_reward": (-self.kl_coef * kl).sum(dim=1).mean(),
            "entropy": masked_mean(self._entropy(completions, hidden), mask),
            "explained_variance": explained_variance(values, returns, mask),
            "completion_length": completions.lengths.float().mean(),
        }
        return Rollout(completions, logprobs, values, advantages, returns), metrics

    def update(self, rollout: Rollout, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step on the minibatch ``index`` of the rollout."""
        part = rollout.completions.rows(index)
        mask = part.completion_mask
        hidden = self.hidden_states(self.model, part)
        logprobs = self.completion_logprobs(self.model, part, hidden)
        values = self.values(part, hidden)
        old_logprobs, old_values = rollout.logprobs[index], rollout.values[index]
        policy_losses, clipped = clipped_policy_loss(
            logprobs, old_logprobs, rollout.advantages[index], mask, self.clip_range
        )
        policy_loss = masked_mean(policy_losses, mask)
        value_loss = clipped_value_loss(values, old_values, rollout.returns[index], mask, self.value_clip_range)
        loss = policy_loss + self.value_loss_coef * value_loss
        self.manual_step(loss)
        log_ratio = (logprobs - old_logprobs).detach()
        value_clipped = (values - old_values).abs() > self.value_clip_range
        return {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "clip_fraction": masked_mean(clipped.float(), mask),
            "value_clip_fraction": masked_mean(value_clipped.float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
        }

    def _entropy(self, completions: Completions, hidden: torch.Tensor) -> torch.Tensor:
        labels = completion_labels(completions)
        return token_entropy(hidden, self.sampling_projection(self.model), labels)[:, completions.prompt_length :]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["kl_coef"] = self.kl_coef  # the adaptive controller's state, for an exact resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.kl_coef = checkpoint.get("kl_coef", self.kl_coef)

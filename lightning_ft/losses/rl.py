"""Online RL pieces (PPO, GRPO): advantages, clipped losses and KL estimators, over ``(batch, time)`` tensors of
response tokens. ``mask`` is 1 on real response tokens and 0 on padding; every function leaves padding out.
"""

from __future__ import annotations

from typing import Literal

import torch

GroupBaseline = Literal["mean", "rloo"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over ``dim``, or everything)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(values - mean) / std`` over the masked entries (unbiased variance); ``shift_mean=False`` keeps the mean.

    Args:
        values: ``(batch, time)``.
        mask: ``(batch, time)``.

    Returns:
        ``(batch, time)``, 0 on padding.
    """
    mean = masked_mean(values, mask)
    count = mask.sum().clamp(min=2)
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016):
    ``δ_t = r_t + γ V_{t+1} - V_t``, ``A_t = δ_t + γλ A_{t+1}``, with ``V`` and ``A`` zero after the last token.

    Args:
        rewards: ``(batch, time)`` per-token rewards (e.g. the KL penalty, plus the score on the last token).
        values: ``(batch, time)`` value estimates.
        mask: ``(batch, time)`` 1 on response tokens; padding only after them.
        gamma: Discount.
        lam: GAE's λ.

    Returns:
        ``(advantages, returns)``, each ``(batch, time)``, ``returns = advantages + values``; 0 on padding.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    following = torch.zeros_like(values[:, 0])
    next_values = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        following = (delta + gamma * lam * following) * mask[:, t]
        advantages[:, t] = following
        next_values = values[:, t]
    return advantages, (advantages + values) * mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over the masked entries: 1 for a perfect critic, 0 for one no
    better than a constant, negative for a worse one (``nan`` when the returns do not vary).

    Args:
        values: ``(batch, time)``.
        returns: ``(batch, time)``.
        mask: ``(batch, time)``.

    Returns:
        A scalar.
    """

    def variance(x: torch.Tensor) -> torch.Tensor:
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    return 1 - variance(returns - values) / variance(returns)


def adaptive_kl_coef(coef: float, kl: float, target: float, steps: int, horizon: int) -> float:
    """The adaptive KL controller of Ziegler et al. (2019): raise the penalty when the policy's KL to the reference
    is above ``target``, lower it when below, by at most 20% of ``steps / horizon`` per update:
    ``coef · (1 + clip(kl / target - 1, -0.2, 0.2) · steps / horizon)``.

    Args:
        coef: The current KL coefficient β.
        kl: The measured KL (per sequence, summed over its tokens).
        target: The KL to hold.
        steps: Sequences in the measurement (the rollout's size).
        horizon: How many sequences a full 20% correction takes.

    Returns:
        The next coefficient.
    """
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * steps / horizon)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token: ``max(-A ρ, -A clip(ρ, 1-ε, 1+ε))`` with ``ρ = exp(logp - logp_old)``.

    Args:
        logprobs: ``(batch, time)`` log-probs of the sampled tokens under the current policy.
        old_logprobs: ``(batch, time)`` the same under the policy that sampled them.
        advantages: ``(batch, time)`` (or ``(batch, 1)`` for sequence-level advantages).
        mask: ``(batch, time)``.
        clip_range: ε.

    Returns:
        ``(losses, clipped)``: per-token losses ``(batch, time)`` (0 on padding; reduce them with `masked_mean`
        as the algorithm chooses) and a bool ``(batch, time)`` marking tokens where the clipped term was chosen.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    losses = torch.maximum(unclipped, clipped) * mask
    return losses, (clipped > unclipped) & mask.bool()


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped value loss: ``0.5 · max((V - R)², (V_old + clip(V - V_old, -ε, ε) - R)²)`` averaged over tokens.

    Args:
        values: ``(batch, time)`` current value estimates.
        old_values: ``(batch, time)`` estimates when the rollout was made.
        returns: ``(batch, time)`` targets.
        mask: ``(batch, time)``.
        clip_range: ε.

    Returns:
        A scalar.
    """
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


def kl_k1(logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate ``log π(x) - log π_ref(x)`` (unbiased, can be negative); shapes as the inputs."""
    return logprobs - reference_logprobs


def kl_k3(logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate ``exp(log π_ref - log π) - (log π_ref - log π) - 1`` (Schulman's k3: unbiased for samples
    of π, never negative); shapes as the inputs."""
    log_ratio = reference_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_by_std: bool = True, baseline: GroupBaseline = "mean"
) -> torch.Tensor:
    """GRPO's advantages: each completion's reward against the others sampled for the same prompt.

    ``baseline="mean"``: ``r - mean(group)``, divided by the group's std (+1e-4) unless ``scale_by_std`` is off
    (Dr. GRPO); ``baseline="rloo"``: ``r - mean(other completions of the group)`` (leave-one-out, unscaled).

    Args:
        rewards: ``(prompts * group_size,)``, the completions of a prompt next to each other.
        group_size: Completions per prompt ``G`` (at least 2).
        scale_by_std: Divide by the group's standard deviation (``mean`` baseline only).
        baseline: ``mean`` or ``rloo``.

    Returns:
        ``(prompts * group_size,)`` advantages.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.view(-1, group_size)
    if baseline == "rloo":
        others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
        return (groups - others).flatten()
    if baseline != "mean":
        raise ValueError(f"Unknown baseline {baseline!r}; valid: mean, rloo")
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (groups.std(dim=1, keepdim=True) + 1e-4)
    return centred.flatten()

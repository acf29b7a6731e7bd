"""Preference losses: the DPO family (DPO, cDPO, robust, hinge, IPO), the reference-free SimPO and ORPO, unpaired
KTO, and the Bradley-Terry reward-model loss.

Every function takes per-example sequence log-probabilities (or rewards) and returns per-example losses first, then
the quantities worth logging, so a module reduces them as it likes (mean, token-weighted, across devices).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

PreferenceLosses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def sigmoid_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """DPO (Rafailov et al. 2023): ``-log σ(βh)`` on the margin
    ``h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)``. With
    ``label_smoothing = ε > 0`` it is cDPO (conservative DPO, preferences flipped with probability ε):
    ``-(1-ε) log σ(βh) - ε log σ(-βh)``.

    Args:
        policy_chosen_logps: ``(batch,)`` log-probability of each chosen response under the policy.
        policy_rejected_logps: ``(batch,)`` same for the rejected responses.
        reference_chosen_logps: ``(batch,)`` chosen responses under the reference model.
        reference_rejected_logps: ``(batch,)`` rejected responses under the reference model.
        beta: Inverse temperature (the strength of the implicit KL penalty).
        label_smoothing: ε in [0, 0.5).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch,)``; the implicit rewards
        ``β (policy - reference)`` are detached.
    """
    check_label_smoothing(label_smoothing)
    margin = dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    return (
        losses,
        *implicit_rewards(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
        ),
    )


def robust_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """rDPO (Chowdhury et al. 2024), unbiased under preference noise ε:
    ``(-(1-ε) log σ(βh) + ε log σ(-βh)) / (1 - 2ε)``; arguments and returns as `sigmoid_dpo_loss`."""
    check_label_smoothing(label_smoothing)
    margin = dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * margin) + label_smoothing * F.logsigmoid(-beta * margin)) / (
        1 - 2 * label_smoothing
    )
    return (
        losses,
        *implicit_rewards(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
        ),
    )


def hinge_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> PreferenceLosses:
    """SLiC's hinge on the DPO margin (Zhao et al. 2023): ``max(0, 1 - βh)``; arguments and returns as
    `sigmoid_dpo_loss`."""
    margin = dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    losses = torch.relu(1 - beta * margin)
    return (
        losses,
        *implicit_rewards(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
        ),
    )


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> PreferenceLosses:
    """IPO (Azar et al. 2023): ``(h - 1/(2β))²``. Pass log-probs *averaged* over each response's tokens, as the IPO
    authors do (the DPO module does so for ``ipo``); arguments and returns as `sigmoid_dpo_loss`, β being IPO's τ."""
    margin = dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    losses = (margin - 1 / (2 * beta)) ** 2
    return (
        losses,
        *implicit_rewards(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
        ),
    )


def dpo_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """``(batch,)``: ``(policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)``."""
    return (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)


def implicit_rewards(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached ``β (policy - reference)`` of the chosen and of the rejected responses, each ``(batch,)``."""
    chosen = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return chosen, rejected


def check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.5,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """SimPO: reference-free, on length-averaged log-probs, with a target margin γ:
    ``-(1-ε) log σ(β(c - r) - γ) - ε log σ(-(β(c - r) - γ))`` where ``γ = β · gamma_beta_ratio``.

    Args:
        policy_chosen_logps: ``(batch,)`` chosen log-probs *averaged over the response's tokens*.
        policy_rejected_logps: ``(batch,)`` rejected, averaged likewise.
        beta: Reward scale.
        gamma_beta_ratio: Target margin over β.
        label_smoothing: Probability ε of a flipped preference.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch,)``; rewards ``β · logps``, detached.
    """
    logits = beta * (policy_chosen_logps - policy_rejected_logps) - beta * gamma_beta_ratio
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


def orpo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, beta: float = 0.1
) -> PreferenceLosses:
    """ORPO's odds-ratio term (the module adds the NLL of the chosen response):
    ``-β log σ(log odds(c) - log odds(r))`` with ``log odds(p) = log p - log(1 - p)``.

    Args:
        policy_chosen_logps: ``(batch,)`` chosen log-probs *averaged over the response's tokens* (so ``p < 1``; an
            average within float rounding of 0 is read as ``-ε``, machine epsilon, so the odds stay finite).
        policy_rejected_logps: ``(batch,)`` rejected, averaged likewise.
        beta: Weight of the odds-ratio term (ORPO's λ).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch,)``; rewards ``β · logps``, detached.
    """
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        log1mexp(policy_chosen_logps) - log1mexp(policy_rejected_logps)
    )
    losses = -beta * F.logsigmoid(log_odds)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


def log1mexp(logps: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` of log-probabilities ``x <= 0``, elementwise, finite with a finite gradient everywhere.

    ``-expm1(x)`` keeps ``1 - e^x`` exact near 0, where ``1 - exp(x)`` rounds to 0 (``x = -1e-12`` in float32); ``x``
    is capped at ``-ε`` (the dtype's machine epsilon), since ``x = 0`` (``p = 1``) has infinite odds.
    """
    return torch.log(-torch.expm1(logps.clamp(max=-torch.finfo(logps.dtype).eps)))


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    reference_point: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO on unpaired responses: with ``r = policy - reference`` and reference point ``z`` (an estimate of the
    policy-reference KL, clamped at 0 and detached),
    desirable: ``w_d (1 - σ(β(r - z)))``; undesirable: ``w_u (1 - σ(β(z - r)))``.

    Args:
        policy_logps: ``(batch,)`` response log-probs under the policy.
        reference_logps: ``(batch,)`` under the reference.
        desirable: ``(batch,)`` bool, True for desirable responses.
        reference_point: scalar KL estimate ``z`` (e.g. the batch mean of policy - reference log-probs of
            mismatched prompt/response pairs).
        beta: Inverse temperature.
        desirable_weight: ``w_d``.
        undesirable_weight: ``w_u``.

    Returns:
        ``(losses, rewards)``, each ``(batch,)``; rewards ``β r``, detached.
    """
    z = reference_point.detach().clamp(min=0)
    log_ratio = policy_logps - reference_logps
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z - log_ratio)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    return losses, beta * log_ratio.detach()


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """Reward-model loss ``-log σ(r_c - r_r - m) + c (r_c + r_r)²``: the Bradley-Terry likelihood with an optional
    per-pair margin ``m`` (Llama 2) and a term that keeps rewards centred at zero.

    Args:
        chosen_rewards: ``(batch,)`` scalar rewards of the chosen responses.
        rejected_rewards: ``(batch,)`` of the rejected ones.
        margin: ``(batch,)`` required margins, or ``None``.
        center_rewards_coefficient: ``c``.

    Returns:
        ``(batch,)`` losses.
    """
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    losses = -F.logsigmoid(difference)
    if center_rewards_coefficient:
        losses = losses + center_rewards_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return losses


@dataclass(frozen=True)
class PairedLoss:
    """A paired preference loss and what it needs: its function, whether it compares against a reference model,
    whether it takes log-probs averaged over each response's tokens, and the default weight of the chosen
    response's NLL (ORPO's own term)."""

    function: Callable[..., PreferenceLosses]
    needs_reference: bool = True
    average_logps: bool = False
    nll_weight: float = 0.0


# The one registry of paired preference losses: a new loss is one entry here (its name then parses everywhere).
PAIRED_LOSSES: dict[str, PairedLoss] = {
    "sigmoid": PairedLoss(sigmoid_dpo_loss),
    "robust": PairedLoss(robust_dpo_loss),
    "hinge": PairedLoss(hinge_dpo_loss),
    "ipo": PairedLoss(ipo_loss, average_logps=True),
    "simpo": PairedLoss(simpo_loss, needs_reference=False, average_logps=True),
    "orpo": PairedLoss(orpo_loss, needs_reference=False, average_logps=True, nll_weight=1.0),
}
DPO_LOSS_TYPES = tuple(name for name, loss in PAIRED_LOSSES.items() if loss.needs_reference)
PREFERENCE_LOSS_TYPES = (*PAIRED_LOSSES, "kto")  # KTO takes unpaired examples: `kto_loss`
DPOLossType = Literal[DPO_LOSS_TYPES]  # the names `dpo_loss` takes
PreferenceLossType = Literal[PREFERENCE_LOSS_TYPES]


def preference_loss(name: str, valid: tuple[str, ...] = PREFERENCE_LOSS_TYPES) -> PairedLoss | None:
    """The registry entry of ``name`` (``None`` for ``kto``); an unknown name is an error listing the valid ones."""
    if name not in valid:
        raise ValueError(f"Unknown loss_type {name!r}; valid: {', '.join(valid)}")
    return PAIRED_LOSSES.get(name)


def loss_options(function: Callable[..., Any], name: str, **options: Any) -> dict[str, Any]:
    """The options ``function`` takes, out of ``options``; an option it does not take, set to anything but its
    default (``None``, 0 or 0.5 as the callers declare), is an error rather than silently ignored.

    Args:
        function: A loss function.
        name: The loss's name, for the error.
        **options: ``option -> (value, default)``.
    """
    accepted = inspect.signature(function).parameters
    chosen = {}
    for option, (value, default) in options.items():
        if option in accepted:
            chosen[option] = value
        elif value != default:
            raise ValueError(f"{option} does not apply to loss_type {name!r}")
    return chosen


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """The DPO family by name: ``sigmoid`` (DPO; cDPO with ``label_smoothing``), ``robust``, ``hinge``, ``ipo``
    (the registry's losses with a reference). A lookup in `PAIRED_LOSSES` (see the functions for the formulas);
    ``label_smoothing`` applies to ``sigmoid`` and ``robust`` only.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch,)``.
    """
    function = preference_loss(loss_type, DPO_LOSS_TYPES).function
    options = loss_options(function, loss_type, label_smoothing=(label_smoothing, 0.0))
    return function(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta, **options
    )

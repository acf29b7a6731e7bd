"""Preference losses against closed forms on hand-made log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ft.losses.preference import bradley_terry_loss, dpo_loss, kto_loss, orpo_loss, simpo_loss

# Two pairs. Pair 0: margin h = (-1 - -1.5) - (-2 - -1.5) = 1.0. Pair 1: h = (-3 - -2) - (-1 - -2) = -2.0.
POLICY_CHOSEN = torch.tensor([-1.0, -3.0])
POLICY_REJECTED = torch.tensor([-2.0, -1.0])
REFERENCE_CHOSEN = torch.tensor([-1.5, -2.0])
REFERENCE_REJECTED = torch.tensor([-1.5, -2.0])
MARGINS = (1.0, -2.0)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def dpo(loss_type: str, beta: float, label_smoothing: float = 0.0):
    return dpo_loss(
        POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED, beta, loss_type, label_smoothing
    )


@pytest.mark.parametrize(
    "loss_type, label_smoothing, closed_form",
    [
        ("sigmoid", 0.0, lambda h, b, e: -log_sigmoid(b * h)),
        ("sigmoid", 0.2, lambda h, b, e: -(1 - e) * log_sigmoid(b * h) - e * log_sigmoid(-b * h)),
        ("robust", 0.2, lambda h, b, e: (-(1 - e) * log_sigmoid(b * h) + e * log_sigmoid(-b * h)) / (1 - 2 * e)),
        ("hinge", 0.0, lambda h, b, e: max(0.0, 1 - b * h)),
        ("ipo", 0.0, lambda h, b, e: (h - 1 / (2 * b)) ** 2),
    ],
)
@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_family_closed_forms(loss_type, label_smoothing, closed_form, beta):
    losses, chosen_rewards, rejected_rewards = dpo(loss_type, beta, label_smoothing)
    expected = torch.tensor([closed_form(h, beta, label_smoothing) for h in MARGINS])
    torch.testing.assert_close(losses, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chosen_rewards, beta * torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(rejected_rewards, beta * torch.tensor([-0.5, 1.0]))


def test_dpo_exact_value_and_gradient_direction():
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    losses, _, _ = dpo_loss(policy_chosen, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED, beta=0.1)
    assert losses[0].item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-7)  # 0.644397
    losses.sum().backward()
    assert (policy_chosen.grad < 0).all()  # descending the loss raises the chosen log-probs


def test_dpo_rejects_unknown_type_and_misplaced_smoothing():
    with pytest.raises(ValueError, match="valid: sigmoid, robust, hinge, ipo"):
        dpo("nope", 0.1)
    with pytest.raises(ValueError, match="label_smoothing does not apply to loss_type 'ipo'"):
        dpo("ipo", 0.1, 0.1)


def test_the_accepted_loss_names_come_from_the_one_registry():
    """`dpo_loss`, the DPO module and their config types all read `PAIRED_LOSSES`: a loss added there parses."""
    import typing

    from lightning_ft.algorithms.dpo import DPO
    from lightning_ft.losses.preference import PAIRED_LOSSES, DPOLossType

    with_reference = [name for name, loss in PAIRED_LOSSES.items() if loss.needs_reference]
    assert typing.get_args(DPOLossType) == tuple(with_reference) == ("sigmoid", "robust", "hinge", "ipo")
    module_types = typing.get_args(typing.get_type_hints(DPO.__init__)["loss_type"])
    assert module_types == (*PAIRED_LOSSES, "kto")


def test_simpo_closed_form():
    beta, ratio, eps = 2.0, 0.5, 0.1
    losses, chosen_rewards, _ = simpo_loss(POLICY_CHOSEN, POLICY_REJECTED, beta, ratio, eps)
    expected = []
    for c, r in zip(POLICY_CHOSEN.tolist(), POLICY_REJECTED.tolist(), strict=True):
        x = beta * (c - r) - beta * ratio
        expected.append(-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x))
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chosen_rewards, beta * POLICY_CHOSEN)


def test_orpo_closed_form():
    chosen, rejected = torch.tensor([-0.5, -2.0]), torch.tensor([-1.0, -0.25])
    losses, _, _ = orpo_loss(chosen, rejected, beta=0.1)
    expected = []
    for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True):
        log_odds = (c - math.log(1 - math.exp(c))) - (r - math.log(1 - math.exp(r)))
        expected.append(-0.1 * log_sigmoid(log_odds))
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("chosen", "rejected"), [(0.0, -1.0), (-1.0, 0.0), (0.0, 0.0), (-1e-12, -1.0), (-1.0, -1e-12), (-1e-12, -1e-12)]
)
def test_orpo_loss_and_gradient_are_finite_when_a_mean_log_prob_rounds_to_zero(chosen, rejected):
    """``log(1 - exp(x))`` is ``-inf`` at ``x = 0`` (and at ``-1e-12``, where ``exp`` rounds to 1 in float32); its
    gradient NaN. Every mean log-prob within float32 rounding of 0 must give a finite loss and gradient."""
    policy_chosen = torch.tensor([chosen], requires_grad=True)
    policy_rejected = torch.tensor([rejected], requires_grad=True)
    losses, _, _ = orpo_loss(policy_chosen, policy_rejected, beta=0.1)
    losses.sum().backward()
    assert torch.isfinite(losses).all()
    assert torch.isfinite(policy_chosen.grad).all() and torch.isfinite(policy_rejected.grad).all()


def test_orpo_gradient_equals_the_closed_form():
    """d/dc of ``-β log σ(L)`` with ``L = c - log(1 - e^c) - (r - log(1 - e^r))`` is ``-β σ(-L) / (1 - e^c)``, and
    d/dr is ``β σ(-L) / (1 - e^r)`` (as ``d/dx [x - log(1 - e^x)] = 1 / (1 - e^x)``)."""
    chosen = torch.tensor([-0.5, -2.0], requires_grad=True)
    rejected = torch.tensor([-1.0, -0.25], requires_grad=True)
    orpo_loss(chosen, rejected, beta=0.1)[0].sum().backward()
    expected_chosen, expected_rejected = [], []
    for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True):
        log_odds = (c - math.log(1 - math.exp(c))) - (r - math.log(1 - math.exp(r)))
        sigmoid_minus = 1 / (1 + math.exp(log_odds))
        expected_chosen.append(-0.1 * sigmoid_minus / (1 - math.exp(c)))
        expected_rejected.append(0.1 * sigmoid_minus / (1 - math.exp(r)))
    torch.testing.assert_close(chosen.grad, torch.tensor(expected_chosen), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rejected.grad, torch.tensor(expected_rejected), atol=1e-6, rtol=1e-5)


def test_kto_closed_form_with_clamped_reference_point():
    policy = torch.tensor([-1.0, -2.0, -0.5])
    reference = torch.tensor([-1.5, -1.0, -0.5])
    desirable = torch.tensor([True, False, True])
    beta, weight_d, weight_u = 0.5, 1.0, 1.5
    for z_in, z in ((torch.tensor(0.2), 0.2), (torch.tensor(-0.3), 0.0)):
        losses, rewards = kto_loss(policy, reference, desirable, z_in, beta, weight_d, weight_u)
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        expected = [
            weight_d * (1 - sig(beta * (0.5 - z))),
            weight_u * (1 - sig(beta * (z - -1.0))),
            weight_d * (1 - sig(beta * (0.0 - z))),
        ]
        torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(rewards, beta * torch.tensor([0.5, -1.0, 0.0]))


def test_bradley_terry_with_margin_and_centring():
    chosen, rejected, margin = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5]), torch.tensor([0.5, 0.0])
    losses = bradley_terry_loss(chosen, rejected, margin, center_rewards_coefficient=0.01)
    expected = [-log_sigmoid(1.0 - 0.0 - 0.5) + 0.01 * 1.0**2, -log_sigmoid(-1.0) + 0.01 * 0.0**2]
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=1e-6)

"""RL pieces against hand computations (numbers derived in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ft.losses.logps import token_entropy
from lightning_ft.losses.rl import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_k1,
    kl_k3,
    masked_mean,
    whiten,
)


def test_gae_by_hand():
    """γ = 0.5, λ = 0.5, one sequence of 3 tokens and one of 2 (then padding).
    Row 0: r = [0, 0, 1], V = [0.5, 0.5, 0.5].
      δ2 = 1 + 0 - 0.5 = 0.5;          A2 = 0.5
      δ1 = 0 + 0.5·0.5 - 0.5 = -0.25;   A1 = -0.25 + 0.25·0.5 = -0.125
      δ0 = -0.25;                       A0 = -0.25 + 0.25·(-0.125) = -0.28125
    Row 1: r = [1, 2, (pad 9)], V = [1, 1, (pad 7)]: padding counts as nothing.
      δ1 = 2 - 1 = 1;  A1 = 1;   δ0 = 1 + 0.5·1 - 1 = 0.5;  A0 = 0.5 + 0.25·1 = 0.75
    Returns = A + V on real tokens, 0 on padding.
    """
    rewards = torch.tensor([[0.0, 0.0, 1.0], [1.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[-0.28125, -0.125, 0.5], [0.75, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.21875, 0.375, 1.0], [1.75, 2.0, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 1.0, 2.0]])
    values = torch.tensor([[0.5, 0.25, 1.0]])
    advantages, _ = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[3.0 - 0.5, 3.0 - 0.25, 2.0 - 1.0]]))


def test_clipped_policy_loss_by_hand():
    """ε = 0.2. Token 1: ρ = e^{ln 1.5} = 1.5, A = 1 -> max(-1.5, -1.2) = -1.2 (clipped).
    Token 2: ρ = 0.5, A = 1 -> max(-0.5, -0.8) = -0.5 (unclipped).
    Token 3: ρ = 0.5, A = -2 -> max(1.0, 1.6) = 1.6 (clipped). Token 4 is padding."""
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 0.5, 3.0]]))
    old = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, 1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    losses, clipped = clipped_policy_loss(logprobs, old, advantages, mask, clip_range=0.2)
    torch.testing.assert_close(losses, torch.tensor([[-1.2, -0.5, 1.6, 0.0]]))
    assert clipped.tolist() == [[True, False, True, False]]
    assert masked_mean(losses, mask).item() == pytest.approx((-1.2 - 0.5 + 1.6) / 3)


def test_clipped_value_loss_by_hand():
    """ε = 0.1. Token 1: V = 1, V_old = 0, R = 2: (1-2)² = 1 vs (0.1-2)² = 3.61 -> 3.61.
    Token 2: V = 0.05, V_old = 0, R = 0: 0.0025 vs 0.0025 -> 0.0025. Mean · 0.5 = (3.61 + 0.0025) / 4."""
    loss = clipped_value_loss(
        torch.tensor([[1.0, 0.05, 9.0]]),
        torch.zeros(1, 3),
        torch.tensor([[2.0, 0.0, 0.0]]),
        torch.tensor([[1, 1, 0]]),
        clip_range=0.1,
    )
    assert loss.item() == pytest.approx((3.61 + 0.0025) / 4)


def test_kl_estimators_by_hand():
    """log π = ln 0.5, log π_ref = ln 0.25: k1 = ln 2; k3 = 0.5 - ln 0.5 - 1 = ln 2 - 0.5."""
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k3(logp, ref).item() == pytest.approx(math.log(2) - 0.5)
    assert kl_k3(ref, ref).item() == 0.0


def test_group_advantages_by_hand():
    """Two prompts, G = 3. Group [1, 2, 3]: mean 2, std 1 -> [-1, 0, 1] / (1 + 1e-4); Dr. GRPO: [-1, 0, 1];
    RLOO: r - mean(others) = [1 - 2.5, 2 - 2, 3 - 1.5]. Group [0, 0, 0]: all 0."""
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])
    expected = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, 3), expected / (1 + 1e-4))
    torch.testing.assert_close(group_advantages(rewards, 3, scale_by_std=False), expected)
    torch.testing.assert_close(
        group_advantages(rewards, 3, baseline="rloo"), torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0])
    )
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(rewards, 4)


def test_whiten_uses_only_real_tokens():
    """Real tokens [1, 2, 3]: mean 2, unbiased std 1 -> [-1, 0, 1]; padding stays 0."""
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(whiten(values, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        whiten(values, mask, shift_mean=False), torch.tensor([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6, rtol=0
    )


def test_explained_variance_by_hand():
    """Returns [1, 2, 3] (variance 2/3, padding ignored).
    Values [1, 2, 3]: residual 0 -> 1.  Values [2, 2, 2]: residual [-1, 0, 1], variance 2/3 -> 0.
    Values [3, 2, 1]: residual [-2, 0, 2], variance 8/3 -> 1 - 4 = -3."""
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    for values, expected in [([1.0, 2.0, 3.0], 1.0), ([2.0, 2.0, 2.0], 0.0), ([3.0, 2.0, 1.0], -3.0)]:
        padded = torch.tensor([[*values, -7.0]])
        assert float(explained_variance(padded, returns, mask)) == pytest.approx(expected, abs=1e-6)


def test_adaptive_kl_coef_by_hand():
    """coef 0.1, target 6, horizon 100, 10 sequences: kl 6.6 -> error 0.1 -> 0.1·(1 + 0.1·0.1) = 0.101;
    kl 60 and kl 0 hit the ±0.2 cap -> 0.102 and 0.098; kl = target leaves it alone."""
    assert adaptive_kl_coef(0.1, 6.6, 6.0, 10, 100) == pytest.approx(0.101)
    assert adaptive_kl_coef(0.1, 60.0, 6.0, 10, 100) == pytest.approx(0.102)
    assert adaptive_kl_coef(0.1, 0.0, 6.0, 10, 100) == pytest.approx(0.098)
    assert adaptive_kl_coef(0.1, 6.0, 6.0, 10, 100) == pytest.approx(0.1)


def test_token_entropy_matches_full_softmax():
    """Chunked entropies at labelled positions equal -Σ p log p of the full logits that predicted each label; a
    uniform distribution over V has entropy log V."""
    torch.manual_seed(0)
    projection = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(2, 5, 8)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    entropy = token_entropy(hidden, projection, labels, chunk_size=2)
    logprobs = torch.log_softmax(projection(hidden), dim=-1)
    full = -(logprobs.exp() * logprobs).sum(-1)  # (2, 5): position t predicts token t + 1
    expected = torch.zeros(2, 5)
    scored = labels != -100
    expected[scored] = full[:, :-1][scored[:, 1:]]
    torch.testing.assert_close(entropy, expected)
    torch.nn.init.zeros_(projection.weight)
    assert token_entropy(hidden, projection, labels)[0, 2] == pytest.approx(math.log(11))

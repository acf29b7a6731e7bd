"""`dpo_loss` against TRL's DPO trainer loss on the same log-probs (TRL is a test-only dependency).

TRL computes the loss inside `DPOTrainer._compute_loss`; it is driven here with a stand-in model that returns given
per-token log-probs, so both sides see exactly the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lightning_ft.losses.preference import dpo_loss
from tests.conftest import require

trl = require("trl", "the reference DPO implementation (in the `test` extra: pip install -e '.[test]')")

BATCH, LENGTH = 3, 6


class LogProbModel(torch.nn.Module):
    """Returns fixed per-token log-probs: the policy's, or the reference's while PEFT adapters are disabled."""

    def __init__(self, per_token_logps: torch.Tensor) -> None:
        super().__init__()
        self.per_token_logps = per_token_logps

    def forward(self, **kwargs) -> SimpleNamespace:
        rows, length = self.per_token_logps.shape
        return SimpleNamespace(
            log_probs=self.per_token_logps,
            entropy=torch.zeros(rows, length),
            mean_logits=torch.zeros(rows, length),
            is_top1=torch.zeros(rows, length, dtype=torch.bool),
        )


def trl_loss(loss_type: str, beta: float, label_smoothing: float, per_token_logps, completion_mask, reference):
    trainer = trl.DPOTrainer.__new__(trl.DPOTrainer)
    gather = lambda tensor: tensor  # noqa: E731
    trainer.__dict__.update(
        model=LogProbModel(per_token_logps).train(),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=gather, gather_for_metrics=gather),
        beta=beta,
        label_smoothing=label_smoothing,
        loss_types=[loss_type],
        loss_weights=[1.0],
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        use_weighting=False,
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(2 * BATCH, LENGTH, dtype=torch.long),
        "attention_mask": torch.ones(2 * BATCH, LENGTH, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": reference[:BATCH],
        "ref_rejected_logps": reference[BATCH:],
    }
    return trainer._compute_loss(trainer.model, inputs, return_outputs=False)


@pytest.mark.parametrize(
    "loss_type, label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2)]
)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_trl(loss_type, label_smoothing, beta):
    generator = torch.Generator().manual_seed(0)
    completion_mask = torch.zeros(2 * BATCH, LENGTH, dtype=torch.long)
    for row, start in enumerate([1, 2, 3, 2, 4, 1]):  # responses of different lengths
        completion_mask[row, start:] = 1
    shifted = completion_mask[:, 1:]
    per_token_logps = -torch.rand(2 * BATCH, LENGTH - 1, generator=generator) * shifted
    reference = -torch.rand(2 * BATCH, generator=generator) * 4
    expected = trl_loss(loss_type, beta, label_smoothing, per_token_logps, completion_mask, reference)

    logps = per_token_logps.sum(dim=1)
    if loss_type == "ipo":  # length-averaged log-probs, as the docstring asks (TRL divides by the same counts)
        counts = completion_mask.sum(dim=1).clamp(min=1)
        logps, reference = logps / counts, reference / counts
    losses, _, _ = dpo_loss(
        logps[:BATCH], logps[BATCH:], reference[:BATCH], reference[BATCH:], beta, loss_type, label_smoothing
    )
    torch.testing.assert_close(losses.mean(), expected, atol=1e-6, rtol=1e-6)

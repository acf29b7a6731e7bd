"""Chunked log-probs (no full-vocabulary logits for the batch) against log-softmax of the full logits: values and
gradients, for padded rows and for packed ones."""

from __future__ import annotations

import pytest
import torch

from lightning_ft.losses.logps import packed_sequence_logps, sequence_logps, token_logps

BATCH, LENGTH, HIDDEN, VOCAB = 3, 7, 8, 11


def inputs() -> tuple[torch.Tensor, torch.nn.Linear, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(BATCH, LENGTH, HIDDEN, generator=generator, requires_grad=True)
    projection = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=generator))
    labels = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)
    labels[0, :3] = -100  # a prompt
    labels[1, 5:] = -100  # padding
    labels[2, :] = -100  # nothing scored
    return hidden, projection, labels


def full_logit_logps(hidden: torch.Tensor, projection: torch.nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """The reference: log-softmax over the whole batch's logits, position t scoring labels[:, t] from t - 1."""
    logprobs = torch.log_softmax(projection(hidden[:, :-1]), dim=-1)
    targets = labels[:, 1:]
    picked = logprobs.gather(2, targets.clamp(min=0)[..., None]).squeeze(2) * (targets != -100)
    return torch.nn.functional.pad(picked, (1, 0))


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_chunked_token_logps_and_gradients_equal_the_full_logit_ones(chunk_size):
    hidden, projection, labels = inputs()
    expected = full_logit_logps(hidden, projection, labels)
    weights = torch.randn(BATCH, LENGTH, generator=torch.Generator().manual_seed(1))
    expected_gradients = torch.autograd.grad((expected * weights).sum(), [hidden, projection.weight])

    values = token_logps(hidden, projection, labels, chunk_size=chunk_size)
    gradients = torch.autograd.grad((values * weights).sum(), [hidden, projection.weight])

    torch.testing.assert_close(values, expected, atol=1e-6, rtol=1e-5)
    assert (values[labels == -100] == 0).all()
    for gradient, expected_gradient in zip(gradients, expected_gradients, strict=True):
        torch.testing.assert_close(gradient, expected_gradient, atol=1e-6, rtol=1e-5)


def test_sequence_and_packed_sums_equal_the_per_row_sums():
    hidden, projection, labels = inputs()
    per_token = full_logit_logps(hidden, projection, labels)
    logps, counts = sequence_logps(hidden, projection, labels, chunk_size=2)
    torch.testing.assert_close(logps, per_token.sum(dim=1), atol=1e-6, rtol=1e-5)
    assert counts.tolist() == [LENGTH - 3, 4, 0]

    # the three rows packed into one: each sequence's first token unscored, ids 0, 1, 2
    packed_hidden = hidden.reshape(1, BATCH * LENGTH, HIDDEN)
    packed_labels = labels.clone()
    packed_labels[:, 0] = -100
    sequence_ids = torch.arange(BATCH).repeat_interleave(LENGTH)[None]
    sums, packed_counts = packed_sequence_logps(
        packed_hidden, projection, packed_labels.reshape(1, -1), sequence_ids, BATCH, chunk_size=3
    )
    torch.testing.assert_close(sums, per_token.sum(dim=1), atol=1e-6, rtol=1e-5)
    assert packed_counts.tolist() == counts.tolist()

"""Log-probabilities of the labelled tokens, for the sequence-level losses (DPO family, reward-free RL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lightning_ft.losses.sft import IGNORE_INDEX, Projection


def token_logps(
    hidden_states: torch.Tensor, projection: Projection, labels: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """``log p(labels[:, t] | tokens before t)`` at every labelled position, 0 elsewhere.

    Like `chunked_cross_entropy`, only labelled positions are projected, ``chunk_size`` at a time, and each chunk's
    logits are recomputed in backward rather than kept, so full-vocabulary logits never exist for the batch.

    Args:
        hidden_states: ``(batch, length, hidden)`` final hidden states.
        projection: Hidden states -> logits ``(..., vocab)``; may hold trainable weights.
        labels: ``(batch, length)`` unshifted token ids, ``-100`` where nothing is scored.
        chunk_size: Labelled positions per chunk.

    Returns:
        ``(batch, length)`` float32; position ``t`` holds the log-probability of ``labels[:, t]`` (0 at ``t = 0``
        and wherever the label is ``-100``).
    """
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    hidden = hidden_states[:, :-1][scored]
    chosen_targets = targets[scored]
    pieces = [
        checkpoint(
            _chunk_logps,
            projection,
            hidden[start : start + chunk_size],
            chosen_targets[start : start + chunk_size],
            use_reentrant=False,
        )
        for start in range(0, chosen_targets.shape[0], chunk_size)
    ]
    values = torch.cat(pieces) if pieces else hidden_states.new_zeros(0, dtype=torch.float32)
    shifted = torch.zeros(scored.shape, dtype=torch.float32, device=labels.device).masked_scatter(scored, values)
    return F.pad(shifted, (1, 0))


@torch.no_grad()
def token_entropy(
    hidden_states: torch.Tensor, projection: Projection, labels: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Entropy of the next-token distribution that predicted each labelled token (a diagnostic: no gradient).

    Args:
        hidden_states: ``(batch, length, hidden)`` final hidden states.
        projection: Hidden states -> logits ``(..., vocab)``.
        labels: ``(batch, length)`` unshifted token ids, ``-100`` where nothing is scored.
        chunk_size: Labelled positions projected at a time.

    Returns:
        ``(batch, length)`` float32 entropies in nats, aligned like `token_logps` (0 where the label is ``-100``).
    """
    scored = labels[:, 1:] != IGNORE_INDEX
    hidden = hidden_states[:, :-1][scored]
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        logprobs = torch.log_softmax(projection(hidden[start : start + chunk_size]).float(), dim=-1)
        pieces.append(-(logprobs.exp() * logprobs).sum(dim=-1))
    values = torch.cat(pieces) if pieces else hidden_states.new_zeros(0, dtype=torch.float32)
    shifted = torch.zeros(scored.shape, dtype=torch.float32, device=labels.device).masked_scatter(scored, values)
    return F.pad(shifted, (1, 0))


def sequence_logps(
    hidden_states: torch.Tensor, projection: Projection, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's labelled tokens, and how many there are.

    Args:
        hidden_states: ``(batch, length, hidden)``.
        projection: Hidden states -> logits.
        labels: ``(batch, length)``, ``-100`` where nothing is scored.
        chunk_size: Labelled positions per chunk (see `token_logps`).

    Returns:
        ``(logps, num_tokens)``: ``(batch,)`` float32 sums and ``(batch,)`` int64 counts.
    """
    logps = token_logps(hidden_states, projection, labels, chunk_size)
    return logps.sum(dim=1), (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def _chunk_logps(projection: Projection, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = projection(hidden).float()
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)


def packed_sequence_logps(
    hidden_states: torch.Tensor,
    projection: Projection,
    labels: torch.Tensor,
    sequence_ids: torch.Tensor,
    num_sequences: int,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` for packed rows: sums and counts per sequence rather than per row.

    Args:
        hidden_states: ``(rows, length, hidden)``.
        projection: Hidden states -> logits.
        labels: ``(rows, length)``, ``-100`` where nothing is scored (each sequence's first token included).
        sequence_ids: ``(rows, length)`` index of the sequence each token belongs to, ``0 .. num_sequences - 1``
            across the whole batch (padding may carry any id: its labels are ``-100``).
        num_sequences: How many sequences the batch packs.
        chunk_size: Labelled positions per chunk (see `token_logps`).

    Returns:
        ``(logps, num_tokens)``: ``(num_sequences,)`` float32 sums and int64 counts.
    """
    logps = token_logps(hidden_states, projection, labels, chunk_size).flatten()
    scored = (labels != IGNORE_INDEX).flatten()
    index = sequence_ids.flatten().clamp(max=num_sequences - 1)
    sums = logps.new_zeros(num_sequences).index_add(0, index, logps)
    counts = torch.zeros(num_sequences, dtype=torch.long, device=labels.device).index_add(0, index, scored.long())
    return sums, counts

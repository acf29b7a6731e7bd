"""Packing and length grouping on the data side: which sequences share a row, and the exact collated tensors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from lightning_ft.data.packing import PackingCollator, pack_sequences
from lightning_ft.data.sampling import LengthGroupedBatchSampler


def test_best_fit_decreasing_by_hand():
    """Lengths [5, 3, 4, 2, 6], capacity 8, longest first: 6 opens row A (room 2); 5 does not fit A, opens B (room 3);
    4 fits neither, opens C (room 4); 3 fits B exactly (the fullest row with room); 2 fills A."""
    assert pack_sequences([5, 3, 4, 2, 6], capacity=8) == [[4, 3], [0, 1], [2]]


def test_every_sequence_lands_once_and_rows_respect_capacity():
    lengths = torch.randint(1, 100, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = pack_sequences(lengths, capacity=128)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= sum(lengths) / 128 * 1.1 + 1  # within 10% of the ideal
    with pytest.raises(ValueError, match="longer than the pack capacity 128"):
        pack_sequences([129], capacity=128)


def test_collated_row_restarts_positions_and_masks_each_sequence_start():
    row = {"input_ids": [[10, 11, 12], [20, 21]], "labels": [[-100, 11, 12], [20, 21]]}
    batch = PackingCollator(pad_token_id=0)([row, {"input_ids": [[30]], "labels": [[30]]}])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21], [30, 0, 0, 0, 0]]
    # The first token of every sequence is never a target: sequence 2 must not learn from sequence 1's end.
    assert batch["labels"].tolist() == [[-100, 11, 12, -100, 21], [-100, -100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert batch["sequence_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_length_grouped_batches_cover_everything_and_group_similar_lengths():
    lengths = list(range(100))
    sampler = LengthGroupedBatchSampler(lengths, batch_size=10, seed=1, mega_batch_factor=10)
    first, second = list(sampler), list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(100))
    assert first != second  # a new order each epoch
    # One mega-batch holds everything here, so each batch is a run of 10 consecutive lengths.
    assert all(max(batch) - min(batch) == 9 for batch in first)
    assert len(sampler) == 10


def shards(lengths: list[int], world: int, **options) -> list[LengthGroupedBatchSampler]:
    return [
        LengthGroupedBatchSampler(lengths, sampler=DistributedSampler(lengths, num_replicas=world, rank=r), **options)
        for r in range(world)
    ]


def test_length_grouped_shards_split_each_global_batch_by_length():
    """23 examples on 3 ranks: padded to 24 with the epoch's first example, 2 steps of 3 × 4; at each step rank 0
    holds the 4 longest of the step's 12, rank 2 the 4 shortest."""
    lengths = torch.randint(1, 50, (23,), generator=torch.Generator().manual_seed(0)).tolist()
    ranks = [list(sampler) for sampler in shards(lengths, 3, batch_size=4, seed=3)]
    assert [len(batches) for batches in ranks] == [2, 2, 2]
    assert all(len(batch) == 4 for batches in ranks for batch in batches)
    taken = [i for batches in ranks for batch in batches for i in batch]
    assert sorted(set(taken)) == list(range(23)) and len(taken) == 24
    for step in zip(*ranks, strict=True):
        step_lengths = [sorted((lengths[i] for i in batch), reverse=True) for batch in step]
        assert step_lengths[0][-1] >= step_lengths[1][0] and step_lengths[1][-1] >= step_lengths[2][0]


def test_one_shard_is_the_plain_sampler_and_resumes_mid_epoch():
    lengths = list(range(37))
    (alone,) = shards(lengths, 1, batch_size=5, seed=2, mega_batch_factor=2)
    assert list(alone) == list(LengthGroupedBatchSampler(lengths, 5, seed=2, mega_batch_factor=2))
    first, second = shards(lengths, 2, batch_size=5, seed=2, mega_batch_factor=2)
    expected = list(second)
    iterator = iter(first)
    next(iterator), next(iterator)
    resumed = shards(lengths, 2, batch_size=5, seed=2, mega_batch_factor=2)[0]
    resumed.load_state_dict(first.state_dict())
    assert list(resumed) == list(shards(lengths, 2, batch_size=5, seed=2, mega_batch_factor=2)[0])[2:]
    assert len(expected) == len(first) == 4  # 38 (padded) / 2 ranks = 19 per rank, in batches of 5

"""The shuffled order is a function of seed and epoch alone and resumes from its state in any epoch; epoch 0 is the
order a loader shuffling with a generator seeded the same way draws (so runs that never resume are unchanged)."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from lightning_ft.data.sampling import SeededRandomSampler

EXAMPLES = list(range(12))


def loader(seed: int = 42) -> StatefulDataLoader:
    sampler = SeededRandomSampler(EXAMPLES, seed=seed)
    return StatefulDataLoader(EXAMPLES, batch_size=2, sampler=sampler, generator=torch.Generator().manual_seed(seed))


def epoch(data: StatefulDataLoader) -> list[int]:
    return [index for batch in data for index in batch.tolist()]


def test_epoch_e_is_the_permutation_of_seed_plus_e_and_epoch_0_the_plain_shuffle():
    data = loader()
    for e in range(3):
        assert epoch(data) == torch.randperm(12, generator=torch.Generator().manual_seed(42 + e)).tolist()
    plain = StatefulDataLoader(EXAMPLES, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(42))
    assert epoch(loader()) == epoch(plain)
    assert isinstance(SeededRandomSampler(EXAMPLES), RandomSampler)  # so Lightning shards it under DDP


def test_a_loader_restored_mid_epoch_continues_that_epoch_and_every_later_one():
    reference = loader()
    iterator = iter(reference)
    seen = [next(iterator).tolist() for _ in range(2)]
    state = reference.state_dict()
    rest = [batch.tolist() for batch in iterator]
    later = [epoch(reference) for _ in range(2)]
    restored = loader()
    iter(restored)  # an iterator made before the state arrives (as Lightning may) must not matter
    restored.load_state_dict(state)
    assert [batch.tolist() for batch in restored] == rest
    assert [epoch(restored) for _ in range(2)] == later
    assert len(seen) == 2 and sorted(sum(seen + rest, [])) == EXAMPLES


def test_a_state_saved_after_a_resume_counts_from_the_epoch_start():
    """Two restarts in one epoch: the second state must hold the position in the epoch, not since the restart."""
    first = loader()
    iterator = iter(first)
    next(iterator)
    second = loader()
    second.load_state_dict(first.state_dict())
    iterator = iter(second)
    next(iterator)
    third = loader()
    third.load_state_dict(second.state_dict())
    full = epoch(loader())
    assert epoch(third) == full[4:]

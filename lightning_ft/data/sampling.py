"""Samplers whose order is a function of the seed and the epoch alone, and whose position is checkpointed, so a resumed
run draws exactly the batches an uninterrupted one would, in the interrupted epoch and every later one: a shuffled
order (`SeededRandomSampler`) and length-grouped batches for padded data (`LengthGroupedBatchSampler`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Generic, TypeVar

import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, Sampler

Item = TypeVar("Item")


class EpochPosition(Generic[Item]):
    """The checkpointed position of a sampler whose order is a function of the epoch: the epoch of the next
    iteration, and how many items of the current one were handed out (``state_dict``); a loaded state resumes that
    epoch's order after those items."""

    def __init__(self) -> None:
        self.epoch = 0  # of the next iteration
        self._yielded = 0  # items of the current iteration handed out
        self._skip = 0  # items to pass over after load_state_dict

    def __len__(self) -> int:
        raise NotImplementedError

    def state_dict(self) -> dict[str, int]:
        if self._yielded == 0 or self._yielded >= len(self):
            return {"epoch": self.epoch, "yielded": 0}
        return {"epoch": self.epoch - 1, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._skip, self._yielded = state["epoch"], state["yielded"], 0

    def resume(self, order: list[Item]) -> Iterator[Item]:
        """Hand out this epoch's ``order`` (past the skipped items after a load), counting the position."""
        self.epoch += 1
        skip, self._skip, self._yielded = self._skip, 0, 0
        for position in range(skip, len(order)):
            self._yielded = position + 1
            yield order[position]


class SeededRandomSampler(EpochPosition[int], RandomSampler):
    """A new shuffled order each epoch: epoch ``e`` is ``torch.randperm`` under the seed ``seed + e`` (epoch 0 is the
    order a loader with a generator seeded ``seed`` draws first). Stateful (epoch and examples yielded).

    A generator carried from epoch to epoch (a plain shuffled loader) is not restored by a checkpoint past the
    interrupted epoch, so every later epoch of a resumed run would be shuffled differently. Being a ``RandomSampler``,
    it is replaced under DDP by Lightning's ``DistributedSampler``, whose order is also a function of seed and epoch.

    Args:
        data_source: The dataset (only its length is used).
        seed: Seed of the order.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        RandomSampler.__init__(self, data_source)
        EpochPosition.__init__(self)
        self.seed = seed

    def __len__(self) -> int:
        return RandomSampler.__len__(self)

    def order(self, epoch: int) -> list[int]:
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()

    def __iter__(self) -> Iterator[int]:
        return self.resume(self.order(self.epoch))


class LengthGroupedBatchSampler(EpochPosition[list[int]], BatchSampler):
    """Shuffles, cuts the order into mega-batches of ``mega_batch_factor * batch_size`` examples, sorts each
    mega-batch by length (longest first) and yields its batches in a shuffled order. Seeded; a new order each epoch.
    Stateful (epoch and batches yielded), so a resumed run continues mid-epoch with the same order.

    Under DDP every rank computes the same order and the grouping works on global batches of ``W * batch_size``
    examples, which rank ``r`` of ``W`` cuts into pieces and takes the ``r``-th (the longest go to rank 0): the ranks'
    batches at one step hold neighbouring lengths, so no rank waits long for the others. As with PyTorch's
    ``DistributedSampler``, the order is padded with its first examples to a multiple of ``W``.

    Args:
        lengths: Length of each example.
        batch_size: Examples per batch (per rank).
        seed: Seed of the order; epoch ``e`` uses ``seed + e``.
        mega_batch_factor: Batches per mega-batch: larger groups lengths more tightly but shuffles less.
        sampler: Read only for the shard it stands for: Lightning injects a ``DistributedSampler`` here under DDP
            (the name is Lightning's interface for batch samplers); its own order is not used.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mega_batch_factor: int = 50,
        sampler: Sampler[int] | None = None,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.sampler = sampler
        self.drop_last = False
        is_shard = isinstance(sampler, DistributedSampler)
        self.num_replicas = sampler.num_replicas if is_shard else 1
        self.rank = sampler.rank if is_shard else 0
        EpochPosition.__init__(self)

    def __len__(self) -> int:
        per_rank = -(-len(self.lengths) // self.num_replicas)
        return -(-per_rank // self.batch_size)

    def steps(self, epoch: int) -> list[list[list[int]]]:
        """The batches of ``epoch``: for each step, one per rank."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        order += order[: -len(order) % self.num_replicas]  # pad to a multiple of the world size
        world_batch = self.num_replicas * self.batch_size
        mega = self.mega_batch_factor * world_batch
        global_batches = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            global_batches += [group[i : i + world_batch] for i in range(0, len(group), world_batch)]
        steps = []
        for index in torch.randperm(len(global_batches), generator=generator).tolist():
            batch = global_batches[index]
            piece = len(batch) // self.num_replicas
            steps.append([batch[r * piece : (r + 1) * piece] for r in range(self.num_replicas)])
        return steps

    def __iter__(self) -> Iterator[list[int]]:
        return self.resume([step[self.rank] for step in self.steps(self.epoch)])

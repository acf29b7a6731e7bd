"""Length-grouped batching for padded batches: similar lengths share a batch, so little compute goes to padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffles, cuts the order into mega-batches of ``mega_batch_factor * batch_size`` examples, sorts each
    mega-batch by length (longest first) and yields its batches in a shuffled order. Seeded; a new order each epoch.
    Stateful (epoch and batches yielded), so a resumed run continues mid-epoch with the same order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_factor: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.epoch = 0  # of the next iteration
        self._yielded = 0  # batches of the current iteration handed out
        self._skip = 0  # batches to pass over after load_state_dict

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        if self._yielded == 0 or self._yielded >= len(self):
            return {"epoch": self.epoch, "yielded": 0}
        return {"epoch": self.epoch - 1, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._skip, self._yielded = state["epoch"], state["yielded"], 0

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        skip, self._skip, self._yielded = self._skip, 0, 0
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.mega_batch_factor * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        for position, index in enumerate(torch.randperm(len(batches), generator=generator).tolist()):
            if position < skip:
                continue
            self._yielded = position + 1
            yield batches[index]

"""Weighted mixing of training sources: `MixSource` (one entry of ``data.train``), `MixedItems` (the sources' loader
items side by side, each knowing its source) and `WeightedMixSampler` (a seeded draw of sources by weight, resumable
mid-epoch)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from lightning_ft.data.sampling import EpochPosition
from lightning_ft.errors import UsageError

SourceKind = Literal["records", "text"]


@dataclass
class MixSource:
    """One source of a weighted training mix.

    Args:
        path: A data file, a directory of shards or a hub dataset id.
        weight: Relative share of the training items drawn from this source (normalised over the mix).
        kind: ``records`` in the data module's own format, or ``text``: raw text (a ``text`` field, or ``.txt``
            files) cut into blocks of ``max_length`` tokens for causal-LM loss on every token (replay of general text
            during SFT; what `TextData` trains on).
    """

    path: str
    weight: float = 1.0
    kind: SourceKind = "records"


def mix_sources(train: str | Sequence[MixSource | Mapping[str, Any]]) -> list[MixSource]:
    """``data.train`` as a list of sources: a single path is one source of weight 1. Every problem is named."""
    if isinstance(train, str):
        return [MixSource(train)]
    if not train:
        raise UsageError("data.train: an empty list; give a path or a list of {path, weight} sources")
    sources = []
    for position, entry in enumerate(train):
        if isinstance(entry, Mapping):
            unknown = set(entry) - {"path", "weight", "kind"}
            if unknown or "path" not in entry:
                raise UsageError(
                    f"data.train[{position}]: expected keys path, weight, kind; got {sorted(entry)} "
                    f"({'unknown ' + str(sorted(unknown)) if unknown else 'no path'})"
                )
            entry = MixSource(**entry)
        at = f"data.train[{position}] ({entry.path})"
        if not isinstance(entry.weight, int | float) or not math.isfinite(entry.weight) or entry.weight <= 0:
            raise UsageError(f"{at}: weight must be a positive number, got {entry.weight}")
        if entry.kind not in ("records", "text"):
            raise UsageError(f"{at}: kind must be 'records' or 'text', got {entry.kind!r}")
        sources.append(entry)
    return sources


class MixedItems(ConcatDataset):
    """Loader items of several sources in one dataset; ``item_sources[i]`` is the source index of item ``i``."""

    def __init__(self, parts: Sequence[Dataset], source_indices: Sequence[int]) -> None:
        super().__init__(parts)
        self.item_sources = [index for part, index in zip(parts, source_indices, strict=True) for _ in range(len(part))]


class WeightedMixSampler(EpochPosition[int], Sampler[int]):
    """Draws ``num_samples`` items per epoch: each draw picks a source with probability proportional to its weight,
    then that source's next item in its own shuffled order (reshuffled whenever it is used up, so a small source is
    repeated and a large one sampled without repeats within the epoch). Epoch ``e`` is a function of ``seed + e`` alone
    and the position is checkpointed, so a resumed run draws exactly the items an uninterrupted one would.

    Not a ``RandomSampler``: under DDP Lightning wraps it (every rank computes the same order and takes its share)
    instead of replacing it with an unweighted ``DistributedSampler``.

    Args:
        item_sources: Source index of each item.
        weights: Weight of each source (normalised here).
        seed: Seed of the order.
        num_samples: Items per epoch (default: all items of all sources).
    """

    def __init__(
        self, item_sources: Sequence[int], weights: Sequence[float], seed: int = 0, num_samples: int | None = None
    ) -> None:
        EpochPosition.__init__(self)
        self.items_of_source: list[list[int]] = [[] for _ in weights]
        for item, source in enumerate(item_sources):
            self.items_of_source[source].append(item)
        empty = [source for source, items in enumerate(self.items_of_source) if not items]
        if empty:
            places = ", ".join(f"data.train[{source}]" for source in empty)
            raise UsageError(
                f"{places}: no training rows to draw (every record was dropped, or held out for validation): fix "
                "the source's records or remove it from the mix"
            )
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.seed = seed
        self.num_samples = num_samples if num_samples is not None else len(item_sources)

    def __len__(self) -> int:
        return self.num_samples

    def order(self, epoch: int) -> list[int]:
        draws, generator = self._draws(epoch)
        queues = {}
        for source, count in Counter(draws).items():
            items = self.items_of_source[source]
            cycles = -(-count // len(items))
            permutations = [torch.randperm(len(items), generator=generator).tolist() for _ in range(cycles)]
            queues[source] = iter([items[position] for permutation in permutations for position in permutation])
        return [next(queues[source]) for source in draws]

    def source_counts(self, epoch: int = 0) -> list[int]:
        """How many of epoch ``epoch``'s draws come from each source."""
        counts = Counter(self._draws(epoch)[0])
        return [counts.get(source, 0) for source in range(len(self.items_of_source))]

    def _draws(self, epoch: int) -> tuple[list[int], torch.Generator]:
        """The source of each draw of ``epoch``, and the generator, which then shuffles the sources' items."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()
        return draws, generator

    def __iter__(self) -> Iterator[int]:
        return self.resume(self.order(self.epoch))

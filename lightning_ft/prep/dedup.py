"""Duplicates among records' texts: exact copies (of normalised text) and near copies, found with MinHash-LSH over
word n-gram shingles and confirmed by the shingles' true Jaccard similarity. The first record of a group is kept;
each later copy names the record it duplicates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from tqdm.auto import tqdm

MINHASH_SCHEME = "affine32"
# LSH only proposes candidates and every candidate's true Jaccard similarity decides, so the bands are tuned for
# recall: with 128 permutations and threshold 0.8, a pair at 0.8 becomes a candidate with probability ~0.95 (0.40
# with datasketch's default equal weights), at 0.85 ~0.99.
LSH_WEIGHTS = (0.05, 0.95)


@dataclass(frozen=True)
class Duplicate:
    """A record that repeats the earlier kept record ``original``, with the Jaccard similarity of their shingles
    (1.0 for exact copies)."""

    original: int
    similarity: float = 1.0


def exact_duplicates(texts: Iterable[tuple[int, str]]) -> dict[int, Duplicate]:
    """Later copies of the same text among ``(record, text)`` pairs, each mapped to its first occurrence."""
    first: dict[str, int] = {}
    duplicates = {}
    for index, text in texts:
        original = first.setdefault(text, index)
        if original != index:
            duplicates[index] = Duplicate(original)
    return duplicates


def shingles(text: str, ngram: int) -> set[str]:
    """The word ``ngram``-grams of (normalised) ``text``; a text of fewer words gives its single words, so short
    texts still compare."""
    tokens = text.split()
    if len(tokens) < ngram:
        return set(tokens)
    return {" ".join(tokens[start : start + ngram]) for start in range(len(tokens) - ngram + 1)}


def jaccard(first: set[str], second: set[str]) -> float:
    """``|A ∩ B| / |A ∪ B|``, 0 for two empty sets."""
    union = len(first | second)
    return len(first & second) / union if union else 0.0


@lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return MinHash(num_perm=num_perm, seed=seed, scheme=MINHASH_SCHEME).permutations


def minhash_signature(text: str, ngram: int, num_perm: int, seed: int) -> np.ndarray:
    """The MinHash signature (``num_perm`` uint32 values) of ``text``'s shingles, with permutations from ``seed``."""
    minhash = MinHash(num_perm, seed, permutations=_permutations(num_perm, seed), scheme=MINHASH_SCHEME)
    minhash.update_batch([shingle.encode("utf-8") for shingle in shingles(text, ngram)])
    return minhash.hashvalues


def near_duplicates(
    texts: Sequence[str],
    indices: Iterable[int],
    threshold: float,
    ngram: int,
    num_perm: int,
    seed: int,
    signatures: Sequence[np.ndarray] | np.ndarray | None = None,
    progress: bool = False,
) -> dict[int, Duplicate]:
    """Records of ``indices`` (in order) whose shingles have Jaccard similarity ``>= threshold`` with an earlier kept
    record; a record without words is never one.

    Args:
        texts: Normalised text of every record, by record number.
        indices: The records to compare, in the order that decides which copy is kept.
        threshold: The Jaccard similarity from which a record is a near copy.
        ngram: Words per shingle.
        num_perm: MinHash permutations.
        seed: Seed of the MinHash permutations.
        signatures: Precomputed `minhash_signature` of every record, by record number (computed here if absent).
        progress: Show a progress bar.
    """
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    duplicates = {}
    indices = list(indices)
    for index in tqdm(indices, desc="Near duplicates", disable=not progress):
        record_shingles = shingles(texts[index], ngram)
        if not record_shingles:
            continue
        values = signatures[index] if signatures is not None else minhash_signature(texts[index], ngram, num_perm, seed)
        minhash = LeanMinHash(seed=seed, hashvalues=values, scheme=MINHASH_SCHEME)
        closest = None
        for other in sorted(lsh.query(minhash)):
            similarity = jaccard(record_shingles, shingles(texts[other], ngram))
            if similarity >= threshold and (closest is None or similarity > closest.similarity):
                closest = Duplicate(other, similarity)
        if closest:
            duplicates[index] = closest
        else:
            lsh.insert(index, minhash)
    return duplicates

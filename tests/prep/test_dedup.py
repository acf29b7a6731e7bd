"""Duplicates on real data: exact copies (changed only in case, spacing and punctuation) and near copies (1-3 words
edited) of real Alpaca-GPT4 records are planted after a slice of the file; `clean` drops exactly those, names the
record each repeats and, for near copies, the similarity worked out from the edit; real records on the same
subject stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightning_ft.prep.clean import clean
from lightning_ft.prep.dedup import Duplicate, exact_duplicates, jaccard, near_duplicates, shingles
from lightning_ft.prep.records import words
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl

INVENTED = ["zorblat", "quixnor", "flumpet"]  # words no record has, so every shingle holding one is new
# Real records on the same subject that are not copies, by position in the planted file: 39 (machine vs deep
# learning) and file record 660 (AI vs machine learning) at 100; 38 (protection from cybercrime) and file record
# 887 (fraud in online payments) at 101.
SAME_SUBJECT = [(39, 100), (38, 101)]


def alpaca_words(record: dict[str, Any]) -> list[str]:
    return words("\n".join([record["instruction"], record["input"], record["output"]]))


def five_grams(tokens: list[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[start : start + 5]) for start in range(len(tokens) - 4)}


def edit_words(text: str, count: int) -> str:
    """``text`` with ``count`` of its lower-case alphabetic words, spread evenly, replaced by invented words."""
    tokens = text.split(" ")
    alphabetic = [position for position, token in enumerate(tokens) if token.isalpha() and token.islower()]
    for number in range(count):
        tokens[alphabetic[len(alphabetic) * (number + 1) // (count + 1)]] = INVENTED[number]
    return " ".join(tokens)


def near_copy(record: dict[str, Any], count: int) -> tuple[dict[str, Any], float]:
    """A copy with ``count`` words of the output edited, and its similarity to ``record``: with N distinct 5-grams
    and edits at least 5 words apart and from the ends, each edit removes the 5 shingles holding the old word and
    adds 5 new ones, so J = (N - 5k) / (N + 5k)."""
    copy = {**record, "output": edit_words(record["output"], count)}
    original, edited = alpaca_words(record), alpaca_words(copy)
    changed = [position for position, (old, new) in enumerate(zip(original, edited, strict=True)) if old != new]
    assert len(changed) == count and changed[0] >= 4 and changed[-1] < len(original) - 4
    assert all(later - earlier >= 5 for earlier, later in zip(changed, changed[1:], strict=False))
    distinct = len(five_grams(original))
    assert distinct == len(original) - 4
    return copy, (distinct - 5 * count) / (distinct + 5 * count)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], dict[int, Any]]:
    """Records 0-99 of the file and records 660 and 887 (positions 100, 101), then the planted copies (102-106);
    returns the file, its records and each copy's expected (original, similarity)."""
    real = read_jsonl(shared_data("sft_alpaca/alpaca_gpt4_en_demo.jsonl"))
    base = real[:100] + [real[660], real[887]]
    long_records = [  # 200 words or more with no 5-gram twice, so three edits keep J >= (196 - 15) / (196 + 15)
        index
        for index, record in enumerate(base)
        if len(tokens := alpaca_words(record)) >= 200 and len(five_grams(tokens)) == len(tokens) - 4
    ]
    exact_copies = [
        {**base[5], "instruction": base[5]["instruction"].upper(), "output": "  " + base[5]["output"] + "!!"},
        {**base[60], "output": base[60]["output"].replace(" ", "   ").replace(".", ";")},
    ]
    expected = {102: (5, None), 103: (60, None)}
    copies = []
    for count, original in enumerate(long_records[:3], start=1):
        copy, similarity = near_copy(base[original], count)
        copies.append(copy)
        expected[104 + count - 1] = (original, similarity)
    path = write_jsonl(tmp_path_factory.mktemp("dedup") / "planted.jsonl", base + exact_copies + copies)
    return path, base + exact_copies + copies, expected


def test_clean_drops_exactly_the_planted_copies(planted: tuple[Path, list[dict[str, Any]], dict], tmp_path: Path):
    path, records, expected = planted
    report = clean(str(path), str(tmp_path / "clean.jsonl"), pii=False)
    where = [f"{path}:{line}" for line in range(1, len(records) + 1)]
    assert report["dropped"]["exact_duplicate"]["records"] == [
        {"record": copy, "where": where[copy], "duplicate_of": original, "duplicate_of_where": where[original]}
        for copy, (original, similarity) in expected.items()
        if similarity is None
    ]
    near = report["dropped"]["near_duplicate"]["records"]
    assert [(entry["record"], entry["duplicate_of"], entry["where"]) for entry in near] == [
        (copy, original, where[copy]) for copy, (original, similarity) in expected.items() if similarity
    ]
    for entry in near:
        assert entry["similarity"] == round(expected[entry["record"]][1], 4)
    assert report["records_in"] == 107 and report["records_out"] == 102
    assert read_jsonl(tmp_path / "clean.jsonl") == records[:102]


def test_same_subject_is_not_a_duplicate(planted: tuple[Path, list[dict[str, Any]], dict]) -> None:
    """The pairs share about a third of their distinct words but few 5-grams (a similarity under 0.05, far from
    0.8), and `clean` keeps every record of the slice (the test above)."""
    _, records, _ = planted
    for first, second in SAME_SUBJECT:
        first_words, second_words = alpaca_words(records[first]), alpaca_words(records[second])
        assert jaccard(set(first_words), set(second_words)) > 0.3
        assert jaccard(five_grams(first_words), five_grams(second_words)) < 0.05


def test_exact_duplicates_keep_the_first() -> None:
    found = exact_duplicates([(0, "a b"), (1, "c"), (2, "a b"), (4, "c"), (5, "a b")])
    assert found == {2: Duplicate(0), 4: Duplicate(1), 5: Duplicate(0)}


def test_shingles() -> None:
    assert shingles("a b c d e f", 5) == {"a b c d e", "b c d e f"}
    assert shingles("machine learning basics", 5) == {"machine", "learning", "basics"}
    assert shingles("", 5) == set()


def test_short_texts_compare_by_words() -> None:
    """3 and 4 words, fewer than 5: compared as word sets, {machine, learning, basics} within {+ explained}: 3/4."""
    texts = ["machine learning basics", "machine learning basics explained", "cooking pasta at home", ""]
    found = near_duplicates(texts, range(4), threshold=0.7, ngram=5, num_perm=128, seed=0)
    assert found == {1: Duplicate(0, 0.75)}
    assert near_duplicates(texts, range(4), threshold=0.8, ngram=5, num_perm=128, seed=0) == {}


def test_near_duplicates_follow_the_given_order() -> None:
    """The first of the given order is kept: listing record 1 first makes record 0 the copy."""
    texts = ["one two three four five six seven", "one two three four five six seven eight"]
    # 3 shared 5-grams of 3 and 4: J = 3/4
    assert near_duplicates(texts, [0, 1], 0.7, 5, 128, 0) == {1: Duplicate(0, 0.75)}
    assert near_duplicates(texts, [1, 0], 0.7, 5, 128, 0) == {0: Duplicate(1, 0.75)}

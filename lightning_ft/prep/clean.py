"""`lightning-ft data clean IN OUT`: mask personal data, drop low-quality records, exact and near duplicates, and
write the rest in the input's layout with a JSON report of every change.

The steps, in order: every record is read and masked (so the output holds no two records that became copies once
masked); then the quality rules, exact duplicates and near duplicates each drop records that survived the steps
before, so every duplicate names a record that is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any, Literal, get_args

import numpy as np
from datasets import Dataset

from lightning_ft.errors import UsageError
from lightning_ft.options import check_keys, check_option
from lightning_ft.prep.dedup import Duplicate, exact_duplicates, minhash_signature, near_duplicates
from lightning_ft.prep.pii import PII_KINDS, mask_value
from lightning_ft.prep.quality import QUALITY_RULES, repeated_line_ratio, response_chars
from lightning_ft.prep.records import (
    Layout,
    RecordFile,
    any_text,
    normalise,
    read_records,
    record_text,
    report_path,
    write_records,
    write_report,
)

PROGRESS_MIN_RECORDS = 10_000
DEDUP_RULES = ("exact_duplicate", "near_duplicate")
CLEAN_LAYOUTS = ("auto", *(layout for layout in get_args(Layout) if layout != "records"))  # `records`: no text to read
# Columns `examine_record` adds beside the record's own (removed before writing).
PII_FOUND, TEXT, CHARS, ECHO, REPEATS, SIGNATURE = (
    f"__clean_{name}__" for name in ("pii", "text", "chars", "echo", "repeats", "signature")
)


def clean(
    source: str,
    output: str,
    exact_dedup: bool = True,
    near_dedup: bool = True,
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    min_response_chars: int = 1,
    max_repeated_line_ratio: float = 0.5,
    pii: bool = True,
    pii_kinds: list[str] | None = None,
    layout: Layout | Literal["auto"] = "auto",
    num_proc: int = 1,
    seed: int = 0,
    report: str | None = None,
) -> dict[str, Any]:
    """Clean a training file: mask personal data, drop low-quality records and duplicates.

    Masks personal data, drops records that fail a quality rule, exact and near duplicates, and writes the rest to
    ``output`` in the input's layout and the file type of ``output``'s suffix, with a JSON report.

    Args:
        source: The input file (jsonl, json, parquet, csv) or hub dataset id.
        output: Where the cleaned records go; the suffix picks the file type.
        exact_dedup: Drop later copies of a record whose normalised text (case, spacing, punctuation ignored) is
            the same as an earlier one's.
        near_dedup: Drop records whose word shingles have Jaccard similarity of at least ``threshold`` with an
            earlier kept record (MinHash-LSH finds candidates, the true similarity decides).
        threshold: Jaccard similarity from which a record is a near duplicate, in (0, 1).
        ngram: Words per shingle for near duplicates (texts with fewer words use single words).
        num_perm: MinHash permutations (more: better candidate recall, slower).
        min_response_chars: Drop records whose response has fewer non-space characters (skipped when no record
            of the file has a response, e.g. instructions only).
        max_repeated_line_ratio: Drop records whose response has a larger share of lines repeating an earlier line.
        pii: Mask personal data with typed placeholders.
        pii_kinds: The kinds to mask (email, iban, ip_address, credit_card, phone); all when not given.
        layout: The records' layout (alpaca, dolly, messages, sharegpt, preference, kto, qa, turns, text), or auto
            to recognise it.
        num_proc: Processes for reading, masking and hashing the records.
        seed: Seed of the MinHash permutations.
        report: Where the JSON report goes; ``<output>.report.json`` when not given.

    Returns:
        The report: settings, layout, record counts, every dropped record by rule (with the record it duplicates),
        and personal data masked per kind with the records it was in.
    """
    kinds = list(PII_KINDS if pii_kinds is None else pii_kinds) if pii else []
    check_keys("PII kinds", kinds, PII_KINDS)
    check_option("layout", layout, CLEAN_LAYOUTS)
    _check_limits(threshold, ngram, num_perm, min_response_chars, max_repeated_line_ratio, num_proc)
    file = read_records(source, layout)
    wheres = [file.where(index) for index in range(len(file.records))]
    examined = examine_records(file, wheres, kinds, (ngram, num_perm, seed) if near_dedup else None, num_proc)
    texts = list(examined[TEXT])
    drops, skipped = quality_drops(examined, min_response_chars, max_repeated_line_ratio)
    if exact_dedup:
        found = exact_duplicates((index, texts[index]) for index in remaining(len(texts), drops))
        drops |= {index: ("exact_duplicate", duplicate) for index, duplicate in found.items()}
    else:
        skipped["exact_duplicate"] = "disabled"
    if near_dedup:
        signatures = np.asarray(examined.with_format("numpy")[SIGNATURE][:], dtype=np.uint32)
        progress = len(texts) >= PROGRESS_MIN_RECORDS
        survivors = remaining(len(texts), drops)
        found = near_duplicates(texts, survivors, threshold, ngram, num_perm, seed, signatures, progress)
        drops |= {index: ("near_duplicate", duplicate) for index, duplicate in found.items()}
    else:
        skipped["near_duplicate"] = "disabled"
    survivors = remaining(len(texts), drops)
    extra_columns = [column for column in examined.column_names if column not in file.records.column_names]
    written = write_records(examined.select(survivors).remove_columns(extra_columns), output, like=source)
    settings = {  # num_proc is left out: it changes no result
        "exact_dedup": exact_dedup,
        "near_dedup": near_dedup,
        "threshold": threshold,
        "ngram": ngram,
        "num_perm": num_perm,
        "min_response_chars": min_response_chars,
        "max_repeated_line_ratio": max_repeated_line_ratio,
        "pii_kinds": kinds,
        "layout": layout,
        "seed": seed,
    }
    result = {
        "source": source,
        "output": str(written),
        "layout": file.layout,
        "settings": settings,
        "records_in": len(texts),
        "records_out": len(survivors),
        "dropped": dropped_report(drops, wheres, skipped),
        "skipped_rules": skipped,
        "pii": pii_report(examined[PII_FOUND], wheres, kinds),
    }
    write_report(result, report or report_path(written))
    return result


def examine_records(
    file: RecordFile,
    wheres: Sequence[str],
    kinds: Collection[str],
    signature_settings: tuple[int, int, int] | None,
    num_proc: int,
) -> Dataset:
    """Every record through `examine_record` with `datasets.map` (in ``num_proc`` processes), kept in memory: a
    cache keyed by the function's name would outlive changes to the masking rules."""
    return file.records.map(
        partial(examine_record, layout=file.layout, wheres=wheres, kinds=kinds, signature_settings=signature_settings),
        with_indices=True,
        num_proc=num_proc if num_proc > 1 else None,
        keep_in_memory=True,
        load_from_cache_file=False,
        desc="Examining records",
    )


def remaining(count: int, drops: Collection[int]) -> list[int]:
    """The records of ``count`` not in ``drops``, in order."""
    return [index for index in range(count) if index not in drops]


def examine_record(
    record: dict[str, Any],
    index: int,
    layout: Layout,
    wheres: Sequence[str],
    kinds: Collection[str],
    signature_settings: tuple[int, int, int] | None,
) -> dict[str, Any]:
    """One record masked, with what the rules need: the personal data found, its normalised text, the response's
    non-space characters, whether the response repeats the prompt, its repeated-line ratio, its MinHash signature."""
    found: Counter[str] = Counter()
    masked = {key: mask_value(value, kinds, found) for key, value in record.items()} if kinds else {}
    text = record_text(masked or record, layout, wheres[index])
    prompt, response = normalise(text.prompt), normalise(text.response)
    # Equal to normalise(text.whole) without a third pass: every step of `normalise` works character by character,
    # and the newline between prompt and response becomes the space between them.
    whole = " ".join(part for part in (prompt, response) if part)
    columns = {
        PII_FOUND: sorted(found.elements()),
        TEXT: whole,
        CHARS: response_chars(text.response),
        ECHO: bool(prompt) and prompt == response,
        REPEATS: max(map(repeated_line_ratio, response_sides(masked or record, layout, text.response, wheres[index]))),
    }
    if signature_settings:
        columns[SIGNATURE] = minhash_signature(whole, *signature_settings)
    return masked | columns


def response_sides(record: Mapping[str, Any], layout: Layout, response: str, where: str) -> list[str]:
    """The responses a record holds: a preference pair's chosen and rejected apart (they share lines by design),
    else its one response text."""
    if layout == "preference":
        return [any_text(record.get(side), side, where) for side in ("chosen", "rejected")]
    return [response]


def quality_drops(
    examined: Dataset, min_response_chars: int, max_repeated_line_ratio: float
) -> tuple[dict[int, tuple[str, Any]], dict[str, str]]:
    """Records that fail a quality rule (the first rule they fail, with its figure), and the rules skipped."""
    chars, echoes, repeats = examined[CHARS], examined[ECHO], examined[REPEATS]
    skipped = {}
    check_empty = any(count > 0 for count in chars)
    if not check_empty:
        skipped["empty_response"] = "no record has a response (instructions only): its records are kept"
    drops = {}
    for index, (count, echo, ratio) in enumerate(zip(chars, echoes, repeats, strict=True)):
        if check_empty and count < min_response_chars:
            drops[index] = ("empty_response", {"response_chars": count})
        elif echo:
            drops[index] = ("response_is_prompt", {})
        elif ratio > max_repeated_line_ratio:
            drops[index] = ("repeated_lines", {"repeated_line_ratio": round(ratio, 4)})
    return drops, skipped


def dropped_report(
    drops: Mapping[int, tuple[str, Any]], wheres: Sequence[str], skipped: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Per rule that ran: how many records it dropped and each one (number, place, why)."""
    rules = [rule for rule in (*QUALITY_RULES, *DEDUP_RULES) if rule not in skipped]
    report: dict[str, dict[str, Any]] = {rule: {"count": 0, "records": []} for rule in rules}
    for index in sorted(drops):
        rule, detail = drops[index]
        entry = {"record": index, "where": wheres[index]}
        if isinstance(detail, Duplicate):
            entry |= {"duplicate_of": detail.original, "duplicate_of_where": wheres[detail.original]}
            if rule == "near_duplicate":
                entry["similarity"] = round(detail.similarity, 4)
        else:
            entry |= detail
        report[rule]["count"] += 1
        report[rule]["records"].append(entry)
    return report


def pii_report(found: Sequence[list[str]], wheres: Sequence[str], kinds: Collection[str]) -> dict[str, Any]:
    """Per kind masked: the number of pieces masked and the records they were in (all input records, dropped ones
    too)."""
    report: dict[str, Any] = {kind: {"count": 0, "records": []} for kind in kinds}
    for index, kinds_found in enumerate(found):
        for kind, count in sorted(Counter(kinds_found).items()):
            report[kind]["count"] += count
            report[kind]["records"].append({"record": index, "where": wheres[index], "count": count})
    return report


def _check_limits(
    threshold: float,
    ngram: int,
    num_perm: int,
    min_response_chars: int,
    max_repeated_line_ratio: float,
    num_proc: int,
) -> None:
    limits = {
        "threshold": (threshold, 0 < threshold < 1, "in (0, 1)"),
        "ngram": (ngram, ngram >= 1, "at least 1"),
        "num_perm": (num_perm, num_perm >= 2, "at least 2"),
        "min_response_chars": (min_response_chars, min_response_chars >= 0, "at least 0"),
        "max_repeated_line_ratio": (max_repeated_line_ratio, 0 <= max_repeated_line_ratio <= 1, "in [0, 1]"),
        "num_proc": (num_proc, num_proc >= 1, "at least 1"),
    }
    for name, (value, valid, expected) in limits.items():
        if not valid:
            raise UsageError(f"{name} must be {expected}, got {value}")

"""`lightning-ft data stats FILE`: what a data file holds before it is trained on: records, turns, empty or missing
fields, length distribution (tokens with the model's tokenizer and chat template, else words) and how many records
a ``max_length`` would truncate, exact and near duplicates, and the writing systems used."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from lightning_ft.prep.convert import NotConvertible, conversation_of
from lightning_ft.prep.records import Layout, RecordFile, normalise, read_records, record_text, write_report

PERCENTILES = (50, 90, 95, 99)
CHAT_LAYOUTS = ("messages", "sharegpt", "kto")


def stats(
    source: str,
    tokenizer: str | None = None,
    max_length: list[int] | None = None,
    plot: str | None = None,
    near_duplicates: bool = True,
    threshold: float = 0.8,
    layout: Layout | Literal["auto"] = "auto",
    report: str | None = None,
) -> dict[str, Any]:
    """Describe ``source``; print a summary and write the JSON report.

    Args:
        source: A data file (jsonl/json/parquet/csv) or hub dataset id.
        tokenizer: A model directory, export or hub id whose tokenizer and chat template measure lengths as training
            does; without it lengths are counted in words.
        max_length: Lengths to check: how many records each would truncate (default: 512, 1024, 2048, 4096).
        plot: Write a histogram of the lengths to this PNG file (matplotlib).
        near_duplicates: Also count near duplicates (MinHash-LSH, as `clean` finds them).
        threshold: Jaccard similarity above which two records are near duplicates.
        layout: The records' layout, or ``auto`` to recognise it.
        report: Where the JSON report goes (default: ``SOURCE.stats.json`` beside a local file, else stats.json).
    """
    records = read_records(source, layout)
    texts = [record_text(record, records.layout, records.where(i)) for i, record in enumerate(records.records)]
    lengths, unit = measure_lengths(records, tokenizer)
    limits = sorted(max_length or [512, 1024, 2048, 4096])
    summary: dict[str, Any] = {
        "command": "stats",
        "source": source,
        "layout": records.layout,
        "records": len(records.records),
        "empty": {
            "prompt": sum(not text.prompt.strip() for text in texts),
            "response": sum(not text.response.strip() for text in texts),
        },
        "missing_fields": missing_fields(records),
        "length": length_summary(lengths, unit, limits),
        "exact_duplicates": exact_duplicates([normalise(text.whole) for text in texts]),
        "scripts": dict(Counter(dominant_script(text.whole) for text in texts).most_common()),
    }
    if records.layout in CHAT_LAYOUTS:
        summary["turns"] = distribution([turn_count(record, records.layout) for record in records.records])
    if near_duplicates:
        summary["near_duplicates"] = near_duplicate_count([text.whole for text in texts], threshold)
    if plot:
        summary["plot"] = str(draw_histogram(lengths, unit, limits, source, plot))
    target = Path(report) if report else default_report(source)
    write_report(summary, target)
    print(format_summary(summary))
    print(f"Report: {target}")
    return summary


def measure_lengths(records: RecordFile, tokenizer_path: str | None) -> tuple[list[int], str]:
    """Each record's length: tokens of its chat-template rendering (as training tokenizes it) with a tokenizer,
    else words; preference records count the prompt with the longer response."""
    if tokenizer_path is None:
        return [
            len(record_text(r, records.layout, records.where(i)).whole.split()) for i, r in enumerate(records.records)
        ], "words"
    from lightning_ft.model.spec import ModelSpec

    tokenizer = ModelSpec(path=tokenizer_path).load_tokenizer()
    lengths = []
    for index, record in enumerate(tqdm(records.records, desc="Measuring", disable=len(records.records) < 1000)):
        where = records.where(index)
        try:
            messages, tools = conversation_of(record, records.layout, where)
            options = {"tools": tools} if tools else {}
            lengths.append(
                len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"])
            )
        except NotConvertible:
            text = record_text(record, records.layout, where)
            lengths.append(len(tokenizer(text.whole, add_special_tokens=False)["input_ids"]))
    return lengths, "tokens"


def length_summary(lengths: Sequence[int], unit: str, limits: Sequence[int]) -> dict[str, Any]:
    values = np.asarray(lengths)
    return {
        "unit": unit,
        **distribution(lengths),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
        "truncated_at": {str(limit): int((values > limit).sum()) for limit in limits},
    }


def distribution(values: Sequence[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {"min": int(array.min()), "mean": round(float(array.mean()), 2), "max": int(array.max())}


def missing_fields(records: RecordFile) -> dict[str, int]:
    """Per column, how many records have it null or absent (`datasets` gives a mixed file every column)."""
    counts = {
        column: sum(value is None for value in records.records[column]) for column in records.records.column_names
    }
    return {column: count for column, count in counts.items() if count}


def exact_duplicates(normalised: Sequence[str]) -> int:
    """Records whose normalised text equals an earlier record's."""
    return len(normalised) - len(set(normalised))


def near_duplicate_count(texts: Sequence[str], threshold: float) -> int | None:
    """Records `clean` (with its default shingles) would drop as near duplicates of an earlier one; None when the
    ``data`` extra (datasketch) is missing."""
    try:
        from lightning_ft.prep.dedup import near_duplicates
    except ImportError:  # pip install 'lightning-ft[data]'
        return None
    normalised = [normalise(text) for text in texts]
    return len(near_duplicates(normalised, range(len(normalised)), threshold, ngram=5, num_perm=128, seed=0))


def turn_count(record: Mapping[str, Any], layout: Layout) -> int:
    turns = record.get("conversations" if layout == "sharegpt" else "messages") or []
    return len(turns)


def dominant_script(text: str) -> str:
    """The writing system most of ``text``'s letters belong to (Latin, CJK, Cyrillic, Arabic, ...): a cheap
    language hint; ``none`` for text without letters."""
    scripts = Counter(script_of(char) for char in text if char.isalpha())
    return scripts.most_common(1)[0][0] if scripts else "none"


def script_of(char: str) -> str:
    name = unicodedata.name(char, "")
    if name.startswith("CJK") or "HIRAGANA" in name or "KATAKANA" in name or "HANGUL" in name:
        return "CJK"
    return name.split(" ")[0].title() if name else "other"


def draw_histogram(lengths: Sequence[int], unit: str, limits: Sequence[int], title: str, path: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4))
    axes.hist(lengths, bins=50, color="#4c72b0")
    for limit in limits:
        if limit <= max(lengths):
            axes.axvline(limit, color="#c44e52", linestyle="--", linewidth=1)
            axes.annotate(f"max_length {limit}", (limit, axes.get_ylim()[1] * 0.9), rotation=90, fontsize=8)
    axes.set_xlabel(f"length ({unit})")
    axes.set_ylabel("records")
    axes.set_title(Path(title).name)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    pyplot.close(figure)
    return target


def default_report(source: str) -> Path:
    path = Path(source)
    return path.with_name(path.name + ".stats.json") if path.is_file() else Path("stats.json")


def format_summary(summary: Mapping[str, Any]) -> str:
    length = summary["length"]
    lines = [
        f"{summary['source']}: {summary['records']} records ({summary['layout']})",
        f"length ({length['unit']}): min {length['min']}, mean {length['mean']}, p50 {length['p50']:.0f}, "
        f"p95 {length['p95']:.0f}, max {length['max']}",
        "truncated at max_length " + ", ".join(f"{k}: {v}" for k, v in length["truncated_at"].items()),
        f"empty prompts {summary['empty']['prompt']}, empty responses {summary['empty']['response']}; "
        f"exact duplicates {summary['exact_duplicates']}"
        + (f", near duplicates {summary['near_duplicates']}" if summary.get("near_duplicates") is not None else ""),
        "scripts: " + ", ".join(f"{k} {v}" for k, v in summary["scripts"].items()),
    ]
    if "turns" in summary:
        turns = summary["turns"]
        lines.insert(1, f"turns: min {turns['min']}, mean {turns['mean']}, max {turns['max']}")
    return "\n".join(lines)

"""Leak check: which evaluation items a training file already contains, found by word n-grams and by exact prompt
matches, and optionally the training file without the records that leak them.

What is compared (all text normalised by `normalise`: NFKC, case-folded, punctuation dropped):

- An eval item's **prompt side**: its user turns (an instruction with its input, a question, every turn of an
  MT-bench / Vicuna-bench question list, the ``Human:`` turns of an hh-rlhf transcript); its text when it has no
  prompt (raw text). Its **question** is the first of those turns.
- A training record's **whole text** (prompt and response) for n-grams, and each of its user turns (plus its whole
  prompt) for exact matches.

An item is contaminated when its question equals a training user turn or prompt (**exact**), or when a word n-gram of
its prompt side occurs in a training record's text (**ngram**, the GPT-3 rule: one shared n-gram is enough; the report
gives the share of the item's n-grams found, so a reader can tell a copied question from a shared phrase). Items of
fewer than ``n`` words are checked with a smaller n, their own length (the whole item must occur word for word),
down to ``min_words`` words (GPT-3 clamped n to 8..13 the same way); shorter items are checked by exact match only,
as a phrase that short occurs in unrelated text.

The report lists each contaminated item (``where``, a snippet, the kind, the share of its n-grams found) with the
training records it overlaps (0-based ``record`` number and ``where``; the first 20, and how many in all), counts per
eval file, and with ``drop`` the dropped records.

The eval items are indexed (hash maps from n-gram to items) and the training file is streamed past them once, so time
is linear in the training words and memory is bounded by the eval sets, which are the small side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from lightning_ft.data.preference_formats import hh_transcript
from lightning_ft.data.sources import DataError
from lightning_ft.errors import UsageError
from lightning_ft.prep.records import (
    Layout,
    RecordFile,
    RecordText,
    normalise,
    read_records,
    record_text,
    report_path,
    write_records,
    write_report,
)

Gram = tuple[str, ...]
USER_TURN_ROLES = {"user", "human"}
LISTED_TRAINING_RECORDS = 20  # per contaminated item; the count is always complete
SNIPPET_CHARACTERS = 120


@dataclass
class EvalItem:
    """One evaluation item: where it is, its question, and how it is checked."""

    file: str
    index: int
    where: str
    question: str
    grams: int  # distinct n-grams of its prompt side checked (0: exact match only)


@dataclass
class EvalIndex:
    """The eval items and the keys that find them: n-grams, whole short items by length, normalised questions."""

    items: list[EvalItem] = field(default_factory=list)
    by_gram: dict[Gram, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_short_item: dict[Gram, list[int]] = field(default_factory=lambda: defaultdict(list))
    short_lengths: set[int] = field(default_factory=set)
    by_question: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class Match:
    """How one training record overlaps one eval item."""

    kind: Literal["exact", "ngram"] = "ngram"
    shared_ngrams: int = 0


@dataclass
class Overlaps:
    """What the scan found, per contaminated item: the n-grams found anywhere, and the training records matched."""

    found_grams: dict[int, set[Gram]] = field(default_factory=lambda: defaultdict(set))
    records: dict[int, dict[int, Match]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, item: int, record: int, kind: Literal["exact", "ngram"], shared_ngrams: int = 0) -> None:
        match = self.records[item].setdefault(record, Match())
        if kind == "exact":
            match.kind = "exact"
        match.shared_ngrams += shared_ngrams


def leak_check(
    train: str,
    evals: list[str],
    n: int = 13,
    drop: str | None = None,
    layout: Layout | Literal["auto"] = "auto",
    min_words: int = 8,
    report: str | None = None,
) -> dict[str, Any]:
    """Find the eval items that ``train`` contains, by word n-grams and exact prompt matches; write the JSON report.

    Prints a summary; with ``drop``, also writes the training file without the records that leak an item.

    Args:
        train: The training data file (jsonl/json/parquet/csv) or hub dataset id.
        evals: Evaluation files whose items must not be in the training data (their layouts are recognised).
        n: Word n-gram length (13, as in the GPT-3 and Llama contamination analyses).
        drop: Write the training records that overlap no eval item to this file (its suffix picks the file type).
        layout: The training records' layout, or ``auto`` to recognise it.
        min_words: Items shorter than ``n`` words are matched whole down to this many words; shorter ones by exact
            match only.
        report: Where the JSON report goes (default: ``DROP.report.json``, else ``TRAIN.leak-check.json`` beside a
            local file, else leak-check.json).
    """
    if n < 1 or min_words < 1:
        raise UsageError(f"n and min_words must be at least 1, got n={n}, min_words={min_words}")
    if not evals:
        raise UsageError("leak_check needs at least one eval file")
    index = EvalIndex()
    eval_files = [index_eval_file(path, index, n, min_words) for path in evals]
    training = read_records(train, layout)
    overlaps = scan_training(training, index, n)
    summary: dict[str, Any] = {
        "command": "leak-check",
        "train": train,
        "layout": training.layout,
        "records": len(training.records),
        "n": n,
        "min_words": min_words,
        "evals": {eval_file.source: eval_counts(eval_file, index, overlaps) for eval_file in eval_files},
        "contaminated": [contaminated_item(number, index, overlaps, training) for number in sorted(overlaps.records)],
    }
    if drop:
        summary["dropped"] = drop_records(training, overlaps, drop)
    target = Path(report) if report else default_report(train, drop)
    write_report(summary, target)
    print(format_summary(summary))
    print(f"Report: {target}")
    return summary


def index_eval_file(path: str, index: EvalIndex, n: int, min_words: int) -> RecordFile:
    """Add every item of the eval file ``path`` to ``index``."""
    eval_file = read_records(path)
    for position, record in enumerate(eval_file.records):
        where = eval_file.where(position)
        text = record_text(record, eval_file.layout, where)
        turns = user_turns(record, eval_file.layout, text, where) or [text.whole]
        item_words = normalise(" ".join(turns)).split()
        number = len(index.items)
        grams: set[Gram] = set()
        if len(item_words) >= n:
            grams = set(word_grams(item_words, n))
            for gram in grams:
                index.by_gram[gram].append(number)
        elif len(item_words) >= min_words:
            grams = {tuple(item_words)}
            index.by_short_item[tuple(item_words)].append(number)
            index.short_lengths.add(len(item_words))
        if question := normalise(turns[0]):
            index.by_question[question].append(number)
        index.items.append(EvalItem(path, position, where, turns[0], len(grams)))
    return eval_file


def scan_training(training: RecordFile, index: EvalIndex, n: int) -> Overlaps:
    """Stream the training records past the eval index once."""
    overlaps = Overlaps()
    records = training.records
    for number, record in enumerate(tqdm(records, desc="Checking for leaks", disable=len(records) < 1000)):
        where = training.where(number)
        text = record_text(record, training.layout, where)
        for item, grams in items_sharing_grams(normalise(text.whole).split(), index, n).items():
            overlaps.found_grams[item] |= grams
            overlaps.add(item, number, "ngram", len(grams))
        prompts = {normalise(turn) for turn in user_turns(record, training.layout, text, where)}
        for prompt in prompts | {normalise(text.prompt)}:
            for item in index.by_question.get(prompt, ()):
                overlaps.add(item, number, "exact")
    return overlaps


def items_sharing_grams(record_words: list[str], index: EvalIndex, n: int) -> dict[int, set[Gram]]:
    """The eval items whose n-grams (or whole short items) occur in a training record's words, and which ones."""
    found: dict[int, set[Gram]] = defaultdict(set)
    for gram in index.by_gram.keys() & set(word_grams(record_words, n)):
        for item in index.by_gram[gram]:
            found[item].add(gram)
    for length in index.short_lengths:
        for gram in index.by_short_item.keys() & set(word_grams(record_words, length)):
            for item in index.by_short_item[gram]:
                found[item].add(gram)
    return found


def word_grams(sequence: list[str], n: int) -> Iterable[Gram]:
    return zip(*(sequence[start:] for start in range(n)), strict=False)


def user_turns(record: Mapping[str, Any], layout: Layout, text: RecordText, where: str) -> list[str]:
    """The user's turns of a record, in order (what it asks); empty for raw text. ``text`` is the record's
    `record_text`, which has checked its shape."""
    if layout == "turns":
        return list(record["turns"])
    if layout in ("messages", "sharegpt", "kto"):
        return message_user_turns(record["conversations" if layout == "sharegpt" else "messages"])
    if layout == "preference":
        prompt = record.get("prompt") if record.get("prompt") is not None else record.get("conversations")
        if prompt is None and isinstance(record.get("chosen"), str):  # hh-rlhf whole transcripts
            transcript = hh_transcript(record["chosen"], "chosen", where)
            return [turn["content"] for turn in transcript if turn["role"] == "user"]
        if prompt is None:
            raise DataError(f"{where}: missing field 'prompt' (or 'conversations')")
        if isinstance(prompt, str):
            return [prompt]
        return message_user_turns([prompt] if isinstance(prompt, Mapping) else prompt)
    return [text.prompt] if text.prompt else []


def message_user_turns(turns: list[Mapping[str, Any]]) -> list[str]:
    roles = (turn.get("role", turn.get("from")) for turn in turns)
    contents = (turn.get("content", turn.get("value")) for turn in turns)
    return [content for role, content in zip(roles, contents, strict=True) if role in USER_TURN_ROLES and content]


def eval_counts(eval_file: RecordFile, index: EvalIndex, overlaps: Overlaps) -> dict[str, Any]:
    numbers = [number for number, item in enumerate(index.items) if item.file == eval_file.source]
    contaminated = [number for number in numbers if number in overlaps.records]
    exact = [number for number in contaminated if item_kind(overlaps.records[number]) == "exact"]
    return {
        "layout": eval_file.layout,
        "items": len(numbers),
        "contaminated": len(contaminated),
        "exact": len(exact),
        "ngram_only": len(contaminated) - len(exact),
        "exact_match_only_checked": sum(index.items[number].grams == 0 for number in numbers),
    }


def item_kind(matches: Mapping[int, Match]) -> Literal["exact", "ngram"]:
    return "exact" if any(match.kind == "exact" for match in matches.values()) else "ngram"


def contaminated_item(number: int, index: EvalIndex, overlaps: Overlaps, training: RecordFile) -> dict[str, Any]:
    item, matches = index.items[number], overlaps.records[number]
    question = " ".join(item.question.split())
    listed = sorted(matches.items())[:LISTED_TRAINING_RECORDS]
    return {
        "eval": item.file,
        "item": item.index,
        "where": item.where,
        "snippet": question[:SNIPPET_CHARACTERS] + ("…" if len(question) > SNIPPET_CHARACTERS else ""),
        "kind": item_kind(matches),
        "ngram_share": round(len(overlaps.found_grams[number]) / item.grams, 4) if item.grams else None,
        "training_records": len(matches),
        "training": [{"record": record, "where": training.where(record)} | asdict(match) for record, match in listed],
    }


def drop_records(training: RecordFile, overlaps: Overlaps, output: str) -> dict[str, Any]:
    """Write the training records that overlap no eval item to ``output``; list the dropped ones."""
    dropped = sorted({record for matches in overlaps.records.values() for record in matches})
    dropped_set = set(dropped)
    kept = [number for number in range(len(training.records)) if number not in dropped_set]
    written = write_records(training.records.select(kept), output, like=training.source)
    return {
        "output": str(written),
        "kept": len(kept),
        "count": len(dropped),
        "records": [{"record": record, "where": training.where(record)} for record in dropped],
    }


def default_report(train: str, drop: str | None) -> Path:
    if drop:
        return report_path(drop)
    path = Path(train)
    return path.with_name(path.name + ".leak-check.json") if path.is_file() else Path("leak-check.json")


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"{summary['train']}: {summary['records']} training records ({summary['layout']}), {summary['n']}-grams"]
    for path, counts in summary["evals"].items():
        lines.append(
            f"  {path}: {counts['contaminated']} of {counts['items']} items contaminated "
            f"({counts['exact']} exact, {counts['ngram_only']} by n-grams only)"
        )
    if "dropped" in summary:
        dropped = summary["dropped"]
        lines.append(f"dropped {dropped['count']} training records; {dropped['kept']} kept in {dropped['output']}")
    return "\n".join(lines)

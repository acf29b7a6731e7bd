"""``lightning-ft data augment``: new records from old ones by rewording their prompt side, with EDA (`eda`) or
back-translation (`back_translation`).

Only the prompt side changes: the instruction of alpaca and dolly records (their ``input``/``context`` is the material
the answer is about: a swapped word there can make the kept answer wrong), user turns of chats, the prompt of
preference records, the question of qa records, MT-bench turns. Responses are never touched, so every answer stays the
correct answer to its reworded prompt.

The output holds every original unchanged, followed by its copies; originals and copies share one
``augment_group`` value (the original's ``file:line``, ``file: record N`` for other file types, or the group it
already had), so a later split keeps them on one side, and copies carry ``augmented_by`` (the method; ``null`` on
originals). A copy whose prompt side came out identical to its original's or to an earlier copy's is dropped, as is a
copy whose translation failed; the report counts both by reason.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from lightning_ft.data.sources import DataError
from lightning_ft.errors import UsageError
from lightning_ft.model.spec import DTypeName
from lightning_ft.options import check_option
from lightning_ft.prep.back_translation import ChatTranslator, Translator, back_translate, load_translator
from lightning_ft.prep.completions import EndpointCompleter, check_backend
from lightning_ft.prep.eda import (
    NEEDS_SYNONYMS,
    OPERATIONS,
    Operation,
    Synonyms,
    eda,
    synonyms_from_file,
    wordnet_synonyms,
)
from lightning_ft.prep.records import Layout, RecordFile, read_records, report_path, write_records, write_report

Method = Literal["eda", "back_translation"]
AUGMENTABLE: tuple[Layout, ...] = ("alpaca", "dolly", "messages", "sharegpt", "kto", "preference", "qa", "turns")
USER_ROLES = ("user", "human")
Slot = tuple[str | int, ...]
Rewrites = list[list[list[str] | None]]  # per record, per copy: its new prompt texts, or None when it failed


def augment(
    source: str,
    output: str,
    method: Method = "eda",
    copies: int = 1,
    alpha: float = 0.1,
    operations: list[Operation] | None = None,
    synonyms: str | None = None,
    translate_model: str | None = None,
    back_model: str | None = None,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    pivot_language: str = "French",
    source_language: str = "English",
    layout: Layout | Literal["auto"] = "auto",
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    timeout: float = 60.0,
    dtype: DTypeName = "float32",
    seed: int = 0,
    report: str | None = None,
) -> dict[str, Any]:
    """Write every record of ``source`` and ``copies`` reworded copies of it to ``output``.

    Args:
        source: Records in a layout with a prompt side (jsonl/json/parquet/csv file or hub dataset id).
        output: Where the records go, in ``source``'s layout and ``output``'s file type.
        method: ``eda`` (word-level edits) or ``back_translation``.
        copies: New records per original.
        alpha: EDA's rate: ``max(1, int(alpha * words))`` edits of a text, or each word deleted with probability
            ``alpha``.
        operations: The EDA operations each copy picks one of at random (default: all four).
        synonyms: A JSON ``{word: [synonym, ...]}`` or TSV ``word<TAB>synonym...`` file for EDA (default: WordNet
            through nltk, which needs its corpus installed).
        translate_model: The model that translates into ``pivot_language`` (encoder-decoder or chat model).
        back_model: The model that translates back (default: ``translate_model``).
        endpoint: An OpenAI-compatible API root that translates both ways, instead of local models.
        endpoint_model: The model name the endpoint serves.
        api_key_env: Environment variable holding the endpoint's API key.
        pivot_language: The language translated through.
        source_language: The records' language, translated back into.
        layout: The records' layout, or ``auto``.
        temperature: Translation sampling temperature (0: greedy; more than one copy needs it above 0).
        top_p: Nucleus of the translation sampling.
        max_new_tokens: Longest translation.
        batch_size: Texts a local model translates together.
        timeout: Seconds to wait for one endpoint reply.
        dtype: Local models' weights' dtype.
        seed: Seeds the edits and the sampling.
        report: Where the JSON report goes (default ``<output>.report.json``).

    Returns:
        The report: records read and written, copies written and dropped per reason, EDA operations used.
    """
    started = time.perf_counter()
    check_option("method", method, Method)
    if copies < 1:
        raise UsageError(f"copies={copies}: give at least 1 copy per record")
    file = read_records(source, layout)
    if file.layout not in AUGMENTABLE:
        valid = ", ".join(AUGMENTABLE)
        raise DataError(f"{source}: {file.layout!r} records have no prompt side to reword; augment reads {valid}")
    slots = [prompt_slots(record, file.layout, file.where(index)) for index, record in enumerate(file.records)]
    texts = [[str(value_at(record, slot)) for slot in slots[index]] for index, record in enumerate(file.records)]
    dropped: Counter[str] = Counter()
    settings: dict[str, Any] = {"source": source, "layout": file.layout, "method": method, "copies": copies}
    if method == "eda":
        chosen = list(operations or OPERATIONS)
        for operation in chosen:
            check_option("EDA operation", operation, OPERATIONS)
        synonym_source = eda_synonyms(synonyms, chosen)
        used: Counter[str] = Counter()
        rewrites = eda_rewrites(texts, copies, chosen, alpha, synonym_source, seed, used)
        wordnet = None if NEEDS_SYNONYMS.isdisjoint(chosen) else "wordnet"
        settings |= {"alpha": alpha, "operations": chosen, "synonyms": synonyms or wordnet}
        settings["operations_used"] = dict(sorted(used.items()))
    else:
        if copies > 1 and temperature == 0:
            raise UsageError(f"copies={copies} at temperature 0 would translate every copy alike: set temperature > 0")
        sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        forward, back = translators(
            translate_model, back_model, endpoint, endpoint_model, api_key_env, timeout, dtype, batch_size, **sampling
        )
        rewrites = back_translation_rewrites(
            texts, copies, forward, back, pivot_language, source_language, seed, dropped
        )
        settings |= {"translate_model": translate_model, "back_model": back_model or translate_model}
        settings |= {"endpoint": endpoint, "endpoint_model": endpoint_model, "pivot_language": pivot_language}
        settings |= {"source_language": source_language, **sampling}
    records = assembled(file, slots, texts, rewrites, method, dropped)
    written = write_records(records, output, like=source)
    summary = {
        **settings,
        "output": str(written),
        "seed": seed,
        "originals": len(file.records),
        "copies_written": len(records) - len(file.records),
        "records_written": len(records),
        "dropped_copies": dict(sorted(dropped.items())),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(summary, report or report_path(written))
    return summary


def prompt_slots(record: Mapping[str, Any], layout: Layout, where: str) -> list[Slot]:
    """Where a record's rewordable prompt text is: paths of keys and list positions to non-empty strings."""
    if layout in ("alpaca", "dolly"):
        slots: list[Slot] = [("instruction",)]
    elif layout in ("messages", "kto", "sharegpt"):
        slots = user_turn_slots(record, "conversations" if layout == "sharegpt" else "messages", where)
    elif layout == "preference":
        field = "prompt" if record.get("prompt") is not None else "conversations"
        slots = [(field,)] if isinstance(record.get(field), str) else user_turn_slots(record, field, where)
    elif layout == "qa":
        slots = [("question",)]
    else:
        slots = [("turns", number) for number in range(len(record.get("turns") or []))]
    return [slot for slot in slots if isinstance(value_at(record, slot), str) and value_at(record, slot).strip()]


def user_turn_slots(record: Mapping[str, Any], field: str, where: str) -> list[Slot]:
    turns = record.get(field)
    if turns is None:
        return []
    if not isinstance(turns, list) or not all(isinstance(turn, Mapping) for turn in turns):
        raise DataError(f"{where}: field {field!r} must be a list of turns")
    slots: list[Slot] = []
    for number, turn in enumerate(turns):
        role, content = ("role", "content") if turn.get("role") is not None else ("from", "value")
        if turn.get(role) in USER_ROLES:
            slots.append((field, number, content))
    return slots


def value_at(record: Any, slot: Slot) -> Any:
    for key in slot:
        record = record[key]
    return record


def with_values(record: Mapping[str, Any], slots: Sequence[Slot], values: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``record`` with ``values`` at ``slots``."""
    edited = copy.deepcopy(dict(record))
    for slot, value in zip(slots, values, strict=True):
        value_at(edited, slot[:-1])[slot[-1]] = value
    return edited


def eda_synonyms(synonyms: str | None, operations: Sequence[str]) -> Synonyms:
    """The synonyms EDA's operations need: the file's, or WordNet's; none when no operation uses them."""
    if synonyms is not None:
        return synonyms_from_file(synonyms)
    if NEEDS_SYNONYMS.isdisjoint(operations):
        return lambda word: []
    return wordnet_synonyms()


def eda_rewrites(
    texts: list[list[str]],
    copies: int,
    operations: list[Operation],
    alpha: float,
    synonyms: Synonyms,
    seed: int,
    used: Counter[str],
) -> Rewrites:
    """Each copy of each record picks one operation and applies it to every prompt text; the random draws depend on
    ``seed``, the record's position and the copy's number only."""
    rewrites: Rewrites = []
    for index, record_texts in enumerate(tqdm(texts, desc="eda", unit="record")):
        rewrites.append([])
        for number in range(copies):
            rng = random.Random(f"{seed}:{index}:{number}")
            operation = rng.choice(operations)
            used[operation] += 1
            rewrites[-1].append([eda(text, operation, alpha, synonyms, rng) for text in record_texts])
    return rewrites


def translators(
    translate_model: str | None,
    back_model: str | None,
    endpoint: str | None,
    endpoint_model: str | None,
    api_key_env: str,
    timeout: float,
    dtype: DTypeName,
    batch_size: int,
    **sampling: Any,
) -> tuple[Translator, Translator]:
    """The translators into the pivot language and back: the endpoint both ways, or local models."""
    check_backend(translate_model, endpoint, endpoint_model, model_name="translate_model")
    if endpoint is not None:
        if back_model is not None:
            raise UsageError(
                "`back_model` goes with `translate_model`; an endpoint translates both ways: leave it unset"
            )
        sampling["max_tokens"] = sampling.pop("max_new_tokens")
        both = ChatTranslator(EndpointCompleter(endpoint, str(endpoint_model), api_key_env, timeout, **sampling))
        return both, both
    forward = load_translator(str(translate_model), dtype, batch_size=batch_size, **sampling)
    if back_model is None or back_model == translate_model:
        return forward, forward
    return forward, load_translator(back_model, dtype, batch_size=batch_size, **sampling)


def back_translation_rewrites(
    texts: list[list[str]],
    copies: int,
    forward: Translator,
    back: Translator,
    pivot_language: str,
    source_language: str,
    seed: int,
    dropped: Counter[str],
) -> Rewrites:
    """Every prompt text of every record back-translated once per copy (all texts of a copy in one batch); a copy
    with a failed text is ``None``, counted by the first failure's reason."""
    flat = [text for record_texts in texts for text in record_texts]
    rewrites: Rewrites = [[] for _ in texts]
    for number in range(copies):
        results = iter(back_translate(flat, forward, back, pivot_language, source_language, seed + 7919 * number))
        for index, record_texts in enumerate(texts):
            translated = [next(results) for _ in record_texts]
            failures = [result.failure for result in translated if result.text is None]
            if failures:
                dropped[str(failures[0])] += 1
            rewrites[index].append(None if failures else [str(result.text) for result in translated])
    return rewrites


def assembled(
    file: RecordFile,
    slots: list[list[Slot]],
    texts: list[list[str]],
    rewrites: Rewrites,
    method: str,
    dropped: Counter[str],
) -> list[dict[str, Any]]:
    """Each original (with its ``augment_group``) followed by its distinct, changed copies."""
    name = Path(file.source).name
    records = []
    for index, record in enumerate(file.records):
        group = record.get("augment_group") or (
            f"{name}:{file.lines[index]}" if file.lines else f"{name}: record {index}"
        )
        # every record carries both fields, so a file type with one set of columns keeps them
        records.append({**record, "augment_group": group, "augmented_by": record.get("augmented_by")})
        if not slots[index]:
            dropped["no_prompt_text"] += len(rewrites[index])
            continue
        seen = {tuple(texts[index])}
        for rewrite in rewrites[index]:
            if rewrite is None:
                continue
            if tuple(rewrite) in seen:
                dropped["unchanged" if rewrite == texts[index] else "duplicate"] += 1
                continue
            seen.add(tuple(rewrite))
            records.append(
                {**with_values(record, slots[index], rewrite), "augment_group": group, "augmented_by": method}
            )
    return records

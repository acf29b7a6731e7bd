"""Split one data file into train / val / test files, seeded, keeping groups whole and strata in proportion.

- **Sizes**: each stratum (the whole file when not stratified) gets ``round``ed split sizes by the largest-remainder
  method: floors of ``records × fraction``, then the records left over go to the largest fractional parts (ties:
  train, val, test). Without groups the sizes are exact; small strata may give a small split nothing.
- **Groups** (``group_by``, and ``augment_group``, which `augment` writes on an original and its augmented copies):
  records sharing a value of either field form one unit that never spans two splits. Units are shuffled (seeded) and
  each goes to the split furthest below its size, relative to that size, so sizes are met as closely as whole groups
  allow; the report gives the sizes obtained.
- **Strata** (``stratify_by``): the split sizes are kept per stratum. A group's stratum is its records' most common
  value (ties: the first in sorted order); the report counts groups whose records disagree.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from lightning_ft.data.sources import FILE_BUILDERS, DataError
from lightning_ft.errors import UsageError
from lightning_ft.prep.records import Layout, RecordFile, read_records, write_records, write_report

SPLITS = ("train", "val", "test")
AUGMENT_GROUP = "augment_group"  # `augment` writes one value on an original and on each of its augmented copies


def split(
    source: str,
    output_dir: str,
    val: float = 0.05,
    test: float = 0.05,
    group_by: str | None = None,
    stratify_by: str | None = None,
    seed: int = 0,
    layout: Layout | Literal["auto"] = "auto",
    report: str | None = None,
) -> dict[str, Any]:
    """Split ``source`` into train, val and test files in ``output_dir``; print a summary and write the JSON report.

    The files keep the input's file type and its records unchanged.

    Args:
        source: A data file (jsonl/json/parquet/csv) or hub dataset id; records of any shape.
        output_dir: Directory for ``train``, ``val`` and ``test`` (a split with fraction 0 writes no file).
        val: Fraction of the records for validation.
        test: Fraction of the records for test.
        group_by: Field (a dotted path reaches into objects, e.g. ``prompt.message_id``) whose records stay in one
            split, such as a conversation tree id. Records with an ``augment_group`` field are grouped by it too.
        stratify_by: Field (dotted path allowed) whose values each keep the split fractions.
        seed: Seed of the shuffle: the same seed gives the same split.
        layout: The records' layout, or ``auto`` (any shape is accepted: records move whole).
        report: Where the JSON report goes (default: ``OUTPUT_DIR/split.report.json``).
    """
    fractions = split_fractions(val, test)
    records = read_records(source, layout, any_shape=True)
    units, grouped_by = record_units(records, group_by)
    strata, mixed_groups = stratum_of_units(records, units, stratify_by)
    assignment = assign_units(units, strata, fractions, seed)
    split_of_record = [assignment[unit] for unit in units]
    suffix = records.suffix if records.suffix in FILE_BUILDERS else ".jsonl"
    files = {}
    for name in SPLITS:
        chosen = [record for record, split_name in enumerate(split_of_record) if split_name == name]
        if chosen:
            files[name] = str(write_records(records.records.select(chosen), Path(output_dir) / f"{name}{suffix}"))
    summary = {"command": "split", "source": source, "layout": records.layout, "records": len(units), "seed": seed}
    summary["splits"] = split_counts(units, split_of_record, fractions, files)
    if grouped_by:
        summary |= {"grouped_by": grouped_by, "groups": len(assignment)}
    if stratify_by:
        summary |= {"stratify_by": stratify_by, "strata": stratum_counts(units, split_of_record, strata)}
    if stratify_by and grouped_by:
        summary["groups_mixing_strata"] = mixed_groups
    target = Path(report) if report else Path(output_dir) / "split.report.json"
    write_report(summary, target)
    print(format_summary(summary))
    print(f"Report: {target}")
    return summary


def split_fractions(val: float, test: float) -> dict[str, Fraction]:
    """The requested fractions as exact decimals (0.1 is 1/10, so sizes do not depend on float rounding)."""
    if not (0 <= val < 1 and 0 <= test < 1) or val + test >= 1:
        raise UsageError(f"val and test must each be in [0, 1) with val + test < 1, got val={val}, test={test}")
    val_fraction, test_fraction = Fraction(repr(float(val))), Fraction(repr(float(test)))
    return {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}


def record_units(records: RecordFile, group_by: str | None) -> tuple[list[int], list[str]]:
    """Each record's unit, named by its first record, and the fields grouped by: records sharing a value of
    ``group_by`` or ``augment_group`` are one unit, joined transitively (union-find); otherwise each record alone."""
    fields = [group_by] if group_by else []
    if AUGMENT_GROUP in records.records.column_names and AUGMENT_GROUP not in fields:
        fields.append(AUGMENT_GROUP)
    parent = list(range(len(records.records)))

    def root(record: int) -> int:
        while parent[record] != record:
            parent[record] = parent[parent[record]]
            record = parent[record]
        return record

    for field in fields:
        first_with_value: dict[str, int] = {}
        for record, value in enumerate(field_values(records, field, required=field == group_by)):
            if value is not None:
                parent[root(record)] = root(first_with_value.setdefault(value, record))
    first_of_root: dict[int, int] = {}
    return [first_of_root.setdefault(root(record), record) for record in range(len(parent))], fields


def field_values(records: RecordFile, field: str, required: bool) -> list[str | None]:
    """Each record's value of ``field`` (dotted path) as a key string; a missing value names the record."""
    columns = records.records.column_names
    top = field if field in columns else field.split(".")[0]
    if top not in columns:
        raise DataError(f"{records.where(0)}: missing field {field!r} (the records have {sorted(columns)})")
    column = records.records.select_columns([top])
    values = []
    for index, record in enumerate(tqdm(column, desc=f"Reading {field}", disable=len(column) < 1000)):
        value = record[field] if field == top else dotted(record, field)
        if value is None and required:
            raise DataError(f"{records.where(index)}: missing field {field!r}")
        values.append(value if value is None or isinstance(value, str) else json.dumps(value, sort_keys=True))
    return values


def dotted(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def stratum_of_units(records: RecordFile, units: list[int], stratify_by: str | None) -> tuple[dict[int, str], int]:
    """Each unit's stratum (its records' most common value; one stratum ``""`` when not stratified) and how many
    units mix strata."""
    if not stratify_by:
        return dict.fromkeys(units, ""), 0
    values_of_unit: dict[int, Counter[str]] = defaultdict(Counter)
    for unit, value in zip(units, field_values(records, stratify_by, required=True), strict=True):
        values_of_unit[unit][value] += 1
    strata = {unit: min(counts, key=lambda value: (-counts[value], value)) for unit, counts in values_of_unit.items()}
    return strata, sum(len(counts) > 1 for counts in values_of_unit.values())


def assign_units(units: list[int], strata: dict[int, str], fractions: dict[str, Fraction], seed: int) -> dict[int, str]:
    """Each unit's split: per stratum, shuffled units go to the split furthest below its size."""
    records_of_unit = Counter(units)
    units_of_stratum: dict[str, list[int]] = defaultdict(list)
    for unit in records_of_unit:
        units_of_stratum[strata[unit]].append(unit)
    rng = random.Random(seed)
    assignment = {}
    for stratum in sorted(units_of_stratum):
        stratum_units = units_of_stratum[stratum]
        rng.shuffle(stratum_units)
        sizes = largest_remainder_sizes(sum(records_of_unit[unit] for unit in stratum_units), fractions)
        filled = dict.fromkeys(SPLITS, 0)
        for unit in stratum_units:
            name = max((name for name in SPLITS if sizes[name]), key=lambda name: 1 - filled[name] / sizes[name])
            assignment[unit] = name
            filled[name] += records_of_unit[unit]
    return assignment


def largest_remainder_sizes(total: int, fractions: dict[str, Fraction]) -> dict[str, int]:
    """Split sizes summing to ``total``: floors of the exact shares, the rest to the largest remainders (ties: train,
    val, test). E.g. 156 records at 0.8 / 0.1 / 0.1: 124.8 / 15.6 / 15.6 -> 124 / 15 / 15, two left -> 125 / 16 / 15."""
    shares = {name: total * fractions[name] for name in SPLITS}
    sizes = {name: int(share) for name, share in shares.items()}
    by_remainder = sorted(SPLITS, key=lambda name: -(shares[name] - sizes[name]))
    for name in by_remainder[: total - sum(sizes.values())]:
        sizes[name] += 1
    return sizes


def split_counts(
    units: list[int], split_of_record: list[str], fractions: dict[str, Fraction], files: dict[str, str]
) -> dict[str, dict[str, Any]]:
    records, groups = Counter(split_of_record), Counter(dict(zip(units, split_of_record, strict=True)).values())
    return {
        name: {
            "file": files.get(name),
            "records": records[name],
            "groups": groups[name],
            "fraction_requested": float(fractions[name]),
            "fraction_obtained": round(records[name] / len(units), 4),
        }
        for name in SPLITS
    }


def stratum_counts(units: list[int], split_of_record: list[str], strata: dict[int, str]) -> dict[str, dict[str, int]]:
    """Records per stratum and split; a group's records count under the group's stratum."""
    per_stratum: dict[str, Counter[str]] = defaultdict(Counter)
    for unit, name in zip(units, split_of_record, strict=True):
        per_stratum[strata[unit]][name] += 1
    return {
        value: {"records": records.total()} | {name: records[name] for name in SPLITS}
        for value, records in sorted(per_stratum.items())
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"{summary['source']}: {summary['records']} records ({summary['layout']})"]
    for name, split_counts in summary["splits"].items():
        if split_counts["file"]:
            lines.append(
                f"  {name}: {split_counts['records']} records ({split_counts['fraction_obtained']:.2%}, "
                f"requested {split_counts['fraction_requested']:.2%}) -> {split_counts['file']}"
            )
    return "\n".join(lines)

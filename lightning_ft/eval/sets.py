"""The evaluation sets of a run: data files (or hub ids) as they are, or the validation data of a `fit` recipe, so the
YAML a model was trained with also says what it is evaluated on."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_ft.errors import UsageError
from lightning_ft.eval.items import EvalItem, ItemFormat, items_from_records, load_items

RECIPE_SUFFIXES = (".yaml", ".yml")
RECIPE_FORMATS = {"InstructionData": ("alpaca", "dolly"), "ChatData": ("messages", "sharegpt")}


@dataclass
class EvalSet:
    """Items evaluated together and reported under ``name``."""

    name: str
    items: list[EvalItem]


def eval_sets(
    data: list[str],
    format: ItemFormat = "auto",
    fields: dict[str, str] | None = None,
    system_prompt: str | None = None,
    limit: int | None = None,
) -> list[EvalSet]:
    """One set per data file; a recipe (``.yaml``) gives its validation set and each of its ``val_extra`` sets."""
    sets: list[EvalSet] = []
    for source in data:
        if Path(source).suffix.lower() in RECIPE_SUFFIXES:
            sets += recipe_sets(source, limit)
        else:
            sets.append(EvalSet(Path(source).stem, load_items(source, format, fields, system_prompt, limit)))
    names = [entry.name for entry in sets]
    for index, entry in enumerate(sets):  # two files called val.jsonl in different folders
        if names.count(entry.name) > 1:
            entry.name = f"{entry.name}_{index + 1}"
    return sets


def recipe_sets(recipe: str, limit: int | None = None) -> list[EvalSet]:
    """The validation data of a `lightning-ft fit` recipe, read with the recipe's own format, fields and system
    prompt: its ``val`` file, or the records ``val_fraction`` holds out of ``train`` (the same seeded split as
    training), plus every ``val_extra`` set."""
    config = yaml.safe_load(Path(recipe).read_text()) or {}
    data = config.get("data") or {}
    class_path, options = data.get("class_path", ""), dict(data.get("init_args") or {})
    kind = class_path.rsplit(".", 1)[-1]
    if kind not in RECIPE_FORMATS:
        raise UsageError(
            f"{recipe}: data class {class_path or '(none)'} has no evaluation items; recipes of "
            f"{', '.join(sorted(RECIPE_FORMATS))} can be evaluated, or pass the data file itself"
        )
    module_class = getattr(importlib.import_module(class_path.rsplit(".", 1)[0]), kind)
    read: dict[str, Any] = {key: options[key] for key in ("format", "fields", "system_prompt") if key in options}
    format = read.get("format", RECIPE_FORMATS[kind][0])
    module = module_class(**{key: value for key, value in options.items() if key != "val_extra"})
    val_parts = [part for part in module._raw_parts() if part.split == "val"]
    if not val_parts and not options.get("val_extra"):
        raise UsageError(f"{recipe}: the recipe has no validation data (set data.init_args.val or val_fraction)")
    sets = []
    if val_parts:
        items = []
        for part in val_parts:  # a mix holds out records of each source
            if module.kind_of(part.source) == "text":
                continue
            chosen = range(len(part.records) if limit is None else min(limit - len(items), len(part.records)))
            places = [part.places(part.numbers[i]) for i in chosen]
            items += items_from_records(
                part.records.select(chosen), places, format, read.get("fields"), read.get("system_prompt")
            )
        sets.append(EvalSet("val", items))
    for name, path in (options.get("val_extra") or {}).items():
        sets.append(EvalSet(name, load_items(path, format, read.get("fields"), read.get("system_prompt"), limit)))
    return sets

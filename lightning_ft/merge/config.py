"""Reading a MergeKit YAML with MergeKit's own pydantic models, with errors that name the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mergekit.common import ModelReference
from mergekit.config import InputModelDefinition, MergeConfiguration
from mergekit.merge_methods import registered_methods
from pydantic import BaseModel, ValidationError

from lightning_ft.errors import UsageError


class MergeConfigError(UsageError):
    """The merge YAML cannot be used; the message is one line naming the key at fault."""


def merge_method_names() -> list[str]:
    """Every merge method MergeKit registers (``linear``, ``slerp``, ``ties``, ``dare_ties``, ...), sorted."""
    return sorted(method.spec.name for method in registered_methods())


def read_merge_config(path: str | Path) -> tuple[MergeConfiguration, str]:
    """The validated configuration of a MergeKit YAML file, and the file's text (kept for the model card).

    Raises:
        MergeConfigError: The file is not YAML, has an unknown key or merge method, or MergeKit rejects a value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise MergeConfigError(f"{path}: not UTF-8 text (byte offset {error.start})") from None
    except OSError as error:
        raise MergeConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise MergeConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from error
    if not isinstance(data, dict):
        raise MergeConfigError(f"{path}: expected a mapping with merge_method and models, got {type(data).__name__}")
    _check_keys(data, MergeConfiguration, "", path)
    for index, model in enumerate(data.get("models") or []):
        if isinstance(model, dict):
            _check_keys(model, InputModelDefinition, f"models[{index}].", path)
    method = data.get("merge_method")
    if method is not None and method not in merge_method_names():
        raise MergeConfigError(
            f"{path}: unknown merge_method {method!r}; valid merge methods: {', '.join(merge_method_names())}"
        )
    try:
        return MergeConfiguration.model_validate(data), text
    except ValidationError as error:
        raise MergeConfigError(f"{path}: {describe_validation_error(error)}") from error
    except RuntimeError as error:  # MergeKit's model validators raise these (e.g. both models and slices given)
        raise MergeConfigError(f"{path}: {error}") from error


def _check_keys(data: dict[str, Any], model: type[BaseModel], prefix: str, path: str | Path) -> None:
    unknown = sorted(map(str, set(data) - set(model.model_fields)))
    if unknown:
        raise MergeConfigError(
            f"{path}: unknown key {prefix}{unknown[0]}; valid keys{' of ' + prefix[:-1] if prefix else ''}: "
            + ", ".join(model.model_fields)
        )


def describe_validation_error(error: ValidationError) -> str:
    """One line: the key at fault (``models[1].model``) and what is wrong with it. A value that matches none of a
    union's types yields one pydantic error per type; they share the key, which is what the user needs."""
    errors = error.errors()
    locations = [_key_path(item["loc"]) for item in errors]
    key = _common_prefix(locations)
    messages = sorted({item["msg"] for item in errors})
    detail = messages[0] if len(messages) == 1 else f"invalid value {errors[0].get('input')!r}"
    return f"{key or 'configuration'}: {detail}"


def _key_path(location: tuple[str | int, ...]) -> list[str]:
    """pydantic's location as the keys of the YAML file; union branch names (``float``, ``list[...]``) dropped."""
    keys: list[str] = []
    for part in location:
        if isinstance(part, int):
            keys.append(f"[{part}]")
        elif part.isidentifier() and not part[0].isupper() and part not in ("float", "int", "str", "bool"):
            keys.append(part)
        else:
            break
    return keys


def _common_prefix(paths: list[list[str]]) -> str:
    prefix: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return "".join(part if part.startswith("[") or not index else f".{part}" for index, part in enumerate(prefix))


def replace_models(value: Any, replacements: dict[ModelReference, ModelReference]) -> Any:
    """``value`` (a MergeKit configuration or any part of it) with every model reference in ``replacements``
    swapped for its replacement, wherever it appears (base_model, models, slices, modules, tokenizer sources)."""
    if isinstance(value, ModelReference):
        return replacements.get(value, value)
    if isinstance(value, BaseModel):
        changes = {}
        for name in type(value).model_fields:
            current = getattr(value, name)
            replaced = replace_models(current, replacements)
            if replaced is not current:
                changes[name] = replaced
        return value.model_copy(update=changes) if changes else value
    if isinstance(value, list | tuple):
        items = [replace_models(item, replacements) for item in value]
        return type(value)(items) if any(new is not old for new, old in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        items = {key: replace_models(item, replacements) for key, item in value.items()}
        return items if any(items[key] is not value[key] for key in value) else value
    return value

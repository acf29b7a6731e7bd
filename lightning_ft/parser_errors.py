"""jsonargparse's validation errors reduced to the failing key and the reason: its message nests every union member
it tried (``Parser key "data": Does not validate against any of the Union subtypes ... Problem with given
class_path ...: Parser key "batch_size": Expected a <class 'int'>. Got value: abc``), which is
``data.batch_size: expected int, got 'abc'`` to a user."""

from __future__ import annotations

import importlib
import inspect
import re

KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
CLASS_PATH = re.compile(r"^Problem with given class_path '([^']+)':\s*(.*)$")
UNKNOWN_OPTION = re.compile(r"^Option '([^']+)' is not accepted")
UNRECOGNIZED = re.compile(r"^Unrecognized arguments: (.*)$")
EXPECTED = re.compile(r"^Expected a (.+?)\. Got value: (.*)$")
TYPE_NAME = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")
NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "Not a valid subclass of",
    "Subclass types expect one of:",
    "Not a subclass of",
)


def reduce_parser_error(message: str) -> str:
    """The failing key (dotted, as typed on the command line) and the first reason given for it."""
    keys: list[str] = []
    class_path: str | None = None
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line:
            continue
        if match := KEY.match(line):
            keys.append(match.group(1))
            line = match.group(2)
        if match := CLASS_PATH.match(line):
            class_path = match.group(1)
            line = match.group(2)
        if not line or line.startswith(NOISE):
            continue
        if match := UNKNOWN_OPTION.match(line):
            keys.append(match.group(1))
            line = "no such option" + _options_of(class_path)
        key = ".".join(keys)
        return f"{key}: {_reason(line)}" if key else _reason(line)
    return " ".join(message.split())


def _reason(line: str) -> str:
    if match := EXPECTED.match(line):
        expected = TYPE_NAME.sub(r"\1", match.group(1))
        return f"expected {expected}, got {match.group(2)!r}"
    return line


def _options_of(class_path: str | None) -> str:
    if class_path is None:
        return ""
    module_name, _, name = class_path.rpartition(".")
    try:
        names = _init_parameters(getattr(importlib.import_module(module_name), name))
    except (ImportError, AttributeError, ValueError, TypeError):
        return f" of {class_path}"
    return f" of {name}; its options: {', '.join(names)}"


def _init_parameters(cls: type) -> list[str]:
    """A class's constructor parameters, following ``**kwargs`` up to the base classes as jsonargparse does."""
    names: list[str] = []
    for klass in inspect.getmro(cls):
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names += [p.name for p in parameters if p.kind in named and p.name not in names]
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return names

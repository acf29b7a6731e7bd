"""`check_option`: the one check of a string option against its allowed values (a ``Literal`` type or a
collection), with an error that names the option, the value given and every valid one."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Literal, get_args, get_origin

from lightning_ft.errors import UsageError


def valid_values(choices: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` type allows, or the members of a collection (a dict's keys), in order."""
    return get_args(choices) if get_origin(choices) is Literal else tuple(choices)


def check_option(name: str, value: Any, choices: Any) -> None:
    """Raise ``UsageError("Unknown <name> <value>; valid: a, b, ...")`` unless ``value`` is one of ``choices``."""
    valid = valid_values(choices)
    if value not in valid:
        raise UsageError(f"Unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def check_keys(name: str, keys: Iterable[str], valid: Collection[str]) -> None:
    """Raise ``UsageError("Unknown <name> [...]; valid: ...")`` for keys outside ``valid``."""
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise UsageError(f"Unknown {name} {unknown}; valid: {', '.join(sorted(valid))}")

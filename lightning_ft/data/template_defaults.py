"""Chat template keyword arguments (``enable_thinking``, ...) written into the template as its defaults."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lightning_ft.errors import UsageError


def with_template_defaults(template: str, defaults: Mapping[str, Any]) -> str:
    """``template`` with ``defaults`` for its keyword arguments (e.g. ``{"enable_thinking": False}``) written into it:
    each applies unless the caller passes that argument. The template alone then renders as training did, in
    ``lightning-ft chat`` and in any other tool that loads the export. Idempotent.

    Args:
        template: Jinja chat template source.
        defaults: Argument name -> value (booleans, numbers, strings, None, and lists or dicts of them).
    """
    header = ""
    for name, value in defaults.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(
                f"data.chat_template_kwargs: {name!r} is not a valid template variable name (letters, digits, _)"
            )
        header += f"{{%- if {name} is not defined %}}{{%- set {name} = {jinja_literal(value)} %}}{{%- endif %}}"
    return template if template.startswith(header) else header + template


def jinja_literal(value: Any) -> str:
    """``value`` as a Jinja expression."""
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jinja_literal(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{jinja_literal(str(key))}: {jinja_literal(item)}" for key, item in value.items()) + "}"
    raise UsageError(
        f"data.chat_template_kwargs: cannot write {value!r} ({type(value).__name__}) into a template; give "
        "booleans, numbers, strings, null, or lists and mappings of them"
    )

"""Every command's ``--help``, built by `tools/build_help.py` and shipped in ``lightning_ft/help/``, so the first
``lightning-ft fit --help`` after an install answers without importing torch and Lightning (about 10 s on 2 cores).

A shipped text describes this package's options exactly when it was built from these very sources (the stamp's
``sources``). Library versions and the Python minor version change only what libraries contribute (Lightning's
`Trainer` options, argparse's layout): such a text is still shown, with a note, while the exact one is built in the
background for the next call. Built from other sources (a changed checkout), it is not used at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HELP_DIR = Path(__file__).parent / "help"
STAMP_FILE = "stamp.json"
# The libraries whose signatures, docstrings or layout appear in some command's help.
LIBRARIES = ("lightning", "jsonargparse", "docstring-parser", "typeshed-client", "transformers", "peft", "torch")


@dataclass(frozen=True)
class ShippedHelp:
    text: str
    differences: tuple[str, ...]  # "lightning 2.6.6 (installed: 2.7.0)"; empty when built for this installation


def help_name(command: list[str]) -> str:
    """``["data", "clean"]`` -> ``"data_clean"``: the file name (without ``.txt``) of a command's help."""
    return "_".join(command)


def stamp() -> dict[str, Any]:
    """What a help text depends on: this package's sources (contents), the Python minor version and the versions of
    `LIBRARIES` (``None`` where one is not installed)."""
    package = Path(__file__).parent
    sources = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        sources.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {
        "sources": sources.hexdigest(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "libraries": {library: installed_version(library) for library in LIBRARIES},
    }


def installed_version(distribution: str) -> str | None:
    with contextlib.suppress(PackageNotFoundError):
        return version(distribution)
    return None


def shipped_help(command: list[str], directory: Path | None = None) -> ShippedHelp | None:
    """The shipped help of ``command`` if it was built from these sources, else ``None``."""
    directory = directory or HELP_DIR
    path = directory / f"{help_name(command)}.txt"
    try:
        built_for = json.loads((directory / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    installed = stamp()
    if built_for.get("sources") != installed["sources"] or not path.is_file():
        return None
    return ShippedHelp(path.read_text(), differences(built_for, installed))


def differences(built_for: dict[str, Any], installed: dict[str, Any]) -> tuple[str, ...]:
    found = []
    if built_for.get("python") != installed["python"]:
        found.append(f"Python {built_for.get('python')} (installed: {installed['python']})")
    libraries = built_for.get("libraries", {})
    for library, present in installed["libraries"].items():
        if libraries.get(library) != present:
            found.append(f"{library} {libraries.get(library)} (installed: {present})")
    return tuple(found)


def commands_with_help() -> list[list[str]]:
    """Every command whose help is shipped: each of the launcher's commands and each data tool."""
    from lightning_ft.commands import DATA_COMMANDS
    from lightning_ft.launcher import COMMANDS

    return [[name] for name in COMMANDS] + [["data", tool] for tool in DATA_COMMANDS]


def help_process(command: list[str]) -> list[str]:
    """The command line of a fresh process printing ``command``'s help."""
    return [sys.executable, "-m", "lightning_ft", *command, "--help"]


def build_help(command: list[str], cache: Path) -> str:
    """``lightning-ft COMMAND --help`` as a fresh process prints it from the parser (80 columns, caching under
    ``cache``): what a shipped text must equal."""
    from lightning_ft.environment import BUILD_HELP_ENVIRONMENT, CACHE_ENVIRONMENT

    environment = {**os.environ, "COLUMNS": "80", CACHE_ENVIRONMENT: str(cache), BUILD_HELP_ENVIRONMENT: "1"}
    result = subprocess.run(
        help_process(command),
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"lightning-ft {' '.join(command)} --help failed ({result.returncode}): {result.stderr}")
    return result.stdout

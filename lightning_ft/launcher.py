"""The `lightning-ft` entry point: answers ``--version`` and ``--help`` without importing torch or Lightning, runs
the command, and reports a user's error as one line with an exit status (2: wrong command or option, 1: bad data)
instead of a traceback. ``--debug`` (or ``LIGHTNING_FT_DEBUG=1``) shows the full traceback."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from lightning_ft import __version__
from lightning_ft.environment import (
    BUILD_HELP_ENVIRONMENT,
    DEBUG_ENVIRONMENT,
    NO_CACHE_ENVIRONMENT,
    cache_root,
    flag_set,
)
from lightning_ft.errors import UserError, debugging
from lightning_ft.help_texts import help_name, help_process, shipped_help, stamp

PROGRAM = "lightning-ft"
DEBUG_FLAG = "--debug"
NO_CACHE_FLAG = "--no-cache"
HELP_FLAGS = ("-h", "--help")

TRAINING_COMMANDS = ("fit", "validate")  # LightningCLI's
COMMANDS = {
    "fit": "train a model from a recipe (--config RECIPE.yaml, then --section.key value overrides)",
    "validate": "validation metrics of a model on a recipe's validation data",
    "export": "merge an adapter into its base model, or write a GGUF",
    "chat": "talk to a model or an export in the terminal (--prompt: one reply)",
    "generate": "the same as chat",
    "score": "score preference pairs with a reward model",
    "eval": "metrics, baselines with confidence intervals, lm-eval tasks and an LLM judge",
    "serve": "an OpenAI-compatible server for a model and its adapters",
    "merge": "merge fine-tunes with MergeKit (TIES, DARE, SLERP, ...)",
    "assemble-llava": "build a LLaVA-style model from a language model and a vision encoder",
    "data": "prepare data: stats, clean (dedup, PII), split, leak-check, convert, generate, augment",
    "tune": "hyperparameter search with Optuna",
}

OVERVIEW = "\n".join(
    [
        f"usage: {PROGRAM} [--version] [--debug] [--no-cache] COMMAND [options]",
        "",
        "Fine-tune large language models with PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name:<9} {summary}" for name, summary in COMMANDS.items()),
        "",
        f"Each command has --help. {DEBUG_FLAG} (or {DEBUG_ENVIRONMENT}=1) shows the full traceback of an error;",
        f"{NO_CACHE_FLAG} (or {NO_CACHE_ENVIRONMENT}=1) keeps no dequantized copy of a GGUF model in the cache.",
    ]
)


def main(argv: list[str] | None = None) -> None:
    command_line = argv is None
    arguments = list(sys.argv[1:] if command_line else argv)
    for flag, environment in ((DEBUG_FLAG, DEBUG_ENVIRONMENT), (NO_CACHE_FLAG, NO_CACHE_ENVIRONMENT)):
        if flag in arguments:  # an environment variable, so the commands' own code sees it too
            os.environ[environment] = "1"
            arguments = [argument for argument in arguments if argument != flag]
    if not arguments or arguments[0] in HELP_FLAGS:
        print(OVERVIEW)
        return
    if "--version" in arguments[:2]:
        print(f"{PROGRAM} {__version__}")
        return
    command = arguments[0]
    if command not in COMMANDS and not command.startswith("-"):
        fail(f"{PROGRAM}: error: unknown command {command!r}; commands: {', '.join(COMMANDS)}", status=2)
    if debugging():
        run(arguments, command_line)
        return
    try:
        if is_help_request(arguments):
            print_help(arguments, command_line)
        else:
            run(arguments, command_line)
    except KeyboardInterrupt:
        fail(f"{PROGRAM} {command}: interrupted", status=130)
    except Exception as error:  # noqa: BLE001 - a user's error is reported in one line, a bug re-raised whole
        cause = user_error(error)
        if cause is None:
            raise
        fail(f"{PROGRAM} {command}: error: {one_line(cause)}", status=cause.exit_status)


def run(arguments: list[str], command_line: bool) -> None:
    if arguments[0] not in TRAINING_COMMANDS and not arguments[0].startswith("-"):
        from lightning_ft.commands import run as run_command  # no Lightning: chat starts seconds sooner

        run_command(arguments)
        return
    from lightning_ft.cli import main as run_training

    if command_line:  # LightningCLI reads the command line itself (and warns when it is also given the arguments)
        sys.argv[1:] = arguments
    run_training(None if command_line else arguments)


def fail(message: str, status: int) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(status)


def user_error(error: BaseException) -> BaseException | None:
    """The `UserError` that caused ``error`` (itself, or one it was raised from: jsonargparse re-raises an
    instantiation error inside its own), or ``None`` for a bug."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def is_help_request(arguments: list[str]) -> bool:
    """``COMMAND --help`` (or ``data TOOL --help``) with nothing else: the help is the same every time."""
    if arguments[-1] not in HELP_FLAGS:
        return False
    return len(arguments) == 2 or (len(arguments) == 3 and arguments[0] == "data")


def print_help(arguments: list[str], command_line: bool) -> None:
    """A command's help from the cache written when it was last built here, or the text shipped with the package
    (`lightning_ft.help_texts`); built from the parser only where neither fits the installed code (the help of
    `fit` takes seconds of importing torch and Lightning to build)."""
    command = arguments[:-1]
    cached = help_cache_dir() / f"{help_name(command)}.txt"
    if cached.exists():
        print(cached.read_text(), end="")
        return
    shipped = None if flag_set(BUILD_HELP_ENVIRONMENT) else shipped_help(command)
    if shipped is not None:
        print(shipped.text, end="")
        if shipped.differences:
            print(
                f"{PROGRAM}: this help was built for {', '.join(shipped.differences)}; "
                "the exact one is being built for the next call",
                file=sys.stderr,
            )
            refresh_help(command)
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), exit_status() as status:
        run(arguments, command_line)
    text = captured.getvalue()
    print(text, end="")
    if status.code == 0 and text:
        write_atomically(cached, text)
    if status.code:
        raise SystemExit(status.code)


def refresh_help(command: list[str]) -> subprocess.Popen[bytes]:
    """Build ``command``'s help from its parser in a background process, which caches it."""
    return subprocess.Popen(
        help_process(command),
        env={**os.environ, BUILD_HELP_ENVIRONMENT: "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class _Status:
    code: int | str | None = 0


@contextlib.contextmanager
def exit_status() -> Iterator[_Status]:
    status = _Status()
    try:
        yield status
    except SystemExit as exit:
        status.code = exit.code if isinstance(exit.code, int) else (exit.code and 1)


def help_cache_dir() -> Path:
    """Keyed by what a help text depends on (`lightning_ft.help_texts.stamp`: the package's sources and the versions of
    the libraries the help shows)."""
    key = hashlib.sha256(json.dumps(stamp(), sort_keys=True).encode())
    return cache_root() / "help" / key.hexdigest()[:16]


def write_atomically(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(text)
        os.replace(temporary, path)


if __name__ == "__main__":
    main()

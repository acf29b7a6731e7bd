"""Where a model comes from, said plainly when it cannot be had: a local path that does not exist, a hub id the hub
does not know, or a hub that cannot be reached (with how to point at a local copy instead)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub.errors import GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from lightning_ft.environment import flag_set
from lightning_ft.errors import UsageError


def looks_local(path: str) -> bool:
    """Whether ``path`` is meant as a local path: a hub id is ``name`` or ``namespace/name``, never absolute,
    relative to ``.``/``~``, or deeper than one slash."""
    return (
        path.startswith(("/", ".", "~"))
        or "\\" in path
        or path.strip("/").count("/") > 1
        or bool(Path(path).drive)
        or path.endswith(".gguf")
    )


def check_model_path(path: str) -> None:
    """Refuse a local-looking path that does not exist before anything is loaded."""
    if looks_local(path) and not Path(path).expanduser().exists():
        raise UsageError(
            f"model {path}: no such file or directory; give a local model directory (or a .gguf file) or a "
            "Hugging Face hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )


@contextlib.contextmanager
def hub_errors(path: str) -> Iterator[None]:
    """Turn a failed hub download of ``path`` into one `UsageError` that says why and what to do."""
    try:
        yield
    except (OSError, ValueError) as error:
        cause = _hub_cause(error)
        if cause is None:
            raise
        raise UsageError(_explain(path, cause)) from error


def _hub_cause(error: BaseException) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, LocalEntryNotFoundError | RepositoryNotFoundError | GatedRepoError | HFValidationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _explain(path: str, cause: BaseException) -> str:
    if isinstance(cause, GatedRepoError):
        return f"model {path}: the hub repository is gated; accept its terms on huggingface.co and `hf auth login`"
    if isinstance(cause, RepositoryNotFoundError):
        return f"model {path}: no such local directory, and no such model on the Hugging Face hub"
    if isinstance(cause, HFValidationError):
        return f"model {path}: no such local directory, and not a valid hub id (namespace/name)"
    reached = "HF_HUB_OFFLINE is set" if flag_set("HF_HUB_OFFLINE") else "the Hugging Face hub cannot be reached"
    return (
        f"model {path}: not a local directory, not in the hub cache, and {reached}; download it where the hub is "
        f"reachable (hf download {path} --local-dir DIR) and give that DIR instead"
    )

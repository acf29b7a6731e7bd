"""The environment variables lightning_ft reads (the launcher's ``--debug`` and ``--no-cache`` set them, so every
part of a command sees them), without importing anything heavy."""

from __future__ import annotations

import os
from pathlib import Path

DEBUG_ENVIRONMENT = "LIGHTNING_FT_DEBUG"  # full tracebacks for every error
NO_CACHE_ENVIRONMENT = "LIGHTNING_FT_NO_CACHE"  # keep no dequantized copy of a GGUF model in the cache
CACHE_ENVIRONMENT = "LIGHTNING_FT_CACHE"  # where the caches live (default ~/.cache/lightning_ft)
BUILD_HELP_ENVIRONMENT = "LIGHTNING_FT_BUILD_HELP"  # build --help from the parsers, not from the shipped texts


def flag_set(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENVIRONMENT, Path.home() / ".cache" / "lightning_ft"))

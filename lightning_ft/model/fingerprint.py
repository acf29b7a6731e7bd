"""`weights_fingerprint`: what identifies the weights a model spec loads, for caches of values computed with them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from huggingface_hub import snapshot_download

from lightning_ft.errors import MissingFileError
from lightning_ft.model.spec import ModelSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json")


def weights_directory(spec: ModelSpec) -> Path:
    """The local directory the spec's weights load from: ``path`` itself, or the cached snapshot of a hub id (its
    path names the commit, and its files are links to blobs named by their content hash)."""
    local = Path(spec.path)
    if local.is_dir():
        return local
    return Path(snapshot_download(spec.path, revision=spec.revision, local_files_only=True))


def weights_fingerprint(spec: ModelSpec) -> str:
    """A hash of every weight and config file the spec loads: its name, resolved location, size and modification
    time (to the nanosecond). A model re-exported to the same folder, or a hub id whose cached revision moved,
    gets a new fingerprint; an unchanged one keeps it without its weights being read."""
    directory = weights_directory(spec)
    files = []
    for path in sorted(directory.rglob("*")):
        if path.suffix in WEIGHT_SUFFIXES and path.is_file():
            stat = path.stat()  # follows a hub snapshot's links to their blobs
            files.append([str(path.relative_to(directory)), str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    if not files:
        raise MissingFileError(f"No weight files under {directory} to fingerprint for {spec.path}")
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()

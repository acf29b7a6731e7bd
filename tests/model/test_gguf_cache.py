"""Where the dequantized copy of a GGUF goes (cache or, with --no-cache, a directory gone at exit) and what its key
follows. Loading from the copy is tested equal to loading the GGUF in test_spec.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from lightning_ft.model import spec as spec_module
from lightning_ft.model.spec import ModelSpec, dense_gguf_dir, gguf_cache_key


@pytest.fixture
def gguf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "tiny.gguf").write_bytes(bytes(range(256)) * 16384)  # 4 MiB: the key samples its ends
    return directory


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records each dense copy written (a stand-in for dequantizing a real GGUF)."""
    written: list[Path] = []

    def write(spec: ModelSpec, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "config.json").write_text("{}")
        written.append(directory)

    monkeypatch.setattr(spec_module, "_write_dense_copy", write)
    return written


def test_the_copy_is_written_once_into_the_cache(gguf_dir, copies, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTNING_FT_NO_CACHE", raising=False)
    spec = ModelSpec(path=str(gguf_dir))
    target = dense_gguf_dir(spec)
    assert target == tmp_path / "cache" / "gguf" / f"tiny-{gguf_cache_key(gguf_dir / 'tiny.gguf')}"
    assert dense_gguf_dir(spec) == target and len(copies) == 1
    assert [path.name for path in target.parent.iterdir()] == [target.name]  # no partial copy left


def test_the_key_follows_the_file_and_the_transformers_version(gguf_dir, monkeypatch):
    path = gguf_dir / "tiny.gguf"
    key = gguf_cache_key(path)
    assert gguf_cache_key(path) == key
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert gguf_cache_key(path) != key
    monkeypatch.undo()
    content = bytearray(path.read_bytes())
    stat = path.stat()
    content[-1] ^= 0xFF  # same size and mtime, different last byte
    path.write_bytes(bytes(content))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert gguf_cache_key(path) != key


def test_no_cache_keeps_the_copy_only_for_the_process(gguf_dir, tmp_path):
    code = (
        "import sys\nfrom pathlib import Path\nfrom lightning_ft.model import spec\n"
        "def write(model_spec, directory):\n    directory.mkdir()\n    (directory / 'config.json').write_text('{}')\n"
        "spec._write_dense_copy = write\n"
        f"print(spec.dense_gguf_dir(spec.ModelSpec(path={str(gguf_dir)!r})))"
    )
    env = {**os.environ, "LIGHTNING_FT_NO_CACHE": "1", "LIGHTNING_FT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = Path(result.stdout.strip().splitlines()[-1])
    assert printed.name.startswith("tiny-") and printed.parent.name.startswith("lightning-ft-gguf-")
    assert not printed.exists() and not printed.parent.exists()  # removed at exit
    assert not (tmp_path / "cache").exists()

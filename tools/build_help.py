"""Build every command's --help from its parser and ship it in lightning_ft/help/, with the stamp of the sources and
library versions it was built from. Run it after changing the package: tests/test_help_texts.py fails until the
shipped texts match the sources.

Usage: python tools/build_help.py [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning_ft.help_texts import HELP_DIR, STAMP_FILE, build_help, commands_with_help, help_name, stamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="help texts built at once")
    jobs = parser.parse_args().jobs
    checkout = Path(__file__).resolve().parents[1] / "lightning_ft"
    if HELP_DIR.parent.resolve() != checkout:  # an editable install of another checkout: its sources, its help
        raise SystemExit(f"lightning_ft is imported from {HELP_DIR.parent}, not {checkout}: pip install -e . here")
    built_for = stamp()
    HELP_DIR.mkdir(exist_ok=True)
    (HELP_DIR / STAMP_FILE).unlink(missing_ok=True)  # until every text is written, none is used
    commands = commands_with_help()
    with tempfile.TemporaryDirectory() as cache, ThreadPoolExecutor(jobs) as pool:
        texts = list(pool.map(lambda command: build_help(command, Path(cache)), commands))
    names = {f"{help_name(command)}.txt" for command in commands}
    for stale in HELP_DIR.glob("*.txt"):
        if stale.name not in names:
            stale.unlink()
    for command, text in zip(commands, texts, strict=True):
        (HELP_DIR / f"{help_name(command)}.txt").write_text(text)
    (HELP_DIR / STAMP_FILE).write_text(json.dumps(built_for, indent=2, sort_keys=True) + "\n")
    print(f"{len(commands)} help texts written to {HELP_DIR}")


if __name__ == "__main__":
    main()

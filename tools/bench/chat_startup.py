"""How long `lightning-ft chat` takes to give its first token on a GGUF model, with and without the dense copy cache.

Each run is a fresh `lightning-ft chat --model MODEL --prompt ... --max_new_tokens 1` process, timed from start to
exit (one new token: the time to the first token, process start and exit included), alternating for ``--rounds``:

- ``no_cache`` (``--no-cache``): the GGUF is dequantized by transformers in the process, as every load did before the
  cache (plus writing the temporary copy it then loads);
- ``cold``: an empty cache: dequantized once and written to the cache;
- ``warm``: the cache holds the copy: a plain safetensors load.

The last line printed is one JSON object with the medians.

Usage:
  python tools/bench/chat_startup.py [--model .cache/models/smollm2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / ".cache" / "models" / "smollm2"
MODES = ("no_cache", "cold", "warm")


def time_chat(model: str, cache: Path, no_cache: bool) -> float:
    command = [sys.executable, "-m", "lightning_ft", *(["--no-cache"] if no_cache else [])]
    command += ["chat", "--model", model, "--prompt", "Say hi.", "--max_new_tokens", "1"]
    env = {**os.environ, "LIGHTNING_FT_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a directory holding one .gguf file")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        cache = Path(tempfile.mkdtemp(prefix="chat-startup-"))
        try:
            seconds["no_cache"].append(time_chat(args.model, cache, no_cache=True))
            seconds["cold"].append(time_chat(args.model, cache, no_cache=False))
            seconds["warm"].append(time_chat(args.model, cache, no_cache=False))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"round {round_}: " + ", ".join(f"{mode} {values[-1]:.1f} s" for mode, values in seconds.items()))
    medians = {mode: round(statistics.median(values), 2) for mode, values in seconds.items()}
    summary = {"model": args.model, "rounds": args.rounds, "seconds_to_first_token": medians}
    summary["warm_speedup_over_no_cache"] = round(medians["no_cache"] / medians["warm"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

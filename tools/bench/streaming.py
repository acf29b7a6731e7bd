"""What streaming costs against the cached path: blocks per second handed to training by `TextData` on the same
corpus, tokenizer and block size, each way in its own process (alternating, ``--rounds`` times).

- ``cached``: tokenizing once into the `datasets` cache (timed apart, as ``tokenize_s``), then an epoch of shuffled
  blocks read back from the cache.
- ``streaming``: an epoch of blocks read, tokenized and packed on the fly (`TextStream`), every epoch.

Both hand out the same blocks (the tests check it). The last line printed is one JSON object.

Usage:
  python tools/bench/streaming.py [--data FILE_OR_DIR] [--block-size 1024] [--rounds 2] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pretrain" / "c4_demo.jsonl"
DEFAULT_MODEL = ROOT / ".cache" / "models" / "smollm2"


def run_one(mode: str, data: str, block_size: int, workers: int, cache: str) -> dict:
    import datasets

    from lightning_ft.data import TextData
    from lightning_ft.model.spec import ModelSpec

    datasets.config.HF_DATASETS_CACHE = cache
    tokenizer = ModelSpec(str(DEFAULT_MODEL)).load_tokenizer()
    module = TextData(data, max_length=block_size, batch_size=1, num_workers=workers, streaming=mode == "streaming")
    module.tokenizer = tokenizer
    start = time.perf_counter()
    module.prepare_data()
    module.setup("fit")
    tokenize_s = time.perf_counter() - start
    if mode == "cached":
        loader = module.train_dataloader()
        blocks = len(loader)
    else:
        from lightning_ft.data.streaming import TextStream, stream_loader

        stream = TextStream(data, module.record_tokenizer(), block_size)
        loader = stream_loader(stream, 1, module.collator(), workers)
        cached = TextData(data, max_length=block_size, tokenizer=tokenizer)  # the epoch's length, for the count
        cached.prepare_data()
        cached.setup("fit")
        blocks = len(cached.items("train"))
    start = time.perf_counter()
    tokens = 0
    for count, batch in enumerate(loader, start=1):
        tokens += int(batch["attention_mask"].sum())
        if count == blocks:
            break
    epoch_s = time.perf_counter() - start
    return {
        "mode": mode,
        "blocks": blocks,
        "tokens": tokens,
        "epoch_s": epoch_s,
        "tokens_per_s": tokens / epoch_s,
        "tokenize_s": tokenize_s if mode == "cached" else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--one", choices=["cached", "streaming"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.block_size, args.workers, args.cache)))
        return
    results: dict[str, list[dict]] = {"cached": [], "streaming": []}
    for _ in range(args.rounds):
        for mode in results:
            with tempfile.TemporaryDirectory() as cache:  # a cold cache: the cached path pays its tokenization
                command = [sys.executable, __file__, "--one", mode, "--data", args.data, "--cache", cache]
                command += ["--block-size", str(args.block_size), "--workers", str(args.workers)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results[mode].append(json.loads(output.strip().splitlines()[-1]))
                print(json.dumps(results[mode][-1]))
    summary = {
        mode: {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "mode"}
        for mode, runs in results.items()
    }
    cached, streaming = summary["cached"], summary["streaming"]
    summary["streaming_vs_cached_epoch_tokens_per_s"] = streaming["tokens_per_s"] / cached["tokens_per_s"]
    summary["streaming_epoch_vs_cached_first_epoch"] = streaming["epoch_s"] / (cached["epoch_s"] + cached["tokenize_s"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

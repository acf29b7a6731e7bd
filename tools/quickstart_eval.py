"""Score a model on the quickstart's validation records: how many replies are exactly the expected JSON.

Usage: python tools/quickstart_eval.py --model DIR [--data data/quickstart/val.jsonl] [--limit 48] [--show 1]
DIR is an export (runs/quickstart/lightning_logs/version_N/hf/final) or the base (.cache/models/smollm2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightning_ft.model.export import load_export
from lightning_ft.model.generation import generate_reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("data/quickstart/val.jsonl"))
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--show", type=int, default=1, help="print this many prompts with their replies")
    args = parser.parse_args()
    model, tokenizer = load_export(args.model)
    records = [json.loads(line) for line in args.data.read_text().splitlines()][: args.limit]
    exact = valid_json = 0
    for index, record in enumerate(records):
        prompt = f"{record['instruction']}\n\n{record['input']}"
        reply = generate_reply(model, tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=64)
        exact += reply == record["output"]
        try:
            valid_json += json.loads(reply) == json.loads(record["output"])
        except json.JSONDecodeError:
            pass
        if index < args.show:
            print(f"user: {prompt}\nassistant: {reply}\nexpected: {record['output']}\n")
    print(
        json.dumps(
            {
                "model": args.model,
                "records": len(records),
                "exact_match": exact / len(records),
                "same_json_value": valid_json / len(records),
            }
        )
    )


if __name__ == "__main__":
    main()

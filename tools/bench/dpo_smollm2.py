"""DPO with LoRA on the real SmolLM2 and real pairs (LLaMA-Factory's dpo_en_demo): held-out reward accuracy, margin and
loss before and after one short epoch, with the reference log-probs precomputed. Prints one JSON line.

Usage: python tools/bench/dpo_smollm2.py [--train-pairs 64] [--val-pairs 24] [--lr 5e-5] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from peft import LoraConfig

from lightning_ft.algorithms import DPO
from lightning_ft.data import PreferenceData
from lightning_ft.model.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "preference" / "dpo_en_demo.jsonl"
METRICS = ("val/loss", "val/rewards/accuracy", "val/rewards/margin", "val/rewards/chosen", "val/rewards/rejected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2"))
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--val-pairs", type=int, default=24)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    L.seed_everything(0)
    lines = DATA.read_text().splitlines(keepends=True)
    work = Path(tempfile.mkdtemp())
    (work / "train.jsonl").write_text("".join(lines[: args.train_pairs]))
    (work / "val.jsonl").write_text("".join(lines[-args.val_pairs :]))
    module = DPO(
        ModelSpec(path=args.model),
        peft=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr),
        lr_scheduler="constant",
        gradient_checkpointing=True,
        precompute_reference_logps=True,
    )
    data = PreferenceData(
        str(work / "train.jsonl"),
        val=str(work / "val.jsonl"),
        format="sharegpt",
        tokenizer=module.tokenizer,
        max_length=args.max_length,
        batch_size=4,
        eval_batch_size=8,
    )
    quiet = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    before = L.Trainer(**quiet).validate(module, datamodule=data, verbose=False)[0]
    start = time.perf_counter()
    L.Trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0, **quiet).fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    after = L.Trainer(**quiet).validate(module, datamodule=data, verbose=False)[0]
    summary = {"settings": vars(args), "fit_seconds_with_reference_precompute": seconds}
    summary.update({f"before {name}": before[name] for name in METRICS})
    summary.update({f"after {name}": after[name] for name in METRICS})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

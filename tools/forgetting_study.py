"""Continued pre-training on a domain, and what it costs general text: plain, with replay of general text mixed in,
and with EWC, on the same model, data, LoRA, steps and seed.

The domain (``--domain``) is Chinese instruction text (alpaca-gpt4-zh: instructions with their answers, as raw text;
the last records held out), or GSM8K (train problems with worked solutions; held out: GSM8K test). The general text
is C4 (`../shared/data/pretrain/c4_demo.jsonl`): its first ``--replay-docs`` documents are the replay set (mixed in,
or the Fisher's data for EWC), its last ones the general held-out set. Each run reports the mean token loss on
held-out domain and general text, before (the base model) and after. The last line printed is one JSON object.

Usage:
  python tools/forgetting_study.py [--domain zh|gsm8k] [--model DIR] [--steps 24] [--lr 1e-3] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from peft import LoraConfig

from lightning_ft.algorithms import EWC, SFT
from lightning_ft.data import MixSource, TextData
from lightning_ft.model.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETTINGS = ("plain", "replay", "ewc")


def write_texts(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return str(path)


def domain_texts(domain: str) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` documents of the domain."""
    if domain == "gsm8k":
        train = [json.loads(line) for line in (SHARED / "sft_alpaca/gsm8k_train_alpaca.jsonl").open()]
        test = [json.loads(line) for line in (SHARED / "eval/gsm8k_test.jsonl").open()]
        return [f"{r['instruction']}\n{r['output']}" for r in train], [f"{r['question']}\n{r['answer']}" for r in test]
    records = [json.loads(line) for line in (SHARED / "sft_alpaca/alpaca_gpt4_zh_demo.jsonl").open()]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}".replace("\n\n", "\n") for r in records]
    return texts[:-100], texts[-100:]


def study_data(
    output: Path, domain: str, domain_train: int, domain_eval: int, general_eval: int, replay_docs: int
) -> dict[str, str]:
    """The four text files: domain train / held-out, general replay / held-out."""
    output.mkdir(parents=True, exist_ok=True)
    train, held_out = domain_texts(domain)
    c4 = [json.loads(line)["text"] for line in (SHARED / "pretrain/c4_demo.jsonl").open()]
    return {
        "domain": write_texts(output / "domain.jsonl", train[:domain_train]),
        "domain_eval": write_texts(output / "domain_eval.jsonl", held_out[:domain_eval]),
        "replay": write_texts(output / "replay.jsonl", c4[:replay_docs]),
        "general_eval": write_texts(output / "general_eval.jsonl", c4[-general_eval:]),
    }


def losses(module: SFT, data: TextData) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(module, datamodule=data, verbose=False)
    merged = {key: value for result in metrics for key, value in result.items()}
    return {"domain": float(merged["val/loss"]), "general": float(merged["val_general/loss"])}


def run(setting: str, files: dict[str, str], args: argparse.Namespace, first: bool) -> dict[str, Any]:
    L.seed_everything(0)
    lora = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    ewc = None
    if setting == "ewc":
        replay = TextData(files["replay"], max_length=args.block_size, batch_size=1, seed=0)
        ewc = EWC(replay, strength=args.ewc_strength, num_examples=args.fisher_examples)
    module = SFT(
        ModelSpec(path=args.model),
        peft=lora,
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0),
        lr_scheduler="constant",
        ewc=ewc,
    )
    train: Any = files["domain"]
    if setting == "replay":
        train = [
            MixSource(files["domain"], weight=1 - args.replay_share),
            MixSource(files["replay"], args.replay_share),
        ]
    data = TextData(
        train,
        val=files["domain_eval"],
        val_extra={"general": files["general_eval"]},
        max_length=args.block_size,
        batch_size=args.batch_size,
        tokenizer=module.tokenizer,
    )
    before = losses(module, data) if first else None  # the base's (the adapter starts as a no-op)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    return {"setting": setting, "before": before, "after": losses(module, data)}


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["before"]
    lines = [
        "| | held-out domain loss (ppl) | held-out C4 loss (ppl) | C4 loss change |",
        "|---|---|---|---|",
        f"| SmolLM2-135M (before) | {base['domain']:.3f} ({math.exp(base['domain']):.2f}) | "
        f"{base['general']:.3f} ({math.exp(base['general']):.2f}) | |",
    ]
    for result in results:
        after = result["after"]
        lines.append(
            f"| {result['setting']} | {after['domain']:.3f} ({math.exp(after['domain']):.2f}) | "
            f"{after['general']:.3f} ({math.exp(after['general']):.2f}) | {after['general'] - base['general']:+.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=["zh", "gsm8k"], default="zh")
    parser.add_argument("--model", default=str(ROOT / ".cache/models/smollm2"))
    parser.add_argument("--output", default="runs/forgetting")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--domain-train", type=int, default=256, help="domain documents trained on")
    parser.add_argument("--domain-eval", type=int, default=32, help="domain documents held out")
    parser.add_argument("--general-eval", type=int, default=8, help="C4 documents held out (the last ones)")
    parser.add_argument("--replay-docs", type=int, default=200, help="C4 documents replayed (the first ones)")
    parser.add_argument("--replay-share", type=float, default=0.25)
    parser.add_argument("--ewc-strength", type=float, default=0.01)
    parser.add_argument("--fisher-examples", type=int, default=32)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    args = parser.parse_args(argv)
    files = study_data(
        Path(args.output), args.domain, args.domain_train, args.domain_eval, args.general_eval, args.replay_docs
    )
    settings = [setting for setting in SETTINGS if setting in args.settings]
    results = [run(setting, files, args, first=index == 0) for index, setting in enumerate(settings)]
    print(table(results))
    summary = {"settings": vars(args), "results": results}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

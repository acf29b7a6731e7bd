"""Side-by-side SFT throughput: lightning_ft against TRL's `SFTTrainer` on the same model, data, LoRA and settings.

Every run is its own process; runs alternate (lightning_ft, TRL, TRL with packing, lightning_ft, ...) for
``--pairs`` rounds. Each counts the real (non-pad) tokens of the optimiser steps after ``--warmup`` steps and the
peak resident memory sampled while training. The last line printed is one JSON object with the medians and ratios.

Usage:
  pip install "trl>=1.16"   # benchmark-only dependency
  python tools/bench/sft_throughput.py [--precision fp32|bf16] [--steps 6] [--pairs 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    DEFAULT_MODEL,
    SHARED_DATA,
    PeakRss,
    add_device_metrics,
    attn_implementation,
    lora_config,
    medians,
    model_flops_per_token,  # noqa: F401  (tests/tools/test_bench_flops.py reads it here)
    prepare_model,
    run_rounds,
    step_timer_callback,
)

DEFAULT_DATA = SHARED_DATA / "sft_alpaca" / "alpaca_gpt4_en_demo.jsonl"
SYSTEMS = ("lightning_ft", "trl", "trl_packing")
OPTIONAL_SYSTEMS = ("lightning_ft_compiled",)  # lightning_ft with `compile: true`


def records(args: argparse.Namespace) -> list[dict]:
    """The training slice: enough records for every step (TRL's packing takes about twice as many per step)."""
    lines = Path(args.data).read_text().splitlines()[args.heldout :]
    needed = args.batch_size * (args.warmup + args.steps) * 3
    return [json.loads(line) for line in lines[:needed]]


def heldout_records(args: argparse.Namespace) -> list[dict]:
    lines = Path(args.data).read_text().splitlines()[: args.heldout]
    return [json.loads(line) for line in lines]


def to_chat(record: dict) -> tuple[list[dict], list[dict]]:
    user = f"{record['instruction']}\n\n{record['input']}" if record.get("input", "").strip() else record["instruction"]
    return [{"role": "user", "content": user}], [{"role": "assistant", "content": record["output"]}]


def heldout_loss(model, tokenizer, args: argparse.Namespace) -> float:
    """Mean cross-entropy per response token on the held-out records; the same code scores both systems."""
    import torch

    loss_sum, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for record in heldout_records(args):
            prompt, completion = to_chat(record)
            prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
            prompt_ids = list(getattr(prompt_ids, "input_ids", prompt_ids))
            full_ids = list(getattr(full_ids, "input_ids", full_ids))[: args.max_length]
            input_ids = torch.tensor([full_ids], device=next(model.parameters()).device)
            labels = input_ids.clone()
            labels[:, : len(prompt_ids)] = -100
            logits = model(input_ids=input_ids).logits.float()
            loss_sum += float(
                torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
            )
            count += int((labels[0, 1:] != -100).sum())
    model.train(was_training)
    return loss_sum / count


def packed_rows(args: argparse.Namespace) -> int:
    """Rows of ``max_length`` tokens that ``batch_size`` conversations fill on average: the packed batch size that
    does the same work per optimiser step as a padded batch of ``batch_size`` conversations (used for both packers).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = []
    for record in records(args):
        prompt, completion = to_chat(record)
        ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
        lengths.append(min(len(getattr(ids, "input_ids", ids)), args.max_length))
    return max(1, round(args.batch_size * statistics.fmean(lengths) / args.max_length))


def run_lightning_ft(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from lightning_ft.algorithms import SFT
    from lightning_ft.callbacks.throughput import real_tokens
    from lightning_ft.data import InstructionData
    from lightning_ft.model import ModelSpec

    data_path = Path(args.workdir) / "data.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in records(args)))
    bf16 = args.precision == "bf16"
    module = SFT(
        ModelSpec(
            path=args.model,
            tokenizer_path=args.tokenizer,
            dtype="bfloat16" if bf16 else "float32",
            attn_implementation=attn_implementation(args.accelerator),
        ),
        peft=lora_config(),
        compile=args.worker == "lightning_ft_compiled",
        gradient_checkpointing=args.gradient_checkpointing == "on",
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0),
        lr_scheduler="constant",
    )
    data = InstructionData(
        str(data_path),
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=args.seed,
        tokenizer=module.tokenizer,
    )
    data.prepare_data()
    data.setup("fit")
    data.batch_size = args.packed_rows
    mean_length = statistics.fmean(len(ids) for ids in data.datasets["train"]["input_ids"])
    meter = step_timer_callback(args.warmup, real_tokens)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.warmup + args.steps,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,  # as TRL (transformers' Trainer: max_grad_norm=1.0)
        callbacks=[meter],
    )
    torch.manual_seed(args.seed)
    trainer.fit(module, datamodule=data)
    result = meter.result()
    add_device_metrics(result, module.model, mean_length)
    result.update(rows_per_step=data.batch_size, heldout_loss=heldout_loss(module.model, module.tokenizer, args))
    with module.model.disable_adapter():
        result["base_heldout_loss"] = heldout_loss(module.model, module.tokenizer, args)
    return result


def run_trl(args: argparse.Namespace, packing: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = [dict(zip(("prompt", "completion"), to_chat(r), strict=True)) for r in records(args)]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=attn_implementation(args.accelerator)
    )

    state = {"losses": [], "start": None, "end": None}
    rss = PeakRss()

    class Counter(TrainerCallback):
        def on_step_begin(self, a, trainer_state, control, **kw):
            if trainer_state.global_step == args.warmup and state["start"] is None:
                state["start"] = time.perf_counter()
                rss.start()

        def on_step_end(self, a, trainer_state, control, **kw):
            if state["start"] is not None:
                state["end"] = time.perf_counter()

        def on_log(self, a, trainer_state, control, logs=None, **kw):
            if state["start"] is not None and logs and "loss" in logs:
                state["losses"].append(logs["loss"])

    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"),
        per_device_train_batch_size=args.packed_rows if packing else args.batch_size,
        max_length=args.max_length,
        max_steps=args.warmup + args.steps,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=args.precision == "bf16",
        use_cpu=args.accelerator == "cpu",
        packing=packing,
        gradient_checkpointing=args.gradient_checkpointing == "on",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(),
        callbacks=[Counter()],
    )
    collate = trainer.data_collator

    batch_tokens: list[int] = []

    def counting_collator(examples):
        # Batches are collated in step order (no workers, no accumulation): batch i feeds optimiser step i.
        batch = collate(examples)
        mask = batch.get("attention_mask")
        batch_tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    tokens = sum(batch_tokens[args.warmup : args.warmup + args.steps])
    result = {
        "tokens_per_s": tokens / (state["end"] - state["start"]),
        "peak_rss_mb": rss.stop(),
        "mean_loss": statistics.fmean(state["losses"]) if state["losses"] else None,
        "tokens": tokens,
        "tokens_per_step": tokens / args.steps,
        "heldout_loss": heldout_loss(trainer.model, tokenizer, args),
    }
    if packing:
        mean_length = statistics.fmean(n for row in trainer.train_dataset["seq_lengths"] for n in row)
    else:
        mean_length = statistics.fmean(min(len(ids), args.max_length) for ids in trainer.train_dataset["input_ids"])
    add_device_metrics(result, trainer.model, mean_length)
    return result


def worker(args: argparse.Namespace) -> None:
    torch_threads = os.environ.get("OMP_NUM_THREADS")
    if args.worker.startswith("lightning_ft"):
        result = run_lightning_ft(args)
    else:
        result = run_trl(args, packing=args.worker == "trl_packing")
    result.update(system=args.worker, threads=torch_threads)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="data order and adapter initialisation, both systems")
    parser.add_argument("--heldout", type=int, default=24, help="records held out to compare the trained models")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--gradient-checkpointing", choices=["on", "off"], default="on", help="for both systems (TRL's default: on)"
    )
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--packed-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=SYSTEMS + OPTIONAL_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.workdir_root = tempfile.mkdtemp(prefix="sft-bench-")
    if not Path(args.data).exists():
        sys.exit(f"{args.data} is missing (../shared/data ships with the team's checkouts)")
    prepare_model(args)
    args.packed_rows = packed_rows(args)
    runs = run_rounds(__file__, args, args.systems.split(","), args.pairs, skip=("systems", "pairs"))
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir", "workdir_root")},
        "lora": "r=16 alpha=32 all-linear",
    }
    summary.update(medians(runs, ("tokens_per_s", "peak_rss_mb", "mean_loss", "heldout_loss", "tokens_per_step")))
    if "lightning_ft" in runs:
        summary["base_heldout_loss"] = runs["lightning_ft"][0]["base_heldout_loss"]
    if "lightning_ft" in runs and "trl" in runs:
        summary["ratio_tokens_per_s"] = summary["lightning_ft_tokens_per_s"] / summary["trl_tokens_per_s"]
        summary["ratio_peak_rss"] = summary["lightning_ft_peak_rss_mb"] / summary["trl_peak_rss_mb"]
    if "lightning_ft" in runs and "trl_packing" in runs:
        summary["ratio_tokens_per_s_vs_trl_packing"] = (
            summary["lightning_ft_tokens_per_s"] / summary["trl_packing_tokens_per_s"]
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Side-by-side DPO throughput: lightning_ft's `DPO` against TRL's `DPOTrainer` on the same model, pairs and settings.

Systems: ``lightning_ft`` and ``trl`` run the reference live (the base with the LoRA adapter disabled);
``lightning_ft_precomputed`` and ``trl_precomputed`` score the training pairs with it once before training
(``precompute_reference_logps`` / ``precompute_ref_log_probs``; that time is reported as ``precompute_seconds`` and
left out of tokens/s). Optional: ``lightning_ft_packing`` (live reference, chosen and rejected packed into one row
without padding; the recipe ``configs/dpo/dpo_lora.yaml`` pads).

Every run is its own process; runs alternate for ``--pairs`` rounds. Both systems read the same pairs in the same
order (file order), rendered with the model's chat template, truncated the same way (prompt kept whole, responses
cut at ``--max-length``; pairs whose prompt alone fills it are left out for both, as TRL drops them). Each counts the
real (non-pad) chosen + rejected tokens of the optimiser steps after ``--warmup`` steps and samples peak resident
memory meanwhile. Afterwards one shared function scores the held-out pairs (the first ``--heldout`` of the file):
implicit reward = beta * (log p_policy - log p_reference) summed over response tokens, accuracy = share of pairs whose
chosen reward beats the rejected one, margin = mean difference. The untrained policy is its reference: margin 0.

The last line printed is one JSON object with the medians and the lightning_ft / TRL ratios.

Usage:
  pip install "trl>=1.16"   # benchmark-only dependency
  python tools/bench/dpo_throughput.py [--steps 6] [--pairs 2] [--batch-size 4] [--max-length 512] [--systems ...]
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
    prepare_model,
    run_rounds,
    step_timer_callback,
)

DEFAULT_DATA = SHARED_DATA / "preference" / "dpo_en_demo.jsonl"
SYSTEMS = ("lightning_ft", "trl", "lightning_ft_precomputed", "trl_precomputed")
OPTIONAL_SYSTEMS = ("lightning_ft_packing",)
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
SUMMARY_KEYS = (
    "tokens_per_s",
    "peak_rss_mb",
    "tokens_per_step",
    "mean_loss",
    "heldout_accuracy",
    "heldout_margin",
    "precompute_seconds",
    "model_tflops_per_s",
)


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def to_messages(record: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """A ShareGPT pair -> TRL's conversational ``prompt``, ``chosen``, ``rejected`` (what `PreferenceData` with
    ``format="sharegpt"`` reads from the same record)."""
    prompt = [{"role": ROLES[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]
    chosen, rejected = ([{"role": "assistant", "content": record[side]["value"]}] for side in ("chosen", "rejected"))
    return prompt, chosen, rejected


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(getattr(ids, "input_ids", ids))


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def tokenized_pair(tokenizer, record: dict, max_length: int) -> tuple[list[list[int]], list[int]] | None:
    """``([chosen ids, rejected ids], [prompt length of each])`` cut at ``max_length`` as TRL does (``keep_start``),
    or None when the prompt alone fills it or the cut responses are the same (TRL keeps such pairs, lightning_ft
    drops them: both systems leave them out)."""
    prompt, chosen, rejected = to_messages(record)
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    rows = [chat_ids(tokenizer, prompt + side) for side in (chosen, rejected)]
    starts = [common_prefix(prompt_ids, row) for row in rows]
    rows = [row[:max_length] for row in rows]
    if max(starts) >= max_length or rows[0] == rows[1]:
        return None
    return rows, starts


def select_pairs(args: argparse.Namespace) -> None:
    """Write the held-out pairs (the first ``--heldout`` records) and the training pairs (the following ones, as many
    as the run's steps take) that fit, and point ``args.train_file`` / ``args.heldout_file`` at them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    records = read_jsonl(args.data)
    needed = args.batch_size * (args.warmup + args.steps)
    heldout = [r for r in records[: args.heldout] if tokenized_pair(tokenizer, r, args.max_length)]
    train = []
    for record in records[args.heldout :]:
        if len(train) == needed:
            break
        if tokenized_pair(tokenizer, record, args.max_length):
            train.append(record)
    if len(train) < needed:
        sys.exit(f"only {len(train)} training pairs fit --max-length {args.max_length}; {needed} needed")
    for name, rows in (("train", train), ("heldout", heldout)):
        path = Path(args.workdir_root) / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        setattr(args, f"{name}_file", str(path))


def response_logps(model, rows: list[list[int]], starts: list[int], pad_token_id: int):
    """``(len(rows),)`` summed log-probs of each row's tokens from ``starts[i]`` on (the response)."""
    import torch

    device = next(model.parameters()).device
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    scored = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        scored[i, start : len(row)] = True
    attention_mask = (torch.arange(length)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:, None].to(device)).squeeze(2)
    return (logps * scored[:, 1:].to(device)).sum(dim=1)


def heldout_rewards(model, tokenizer, args: argparse.Namespace) -> dict:
    """Held-out reward accuracy and mean margin of a trained PEFT model against itself with the adapter disabled;
    the same code scores every system."""
    import torch

    margins = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for record in read_jsonl(args.heldout_file):
            rows, starts = tokenized_pair(tokenizer, record, args.max_length)
            policy = response_logps(model, rows, starts, tokenizer.pad_token_id)
            with model.disable_adapter():
                reference = response_logps(model, rows, starts, tokenizer.pad_token_id)
            chosen, rejected = (args.beta * (policy - reference)).tolist()
            margins.append(chosen - rejected)
    model.train(was_training)
    return {
        "heldout_accuracy": statistics.fmean(margin > 0 for margin in margins),
        "heldout_margin": statistics.fmean(margins),
        "heldout_pairs": len(margins),
    }


def in_order_preference_data():
    """`PreferenceData` that serves training batches in file order (as TRL's ``sequential`` sampler does, so both
    systems time the same batches) and times its reference precompute. Built lazily: TRL workers import no Lightning.
    """
    from torch.utils.data import DataLoader

    from lightning_ft.data import PreferenceData

    class InOrderPreferenceData(PreferenceData):
        precompute_seconds: float | None = None

        def train_dataloader(self) -> DataLoader:
            loader = super().train_dataloader()
            return DataLoader(loader.dataset, batch_size=self.batch_size, collate_fn=loader.collate_fn)

        def add_reference_logps(self, *args, **kwargs) -> None:
            start = time.perf_counter()
            super().add_reference_logps(*args, **kwargs)
            self.precompute_seconds = (self.precompute_seconds or 0.0) + time.perf_counter() - start

    return InOrderPreferenceData


def run_lightning_ft(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from lightning_ft.algorithms import DPO
    from lightning_ft.callbacks.throughput import real_tokens
    from lightning_ft.model import ModelSpec

    bf16 = args.precision == "bf16"
    module = DPO(
        ModelSpec(
            path=args.model,
            tokenizer_path=args.tokenizer,
            dtype="bfloat16" if bf16 else "float32",
            attn_implementation=attn_implementation(args.accelerator),
        ),
        loss_type="sigmoid",
        beta=args.beta,
        precompute_reference_logps=args.worker == "lightning_ft_precomputed",
        peft=lora_config(),
        gradient_checkpointing=args.gradient_checkpointing == "on",
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0),
        lr_scheduler="constant",
    )
    data = in_order_preference_data()(
        args.train_file,
        format="sharegpt",
        max_length=args.max_length,
        max_prompt_length=args.max_length - 1,  # keep the prompt whole, cut the responses' ends: TRL's keep_start
        packing=args.worker == "lightning_ft_packing",
        batch_size=args.batch_size,
        seed=args.seed,
        tokenizer=module.tokenizer,
    )
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
    add_device_metrics(result, module.model, result["tokens_per_step"] / (2 * args.batch_size))
    result.update(heldout_rewards(module.model, module.tokenizer, args), precompute_seconds=data.precompute_seconds)
    return result


def run_trl(args: argparse.Namespace, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = [
        dict(zip(("prompt", "chosen", "rejected"), to_messages(r), strict=True)) for r in read_jsonl(args.train_file)
    ]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        args.model,
        dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32,
        attn_implementation=attn_implementation(args.accelerator),
    )

    state = {"losses": [], "start": None, "end": None, "precompute": None}
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

    class TimedDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, *a, **kw):
            start = time.perf_counter()
            dataset = super()._precompute_ref_logps(*a, **kw)
            state["precompute"] = (state["precompute"] or 0.0) + time.perf_counter() - start
            return dataset

    config = DPOConfig(
        output_dir=str(Path(args.workdir) / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        truncation_mode="keep_start",
        padding_free=False,
        precompute_ref_log_probs=precompute,
        beta=args.beta,
        loss_type=["sigmoid"],
        disable_dropout=True,
        max_steps=args.warmup + args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        train_sampling_strategy="sequential",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=args.precision == "bf16",
        use_cpu=args.accelerator == "cpu",
        gradient_checkpointing=args.gradient_checkpointing == "on",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = TimedDPOTrainer(
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
        batch_tokens.append(int(batch["attention_mask"].sum()))
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
        "seconds": state["end"] - state["start"],
        "steps": args.steps,
        "precompute_seconds": state["precompute"],
    }
    add_device_metrics(result, trainer.model, result["tokens_per_step"] / (2 * args.batch_size))
    result.update(heldout_rewards(trainer.model, tokenizer, args))
    return result


def worker(args: argparse.Namespace) -> None:
    os.environ["HF_DATASETS_CACHE"] = str(Path(args.workdir) / "datasets")  # no run reads another's cached scores
    if args.worker.startswith("lightning_ft"):
        result = run_lightning_ft(args)
    else:
        result = run_trl(args, precompute=args.worker == "trl_precomputed")
    result.update(system=args.worker, threads=os.environ.get("OMP_NUM_THREADS"))
    print("RESULT " + json.dumps(result))


def ratios(summary: dict, ours: str, theirs: str, suffix: str = "") -> dict[str, float]:
    """lightning_ft / TRL tokens/s and peak RSS, where both ran."""
    out = {}
    for key, name in (("tokens_per_s", "ratio_tokens_per_s"), ("peak_rss_mb", "ratio_peak_rss")):
        mine, other = summary.get(f"{ours}_{key}"), summary.get(f"{theirs}_{key}")
        if mine is not None and other:
            out[name + suffix] = mine / other
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ShareGPT-style preference pairs (jsonl)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimiser step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=2, help="alternating rounds of every system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=32, help="pairs held out (the file's first) to score rewards")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"of {', '.join(SYSTEMS + OPTIONAL_SYSTEMS)}")
    parser.add_argument(
        "--gradient-checkpointing", choices=["on", "off"], default="on", help="for both systems (TRL's default: on)"
    )
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--heldout-file", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=SYSTEMS + OPTIONAL_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    systems = args.systems.split(",")
    unknown = set(systems) - set(SYSTEMS + OPTIONAL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}")
    if not Path(args.data).exists():
        sys.exit(f"{args.data} is missing (../shared/data ships with the team's checkouts)")
    args.workdir_root = tempfile.mkdtemp(prefix="dpo-bench-")
    prepare_model(args)
    select_pairs(args)
    runs = run_rounds(__file__, args, systems, args.pairs, skip=("systems", "pairs"))
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir", "workdir_root")},
        "lora": "r=16 alpha=32 all-linear",
        "heldout_pairs": next(iter(runs.values()))[0]["heldout_pairs"],
    }
    summary.update(medians(runs, SUMMARY_KEYS))
    summary.update(ratios(summary, "lightning_ft", "trl"))
    summary.update(ratios(summary, "lightning_ft_precomputed", "trl_precomputed", "_precomputed"))
    summary.update(ratios(summary, "lightning_ft_packing", "trl", "_packing_vs_trl"))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

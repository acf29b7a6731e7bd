"""Side-by-side GRPO throughput: lightning_ft's `GRPO` against TRL's `GRPOTrainer` on the same model, prompts, reward
and settings.

Every run is its own process; runs alternate (lightning_ft, TRL, lightning_ft, ...) for ``--pairs`` rounds. Both train
LoRA (r16, all linear layers) on GSM8K train questions that ask for "The answer is N", rewarded by the same function
(`lightning_ft.rewards.answer_sentence`, as in configs/grpo/format_smollm2.yaml): ``--prompts-per-step`` prompts x 8
sampled completions per optimiser step, one generation per step, one optimiser step per generation. Loss: the clipped
objective plus beta x k3 KL to the base (adapter disabled), averaged over all completion tokens of the step
(lightning_ft ``loss_aggregation: token`` = TRL ``loss_type: dapo``, TRL's default). Both take the same prompts in
the same order (the summary's ``same_prompts_in_same_order`` checks it).

After ``--warmup`` optimiser steps each run measures completions/s, seconds per step and where they go (``generate``,
the policy's forward with gradients, the reference's forward, backward, the rest), prompt + completion tokens/s, peak
resident memory and the mean reward. The last line printed is one JSON object with the medians and ratios.

Usage:
  pip install "trl>=1.16"   # benchmark-only dependency
  python tools/bench/grpo_throughput.py [--steps 6] [--warmup 1] [--pairs 2] [--prompts-per-step 1] [--beta 0.04]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    DEFAULT_MODEL,
    SHARED_DATA,
    PeakRss,
    attn_implementation,
    lora_config,
    medians,
    prepare_model,
    run_rounds,
)

DEFAULT_DATA = SHARED_DATA / "sft_alpaca" / "gsm8k_train_alpaca.jsonl"
SYSTEMS = ("lightning_ft", "trl")
REWARD = "lightning_ft.rewards.answer_sentence"
ASK = " Reply in one sentence: The answer is N."  # as tests/test_grpo_format_e2e.py: the reward is learnable
GROUP_SIZE = 8
TEMPERATURE = 0.7
SECTIONS = ("generate", "policy_forward", "reference_forward", "backward")
SUMMARY_KEYS = (
    "completions_per_s",
    "seconds_per_step",
    "tokens_per_s",
    "peak_rss_mb",
    "mean_reward",
    "last_reward",
    "mean_completion_tokens",
    *(f"{section}_share" for section in (*SECTIONS, "other")),
)


def prompt_records(args: argparse.Namespace) -> list[dict]:
    """Exactly one epoch of prompts for the run, in file order (each system's loader shuffles them alike)."""
    lines = Path(args.data).read_text().splitlines()[: args.prompts_per_step * (args.warmup + args.steps)]
    return [{"question": r["instruction"] + ASK, "answer": r["output"]} for r in map(json.loads, lines)]


class StepClock:
    """Wall time of each optimiser step and, inside it, the time spent in the wrapped methods (by section), plus
    the rewards and the prompt and completion tokens of every generation."""

    def __init__(self, warmup: int, stop_ids: list[int], questions: list[str]) -> None:
        self.warmup = warmup
        self.stop_ids = stop_ids
        self.questions = questions
        self.prompt_order: list[list[int]] = []
        self.rss = PeakRss()
        self.steps: list[dict[str, float]] = []
        self.rewards: list[list[float]] = []
        self.current: dict[str, float] = defaultdict(float)
        self.running: set[str] = set()
        self.start = 0.0

    def begin_step(self) -> None:
        if len(self.steps) == self.warmup:
            self.rss.start()
        self.current = defaultdict(float)
        self.start = time.perf_counter()

    def end_step(self) -> None:
        self.steps.append({**self.current, "seconds": time.perf_counter() - self.start})

    def wrap(self, owner: Any, name: str, section: str | Callable[[], str], after: Callable | None = None) -> None:
        """Replace ``owner.name`` with a version that adds its time to ``section`` (or to what ``section()`` names
        at call time); nested calls count once. ``after(result, *args, **kwargs)`` sees each result."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = section if isinstance(section, str) else section()
            if label in self.running:
                return original(*args, **kwargs)
            self.running.add(label)
            start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                self.running.discard(label)
                self.current[label] += time.perf_counter() - start
            if after is not None:
                after(result, *args, **kwargs)
            return result

        setattr(owner, name, timed)

    def count_tokens(self, sequences: Any, *args: Any, **kwargs: Any) -> None:
        """After ``generate``: the prompts' real tokens and the completions' tokens through their first stop."""
        import torch

        prompt_length = kwargs["input_ids"].shape[1]
        completions = sequences[:, prompt_length:]
        is_stop = torch.isin(completions, torch.tensor(self.stop_ids, device=completions.device)).long()
        through_stop = (is_stop.cumsum(dim=1) - is_stop) == 0
        self.current["prompt_tokens"] += float(kwargs["attention_mask"].sum())
        self.current["completion_tokens"] += float(through_stop.sum())
        self.current["completions"] += completions.shape[0]

    def reward(self, prompts: list[str], texts: list[str]) -> list[float]:
        """The benchmark's one reward: the project's format reward, recorded per step with the indices of the
        step's prompts (each prompt text holds its record's question)."""
        from lightning_ft.rewards import answer_sentence

        scores = answer_sentence(prompts, texts)
        self.rewards.append(scores)
        self.prompt_order.append(sorted({self.question_index(prompt) for prompt in prompts}))
        return scores

    def question_index(self, prompt: str) -> int:
        return next((i for i, question in enumerate(self.questions) if question in prompt), -1)

    def time_sections(self, logprob_owner: Any, logprob_method: str) -> None:
        """Wrap ``generate`` (every system samples through transformers' `GenerationMixin.generate`), the system's
        completion log-prob method (with gradients: the policy; without: the reference) and ``Tensor.backward``."""
        import torch
        from transformers.generation.utils import GenerationMixin

        self.wrap(GenerationMixin, "generate", "generate", after=self.count_tokens)
        self.wrap(
            logprob_owner,
            logprob_method,
            lambda: "policy_forward" if torch.is_grad_enabled() else "reference_forward",
        )
        self.wrap(torch.Tensor, "backward", "backward")

    def result(self, prompts_per_step: int, last: int) -> dict[str, Any]:
        timed = self.steps[self.warmup :]
        seconds = sum(step["seconds"] for step in timed)
        totals = {key: sum(step.get(key, 0.0) for step in timed) for key in (*SECTIONS, "completions")}
        tokens = sum(step.get("prompt_tokens", 0.0) + step.get("completion_tokens", 0.0) for step in timed)
        shares = {f"{section}_share": totals[section] / seconds for section in SECTIONS}
        shares["other_share"] = 1.0 - sum(shares.values())
        step_rewards = [statistics.fmean(scores) for scores in self.rewards]
        return {
            "completions_per_s": totals["completions"] / seconds,
            "seconds_per_step": seconds / len(timed),
            "tokens_per_s": tokens / seconds,
            "mean_completion_tokens": sum(s.get("completion_tokens", 0.0) for s in timed) / totals["completions"],
            "peak_rss_mb": self.rss.stop(),
            **shares,
            "mean_reward": statistics.fmean(step_rewards[self.warmup :]),
            "last_reward": statistics.fmean(step_rewards[self.warmup :][-last:]),
            "step_rewards": step_rewards,
            "seconds_per_section": {key: totals[key] / len(timed) for key in SECTIONS},
            "steps": len(timed),
            "prompt_order": self.prompt_order,
            "completions_per_step": totals["completions"] / len(timed),
            "expected_completions_per_step": prompts_per_step * GROUP_SIZE,
        }


def run_lightning_ft(args: argparse.Namespace, clock: StepClock) -> None:
    import lightning as L
    import torch

    from lightning_ft.algorithms import GRPO
    from lightning_ft.data import PromptData
    from lightning_ft.model import ModelSpec

    data_path = Path(args.workdir) / "prompts.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in prompt_records(args)))
    bf16 = args.precision == "bf16"
    module = GRPO(
        ModelSpec(
            path=args.model,
            tokenizer_path=args.tokenizer,
            dtype="bfloat16" if bf16 else "float32",
            attn_implementation=attn_implementation(args.accelerator),
        ),
        reward_funcs=[REWARD],
        num_generations=GROUP_SIZE,
        max_new_tokens=args.max_completion_length,
        temperature=TEMPERATURE,
        top_p=1.0,
        beta=args.beta,
        num_iterations=1,
        scale_rewards=True,
        loss_aggregation="token",  # = TRL's default loss_type "dapo"
        max_grad_norm=1.0,
        disable_dropout=True,
        peft=lora_config(),
        gradient_checkpointing=args.gradient_checkpointing == "on",
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0),
        lr_scheduler="constant",
    )
    module.reward_functions[REWARD] = lambda prompts, completions, **fields: clock.reward(prompts, completions)
    data = PromptData(
        str(data_path),
        fields={"prompt": "question"},
        max_length=384,
        batch_size=args.prompts_per_step,
        seed=args.seed,
        tokenizer=module.tokenizer,
    )
    clock.time_sections(GRPO, "completion_logprobs")

    class Steps(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            clock.begin_step()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            clock.end_step()

    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.warmup + args.steps,  # optimiser steps: one per batch at num_iterations 1
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Steps()],
    )
    torch.manual_seed(args.seed)
    trainer.fit(module, datamodule=data)


def run_trl(args: argparse.Namespace, clock: StepClock) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lightning_ft.data.sampling import SeededRandomSampler

    records = prompt_records(args)
    # lightning_ft's PromptData draws its first epoch in this order; TRL, unshuffled, takes the same one.
    order = SeededRandomSampler(records, seed=args.seed).order(epoch=0)
    rows = [
        {"prompt": [{"role": "user", "content": records[i]["question"]}], "answer": records[i]["answer"]} for i in order
    ]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=attn_implementation(args.accelerator)
    )

    def answer_sentence(prompts: list, completions: list[list[dict]], **kwargs: Any) -> list[float]:
        """TRL's conversational completions are ``[{"role": "assistant", "content": text}]``: score the text."""
        texts = [completion[-1]["content"] for completion in completions]
        return clock.reward([prompt[-1]["content"] for prompt in prompts], texts)

    class Steps(TrainerCallback):
        def on_step_begin(self, *unused: Any, **kwargs: Any) -> None:
            clock.begin_step()

        def on_step_end(self, *unused: Any, **kwargs: Any) -> None:
            clock.end_step()

    completions_per_step = args.prompts_per_step * GROUP_SIZE
    config = GRPOConfig(
        output_dir=str(Path(args.workdir) / "trl"),
        # One optimiser step = one generation batch of every completion of the step's prompts, no accumulation:
        # steps_per_generation defaults to gradient_accumulation_steps (1), so generation_batch_size = batch size.
        per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1,
        num_generations=GROUP_SIZE,
        max_completion_length=args.max_completion_length,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        beta=args.beta,
        num_iterations=1,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        mask_truncated_completions=False,
        # TRL multiplies the KL term by the (differentiable, value 1) ratio by default, which changes its gradient;
        # off, the KL term is the plain k3 estimate lightning_ft uses.
        use_bias_correction_kl=False,
        disable_dropout=True,
        use_vllm=False,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        optim="adamw_torch",  # torch.optim.AdamW as lightning_ft (TRL's default is the fused variant)
        max_grad_norm=1.0,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=args.precision == "bf16",
        use_cpu=args.accelerator == "cpu",
        gradient_checkpointing=args.gradient_checkpointing == "on",
        shuffle_dataset=False,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[answer_sentence],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(),
        callbacks=[Steps()],
    )
    clock.time_sections(GRPOTrainer, "_get_per_token_logps_and_entropies")
    trainer.train()


def worker(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from lightning_ft.model.generation import stop_token_ids

    stop_ids = stop_token_ids(AutoTokenizer.from_pretrained(args.tokenizer))
    clock = StepClock(args.warmup, stop_ids, [record["question"] for record in prompt_records(args)])
    if args.worker == "lightning_ft":
        run_lightning_ft(args, clock)
    else:
        run_trl(args, clock)
    if len(clock.steps) != args.warmup + args.steps:
        raise RuntimeError(f"{args.worker} took {len(clock.steps)} steps, not {args.warmup + args.steps}")
    result = clock.result(args.prompts_per_step, args.last)
    result.update(system=args.worker, threads=os.environ.get("OMP_NUM_THREADS"))
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K in Alpaca fields (instruction, output)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--prompts-per-step", type=int, default=1, help="prompts per optimiser step, 8 samples each")
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--beta", type=float, default=0.04, help="KL weight (0: no reference forward)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=2, help="optimiser steps before timing")
    parser.add_argument("--steps", type=int, default=6, help="timed optimiser steps")
    parser.add_argument("--last", type=int, default=3, help="last timed steps whose mean reward is last_reward")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="prompt order, adapter initialisation, sampling")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--gradient-checkpointing", choices=["on", "off"], default="on", help="for both systems (TRL's default: on)"
    )
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    systems = args.systems.split(",")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}")
    args.workdir_root = tempfile.mkdtemp(prefix="grpo-bench-")
    if not Path(args.data).exists():
        sys.exit(f"{args.data} is missing (../shared/data ships with the team's checkouts)")
    prepare_model(args)
    runs = run_rounds(__file__, args, systems, args.pairs, skip=("systems", "pairs"))
    summary: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir", "workdir_root")},
        "fixed": f"LoRA r16 alpha32 all-linear; G={GROUP_SIZE}; temperature {TEMPERATURE}, top_p 1, top_k 0; "
        "token-level loss (TRL dapo); scale_rewards group; clip 0.2; max_grad_norm 1; dropout off; reward "
        f"{REWARD}",
    }
    summary.update(medians(runs, SUMMARY_KEYS))
    orders = {json.dumps(result["prompt_order"]) for results in runs.values() for result in results}
    summary["same_prompts_in_same_order"] = len(orders) == 1
    if "lightning_ft" in runs and "trl" in runs:
        summary["ratio_completions_per_s"] = (
            summary["lightning_ft_completions_per_s"] / summary["trl_completions_per_s"]
        )
        summary["ratio_peak_rss"] = summary["lightning_ft_peak_rss_mb"] / summary["trl_peak_rss_mb"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

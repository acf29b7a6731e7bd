"""Training throughput of SFT, DPO and GRPO on 1B- and 3B-class Llama shapes, for a bare GPU machine.

Nothing is downloaded: each model is built from a config with random weights (Llama-3.2-1B / 3B shapes with the
vocabulary of the tokenizer given) and the records are synthetic (seeded lognormal prompt and response lengths, in
random words of the tokenizer's vocabulary), so only a tokenizer directory travels. The runs use the project's own
data modules and algorithms: LoRA r16 on every linear layer, bf16 weights under ``bf16-mixed``, flash-attention 2
when ``flash_attn`` imports (packed SFT and DPO rows through its varlen kernels), PyTorch SDPA otherwise.

Every (size, algorithm) runs in its own process with a timeout, so one failure does not end the rest, and the whole
script keeps to ``--budget-s``. After the warm-up steps each run measures real (non-pad) tokens/s, MFU (model FLOPs
per token x tokens/s over the chip's bf16 peak), the peak GPU memory and, for GRPO, completions/s and the share of
the step spent generating. One line per run, then one JSON line; with ``--log-dir`` (default ``$OUT``) the workers'
output goes to ``gpu_bench_runs.log`` and the summary to ``gpu_bench.json``.

Usage:
  python tools/bench/gpu_bench.py --save-tokenizer .cache/models/smollm2-tokenizer   # once, here: from the GGUF
  python tools/bench/gpu_bench.py                                 # on the GPU (tools/bench/gpu.sh runs it)
  OMP_NUM_THREADS=1 python tools/bench/gpu_bench.py --device cpu --tiny --tokenizer DIR   # every path, on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # lightning_ft from this checkout, installed or not
sys.path.append(str(ROOT / "tools" / "bench"))  # sft_throughput (FLOPs count, LoRA config); last: shadows nothing
REQUIRED = ("torch", "lightning", "transformers", "peft", "datasets", "torchdata")
WHEELS_HINT = "on the GPU machine carry them as wheels: see `bash tools/bench/gpu.sh prepare`"

try:
    import lightning as L
    import torch
    from sft_throughput import lora_config, model_flops_per_token

    from lightning_ft.algorithms import DPO, GRPO, SFT
    from lightning_ft.data import InstructionData, PreferenceData, PromptData
    from lightning_ft.model import ModelSpec
    from lightning_ft.model.trainable import count_parameters
except ImportError as import_error:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    sys.exit(f"gpu_bench: cannot import {import_error.name} ({import_error}); missing: {missing}. {WHEELS_HINT}")

ALGORITHMS = ("sft", "dpo", "grpo")
SMOLLM2_GGUF_DIR = ROOT / ".cache" / "models" / "smollm2"
DEFAULT_TOKENIZER = ROOT / ".cache" / "models" / "smollm2-tokenizer"
REWARD = "lightning_ft.rewards.gsm8k_exact_match"  # reads each prompt record's `answer`
SHAPES = {  # Llama-3.2-1B and -3B: tied embeddings, grouped-query attention; the vocabulary is the tokenizer's
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "intermediate_size": 8192},
    "3b": {"hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24, "intermediate_size": 8192},
}
TINY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
MIN_RUN_S = 30  # a run (or a model build) is not started with less of the budget left
H200_DENSE_BF16 = 989.4e12  # datasheet; Lightning's table has no entry for the plain name "NVIDIA H200"


@dataclass(frozen=True)
class Workload:
    """Per optimiser step: packed SFT rows, DPO pairs, GRPO prompts (each sampled ``generations`` times)."""

    sft_rows: int
    dpo_pairs: int
    grpo_prompts: int


@dataclass(frozen=True)
class Lengths:
    """Words per synthetic text (lognormal around a median, clipped) and the token limits of the runs."""

    prompt_median: float
    response_median: float
    sigma: float
    max_words: int
    sft_max_length: int
    dpo_max_length: int
    prompt_max_length: int


WORKLOADS = {"1b": Workload(sft_rows=8, dpo_pairs=16, grpo_prompts=8), "3b": Workload(4, 8, 4)}
TINY_WORKLOAD = Workload(2, 2, 2)
GPU_LENGTHS = Lengths(40, 120, 0.8, 1000, sft_max_length=2048, dpo_max_length=1024, prompt_max_length=512)
TINY_LENGTHS = Lengths(6, 12, 0.5, 40, sft_max_length=128, dpo_max_length=128, prompt_max_length=64)


@dataclass(frozen=True)
class Job:
    """One measured run, handed to its worker process (as JSON to a fresh interpreter)."""

    size: str
    algorithm: str
    model_dir: str
    data_file: str
    device: str
    attention: str
    batch_size: int
    max_length: int
    warmup: int
    steps: int
    generations: int
    new_tokens: int
    seed: int


# ---- synthetic data ----


def vocabulary_words(tokenizer: Any) -> list[str]:
    """The whole words of the vocabulary (ASCII letters, two or more): the material of the synthetic texts."""
    decoded = tokenizer.batch_decode([[index] for index in range(len(tokenizer))])
    words = sorted({text.strip() for text in decoded if text.strip().isascii() and text.strip().isalpha()})
    words = [word for word in words if len(word) > 1]
    if len(words) < 10:
        raise ValueError(f"the tokenizer has only {len(words)} whole words in its vocabulary: give another")
    return words


def text(rng: random.Random, words: list[str], median: float, lengths: Lengths) -> str:
    count = max(1, min(lengths.max_words, round(rng.lognormvariate(math.log(median), lengths.sigma))))
    return " ".join(rng.choices(words, k=count)).capitalize() + "."


def synthetic_records(algorithm: str, count: int, words: list[str], lengths: Lengths, seed: int) -> list[dict]:
    """Alpaca records (SFT), prompt/chosen/rejected pairs (DPO) or prompts with a reference answer (GRPO)."""
    rng = random.Random(f"{seed}:{algorithm}")
    prompt = lambda: text(rng, words, lengths.prompt_median, lengths)  # noqa: E731
    response = lambda: text(rng, words, lengths.response_median, lengths)  # noqa: E731
    if algorithm == "sft":
        return [
            {"instruction": prompt(), "input": prompt() if rng.random() < 0.4 else "", "output": response()}
            for _ in range(count)
        ]
    if algorithm == "dpo":
        return [{"prompt": prompt(), "chosen": response(), "rejected": response()} for _ in range(count)]
    return [{"prompt": prompt(), "answer": str(rng.randint(0, 999))} for _ in range(count)]


def record_count(algorithm: str, batch_size: int, steps: int, lengths: Lengths) -> int:
    """Records for ``steps`` batches and some to spare (packed SFT rows hold several records each)."""
    if algorithm != "sft":
        return math.ceil(1.25 * batch_size * steps) + batch_size
    mean_words = math.exp(lengths.sigma**2 / 2) * (1.4 * lengths.prompt_median + lengths.response_median)
    per_row = lengths.sft_max_length / (1.2 * mean_words + 20)  # ~1.2 tokens per word, plus the chat template
    return math.ceil(1.25 * batch_size * steps * max(1.0, per_row)) + 8


# ---- models ----


def build_model(shape: dict[str, int], tokenizer: Any, directory: Path, device: str, seed: int) -> None:
    """A Llama of ``shape`` with random weights (bf16, initialised on the GPU there), saved with the tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=min(8, shape["num_attention_heads"] // 2),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def attention_implementation(device: str) -> str:
    if device == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def save_tokenizer(directory: str) -> None:
    """SmolLM2's tokenizer (with its chat template) from the GGUF here, small enough to carry (under 5 MB)."""
    ModelSpec(path=str(SMOLLM2_GGUF_DIR)).load_tokenizer().save_pretrained(directory)
    size = sum(file.stat().st_size for file in Path(directory).rglob("*") if file.is_file())
    if size > 5 * 10**6:
        sys.exit(f"{directory} holds {size / 1e6:.1f} MB: too much to carry as a tokenizer")
    print(f"saved SmolLM2's tokenizer to {directory} ({size / 1e6:.1f} MB)")


# ---- one run, in its worker process ----


class TimedGRPO(GRPO):
    """GRPO that records, per training step, the seconds spent sampling and the rollout's real tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation_seconds: list[float] = []
        self.rollout_tokens: list[int] = []  # prompts + completions, padding left out
        self.sampled_tokens: list[int] = []  # what generation ran: completions, and each prompt once
        self.rollout_completions: list[int] = []

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        synchronize(self.device)
        start = time.perf_counter()
        result = super().sample(*args, **kwargs)
        synchronize(self.device)
        self.generation_seconds.append(time.perf_counter() - start)
        return result

    def complete(self, batch: dict[str, Any], generations: int, temperature: float) -> Any:
        completions, per_reward = super().complete(batch, generations, temperature)
        completion_tokens = int(completions.completion_mask.sum())
        self.rollout_tokens.append(int(completions.attention_mask.sum()))
        self.sampled_tokens.append(completion_tokens + int(batch["attention_mask"].sum()))
        self.rollout_completions.append(len(completions.scores))
        return completions, per_reward


class StepClock(L.Callback):
    """Times the training steps after ``warmup`` (device synchronised) and counts their real tokens."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seen = 0
        self.steps = 0
        self.tokens = 0
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if self.seen == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Any, i: int) -> None:
        self.seen += 1
        if self.seen > self.warmup:
            synchronize(module.device)
            self.end = time.perf_counter()
            self.steps += 1
            is_grpo = isinstance(module, TimedGRPO)
            self.tokens += module.rollout_tokens[-1] if is_grpo else int(batch["attention_mask"].sum())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_run(job: Job) -> tuple[L.LightningModule, L.LightningDataModule]:
    on_cuda = job.device == "cuda"
    spec = ModelSpec(job.model_dir, dtype="bfloat16" if on_cuda else "float32", attn_implementation=job.attention)
    common = {
        "peft": lora_config(),
        "optimizer": lambda params: torch.optim.AdamW(params, lr=1e-5),
        "lr_scheduler": "constant",
    }
    data_options = {"max_length": job.max_length, "batch_size": job.batch_size, "seed": job.seed}
    if job.algorithm == "sft":
        module = SFT(spec, **common)
        return module, InstructionData(job.data_file, packing=True, tokenizer=module.tokenizer, **data_options)
    if job.algorithm == "dpo":
        module = DPO(spec, **common)
        packing = job.attention == "flash_attention_2"  # packed pairs pay off through varlen kernels only
        return module, PreferenceData(job.data_file, packing=packing, tokenizer=module.tokenizer, **data_options)
    module = TimedGRPO(spec, [REWARD], num_generations=job.generations, max_new_tokens=job.new_tokens, **common)
    return module, PromptData(job.data_file, tokenizer=module.tokenizer, **data_options)


def mean_sequence_length(job: Job, module: L.LightningModule, data: L.LightningDataModule) -> float:
    if job.algorithm == "grpo":
        return sum(module.rollout_tokens) / sum(module.rollout_completions)
    rows = data.datasets["train"]
    columns = ["input_ids"] if job.algorithm == "sft" else ["chosen_input_ids", "rejected_input_ids"]
    lengths = [len(ids) for column in columns for ids in rows[column]]
    return sum(lengths) / len(lengths)


def forward_flops_per_token(model: torch.nn.Module, mean_context: float) -> float:
    """A forward pass alone (generation, the reference): 2 per matmul weight, causal attention 4 per layer and unit."""
    weights = sum(
        parameter.numel()
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
        for parameter in module.parameters(recurse=False)
        if parameter.ndim == 2
    )
    return 2 * weights + 4 * model.config.num_hidden_layers * model.config.hidden_size * mean_context


def measured_flops(job: Job, module: L.LightningModule, data: L.LightningDataModule, clock: StepClock) -> float:
    """Model FLOPs of the measured steps: the policy's forward and backward over every real token (`model_flops_
    per_token`), plus forward passes: DPO's reference over every token; GRPO's reference likewise, and generation."""
    context = mean_sequence_length(job, module, data) / 2
    forward = forward_flops_per_token(module.model, context)
    flops = clock.tokens * model_flops_per_token(module.model, context)
    if job.algorithm in ("dpo", "grpo"):
        flops += clock.tokens * forward
    if job.algorithm == "grpo":
        flops += sum(module.sampled_tokens[-clock.steps :]) * forward
    return flops


def run_job(job: Job) -> dict[str, Any]:
    """Train ``warmup + steps`` steps and measure the last ``steps``."""
    import datasets

    datasets.config.HF_DATASETS_CACHE = str(Path(job.data_file).parent / "datasets-cache")
    L.seed_everything(job.seed, verbose=False)
    module, data = build_run(job)
    clock = StepClock(job.warmup)
    trainer = L.Trainer(
        accelerator=job.device,
        devices=1,
        precision="bf16-mixed" if job.device == "cuda" else "32-true",
        max_steps=job.warmup + job.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=None if job.algorithm == "grpo" else 1.0,  # GRPO clips itself (manual optimisation)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=data)
    if clock.steps == 0:
        raise RuntimeError(f"no step after the {job.warmup} warm-up steps was measured (too few records?)")
    seconds = clock.end - clock.start
    trainable, total = count_parameters(module.model)
    result = {
        "size": job.size,
        "algorithm": job.algorithm,
        "tokens_per_s": clock.tokens / seconds,
        "step_s": seconds / clock.steps,
        "tokens_per_step": clock.tokens / clock.steps,
        "mean_sequence_length": mean_sequence_length(job, module, data),
        "model_tflops_per_s": measured_flops(job, module, data, clock) / seconds / 1e12,
        "parameters": total,
        "trainable_parameters": trainable,
        "attention": job.attention,
        "batch_size": job.batch_size,
    }
    if job.algorithm == "grpo":
        result["completions_per_s"] = sum(module.rollout_completions[-clock.steps :]) / seconds
        result["generation_share"] = sum(module.generation_seconds[-clock.steps :]) / seconds
    if job.device == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def write_result(job: Job, path: Path) -> None:
    path.write_text(json.dumps(run_job(job)))


def forked_job(job: Job, output: Path, result: Path) -> None:
    """The forked worker: its output (Python's and the libraries') goes to ``output``."""
    with output.open("w") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
    sys.stdout, sys.stderr = (os.fdopen(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
    write_result(job, result)


# ---- the driver ----


def run_isolated(job: Job, timeout: float, isolation: str, output: Path) -> dict[str, Any]:
    """Run ``job`` in its own process: forked from this one (no new imports; only while CUDA is untouched here),
    or a fresh interpreter. A crash or timeout becomes an ``error`` entry with the last line the worker printed."""
    result = output.with_suffix(".json")
    failure = f"timed out after {timeout:g}s"
    if isolation == "fork" and not torch.cuda.is_initialized():
        process = multiprocessing.get_context("fork").Process(target=forked_job, args=(job, output, result))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
        else:
            failure = f"exit code {process.exitcode}"
        process.join()
    else:
        command = [sys.executable, __file__, "--job", json.dumps(asdict(job)), "--result", str(result)]
        with output.open("w") as file, contextlib.suppress(subprocess.TimeoutExpired):
            code = subprocess.run(command, stdout=file, stderr=subprocess.STDOUT, timeout=timeout).returncode
            failure = f"exit code {code}"
    if result.exists():
        return json.loads(result.read_text())
    log = output.read_text(errors="replace") if output.exists() else ""  # a worker killed at once wrote none
    printed = [row for row in log.splitlines() if row.strip()]
    return {"size": job.size, "algorithm": job.algorithm, "error": f"{failure}: {(printed or ['no output'])[-1][:300]}"}


def peak_flops(device: str) -> tuple[float | None, str]:
    """The chip's bf16 peak: Lightning's table, or for an H200 it lists under no name, the dense datasheet figure."""
    if device != "cuda":
        return None, "no peak on CPU"
    from lightning.fabric.utilities.throughput import get_available_flops

    flops = get_available_flops(torch.device("cuda"), torch.bfloat16)
    if flops:
        return float(flops), "lightning get_available_flops"
    if "h200" in torch.cuda.get_device_name().lower():
        return H200_DENSE_BF16, "H200 datasheet, dense bf16"
    return None, f"unknown for {torch.cuda.get_device_name()}"


def matmul_tflops(size: int = 8192, repeats: int = 20) -> float:
    """The bf16 matrix-product rate on random data: the practical ceiling beside the datasheet's."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    end.synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def report_line(result: dict[str, Any]) -> str:
    name = f"{result['size']:>3} {result['algorithm']:<4}"
    if "error" in result:
        return f"{name} FAILED {result['error']}"
    line = f"{name} {result['tokens_per_s']:>10,.0f} tokens/s  step {result['step_s']:.2f}s"
    line += f"  MFU {result['mfu']:.1%}" if "mfu" in result else ""
    line += f"  peak {result['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in result else ""
    if result["algorithm"] == "grpo":
        line += f"  {result['completions_per_s']:.1f} completions/s, {result['generation_share']:.0%} generating"
    return line + f"  [{result['attention']}, batch {result['batch_size']}]"


def plan_jobs(args: argparse.Namespace, workdir: Path, tokenizer: Any) -> dict[str, list[Job]]:
    """Per size, its jobs; writes each algorithm's synthetic data once, sized for the largest batch."""
    lengths = TINY_LENGTHS if args.tiny else GPU_LENGTHS
    workloads = {size: TINY_WORKLOAD if args.tiny else WORKLOADS[size] for size in args.sizes}
    batch = {
        "sft": {size: w.sft_rows for size, w in workloads.items()},
        "dpo": {size: w.dpo_pairs for size, w in workloads.items()},
        "grpo": {size: w.grpo_prompts for size, w in workloads.items()},
    }
    steps = {a: (args.grpo_warmup, args.grpo_steps) if a == "grpo" else (args.warmup, args.steps) for a in ALGORITHMS}
    max_length = {"sft": lengths.sft_max_length, "dpo": lengths.dpo_max_length, "grpo": lengths.prompt_max_length}
    words = vocabulary_words(tokenizer)
    files = {}
    for algorithm in args.algorithms:
        count = record_count(algorithm, max(batch[algorithm].values()), sum(steps[algorithm]), lengths)
        records = synthetic_records(algorithm, count, words, lengths, args.seed)
        files[algorithm] = workdir / f"{algorithm}.jsonl"
        files[algorithm].write_text("".join(json.dumps(record) + "\n" for record in records))
    attention = attention_implementation(args.device)
    return {
        size: [
            Job(
                size=size,
                algorithm=algorithm,
                model_dir=str(workdir / f"model-{size}"),
                data_file=str(files[algorithm]),
                device=args.device,
                attention=attention,
                batch_size=batch[algorithm][size],
                max_length=max_length[algorithm],
                warmup=steps[algorithm][0],
                steps=steps[algorithm][1],
                generations=args.generations,
                new_tokens=args.new_tokens,
                seed=args.seed,
            )
            for algorithm in args.algorithms
        ]
        for size in args.sizes
    }


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    tokenizer = ModelSpec(path=args.tokenizer).load_tokenizer()
    peak, peak_source = peak_flops(args.device)
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "peak_tflops": peak / 1e12 if peak else None,
        "peak_source": peak_source,
        "matmul_tflops": matmul_tflops() if args.device == "cuda" else None,
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("job", "result", "save_tokenizer")},
        "lora": "r=16 alpha=32 all-linear",
        "results": [],
    }
    log = Path(args.log_dir) / "gpu_bench_runs.log" if args.log_dir else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
    for size, jobs in plan_jobs(args, workdir, tokenizer).items():
        if args.budget_s - (time.monotonic() - started) >= MIN_RUN_S:
            build_model(TINY_SHAPE if args.tiny else SHAPES[size], tokenizer, Path(jobs[0].model_dir), args.device, 0)
        for job in jobs:
            left = args.budget_s - (time.monotonic() - started)
            output = workdir / f"{size}-{job.algorithm}.log"
            if left < MIN_RUN_S or not Path(job.model_dir).exists():
                result = {"size": size, "algorithm": job.algorithm, "error": "skipped: the time budget is spent"}
            else:
                result = run_isolated(job, min(args.run_timeout_s, left), args.isolation, output)
            if peak and "model_tflops_per_s" in result:
                result["mfu"] = result["model_tflops_per_s"] * 1e12 / peak
            print(report_line(result), flush=True)
            summary["results"].append(result)
            if log is not None and output.exists():
                with log.open("a") as file:
                    file.write(f"==== {size} {job.algorithm} ====\n{output.read_text(errors='replace')}\n")
        shutil.rmtree(jobs[0].model_dir, ignore_errors=True)
    summary["failed"] = sum("error" in result for result in summary["results"])
    summary["seconds"] = time.monotonic() - started
    return summary


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in (*REQUIRED, "flash_attn", "bitsandbytes"):
        try:
            found[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            found[name] = None
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="a tokenizer dir with a chat template")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="write SmolLM2's tokenizer (from the GGUF) and stop")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny Llama, tiny batches, 1+1 steps: a smoke test")
    parser.add_argument("--sizes", type=lambda s: s.split(","), default=list(SHAPES), help="e.g. 1b,3b")
    parser.add_argument("--algorithms", type=lambda s: s.split(","), default=list(ALGORITHMS), help="sft,dpo,grpo")
    parser.add_argument("--warmup", type=int, help="SFT and DPO steps before measuring (default 2; tiny 1)")
    parser.add_argument("--steps", type=int, help="SFT and DPO steps measured (default 5; tiny 1)")
    parser.add_argument("--grpo-warmup", type=int, help="default 1")
    parser.add_argument("--grpo-steps", type=int, help="default 2; tiny 1")
    parser.add_argument("--generations", type=int, help="GRPO completions per prompt (default 8; tiny 2)")
    parser.add_argument("--new-tokens", type=int, help="GRPO's longest completion (default 128; tiny 8)")
    parser.add_argument("--budget-s", type=float, default=420, help="the whole script's time; later runs skip")
    parser.add_argument("--run-timeout-s", type=float, default=150, help="one run's time")
    parser.add_argument(
        "--isolation", choices=["auto", "fork", "exec"], default="auto", help="auto: fork on CPU, exec on CUDA"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=os.environ.get("OUT"), help="default: $OUT when set")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [s for s in args.sizes if s not in SHAPES] + [a for a in args.algorithms if a not in ALGORITHMS]
    if unknown:
        parser.error(f"unknown sizes or algorithms {unknown}: choose from {list(SHAPES)} and {list(ALGORITHMS)}")
    defaults = {"warmup": 2, "steps": 5, "grpo_warmup": 1, "grpo_steps": 2, "generations": 8, "new_tokens": 128}
    tiny = {"warmup": 1, "steps": 1, "grpo_warmup": 1, "grpo_steps": 1, "generations": 2, "new_tokens": 8}
    for name, value in (tiny if args.tiny else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.isolation == "auto":  # the parent touches CUDA (models, the matmul ceiling): fresh interpreters there
        args.isolation = "exec" if args.device == "cuda" else "fork"
    return args


def main() -> None:
    args = parse_args()
    if args.save_tokenizer:
        save_tokenizer(args.save_tokenizer)
        return
    if args.job:
        write_result(Job(**json.loads(args.job)), Path(args.result))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the workers load local files only: never wait for a network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers fork after this process tokenized
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_bench: torch {torch.__version__} sees no CUDA device (off a GPU: --device cpu --tiny)")
    if not Path(args.tokenizer).is_dir():
        sys.exit(f"gpu_bench: no tokenizer at {args.tokenizer}: --save-tokenizer writes it (it needs the GGUF)")
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-"))  # data, models, the workers' output
    try:
        summary = run_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.log_dir:
        (Path(args.log_dir) / "gpu_bench.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    sys.exit(1 if summary["failed"] else 0)


if __name__ == "__main__":
    main()

"""What the side-by-side benchmarks share: peak-memory sampling, the model copy every system loads, the LoRA and
attention settings, model FLOPs, and the alternating rounds of worker processes whose results they compare."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_MODEL = ROOT / ".cache" / "models" / "smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PeakRss:
    """Samples this process's resident memory every 50 ms between `start` and `stop`."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._running = False

    def start(self) -> None:
        self._running = True
        self.peak = self.process.memory_info().rss
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def stop(self) -> float:
        """Peak resident memory in MiB."""
        self._running = False
        return max(self.peak, self.process.memory_info().rss) / 2**20


def prepare_model(args: argparse.Namespace) -> None:
    """Point ``args.model`` and ``args.tokenizer`` at plain HF directories every system loads the same way.

    SmolLM2 is fetched when missing. transformers keeps GGUF weights packed and casts around every matmul in bf16:
    every system gets the same plain safetensors copy (converted once, cached) so none pays for the file format.
    """
    model = Path(args.model)
    if not (model / GGUF).exists() and not (model / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_smollm2.py"), "--dest", args.model], check=True)
    if (model / GGUF).exists():
        from lightning_ft.model.spec import ModelSpec, dense_gguf_dir

        spec = ModelSpec(path=args.model)
        args.tokenizer = str(Path(args.workdir_root) / "tokenizer")
        spec.load_tokenizer().save_pretrained(args.tokenizer)
        args.model = str(dense_gguf_dir(spec))
    else:
        args.tokenizer = args.model


def attn_implementation(accelerator: str) -> str:
    """flash-attention (varlen over packed rows) on GPU when installed, else PyTorch SDPA; the same for all."""
    if accelerator == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def lora_config():
    import peft

    return peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def model_flops_per_token(model, mean_context: float) -> float:
    """Model FLOPs of one trained token with LoRA: forward (2 per frozen or trainable weight) and input gradients (2)
    through every matmul weight, weight gradients (2) for trainable ones only, and causal attention over
    ``mean_context`` earlier tokens (forward 4, backward 8 per layer and hidden unit). Recomputation is not counted."""
    import torch

    frozen = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for parameter in module.parameters(recurse=False):
                if parameter.ndim == 2:
                    if parameter.requires_grad:
                        trainable += parameter.numel()
                    else:
                        frozen += parameter.numel()
    config = model.config
    attention = 12 * config.num_hidden_layers * config.hidden_size * mean_context
    return 4 * frozen + 6 * trainable + attention


def add_device_metrics(result: dict, model, mean_length: float) -> None:
    """Achieved model TFLOP/s (and MFU against the chip's bf16 peak on GPU); peak GPU memory."""
    import torch
    from lightning.fabric.utilities.throughput import get_available_flops

    flops = model_flops_per_token(model, mean_length / 2) * result["tokens_per_s"]
    result["model_tflops_per_s"] = flops / 1e12
    device = next(model.parameters()).device
    if device.type == "cuda":
        peak = get_available_flops(device, torch.bfloat16)
        result["mfu"] = flops / peak if peak else None
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


def run_rounds(
    script: str, args: argparse.Namespace, systems: Iterable[str], rounds: int, skip: Iterable[str] = ()
) -> dict[str, list[dict]]:
    """Run every system in its own process (``script --worker SYSTEM``), alternating, ``rounds`` times; each worker
    prints ``RESULT {json}``. The other options of ``args`` are passed on as flags (except those in ``skip``)."""
    skip = {"worker", "workdir", "workdir_root", *skip}
    runs: dict[str, list[dict]] = {system: [] for system in systems}
    for round_index in range(rounds):
        for system in runs:
            with tempfile.TemporaryDirectory() as workdir:
                command = [sys.executable, script, "--worker", system, "--workdir", workdir] + [
                    f"--{name.replace('_', '-')}={value}"
                    for name, value in vars(args).items()
                    if name not in skip and value is not None
                ]
                output = subprocess.run(command, capture_output=True, text=True)
                line = next((row for row in output.stdout.splitlines() if row.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{system} failed:\n{output.stdout[-3000:]}\n{output.stderr[-5000:]}")
                result = json.loads(line[len("RESULT ") :])
                runs[system].append(result)
                print(f"round {round_index} {system}: {json.dumps(result)}", flush=True)
    return runs


def medians(runs: dict[str, list[dict]], keys: Iterable[str]) -> dict[str, float | None]:
    """``{system}_{key}``: the median over a system's rounds of each key (``None`` where no round has it)."""
    summary: dict[str, float | None] = {}
    for system, results in runs.items():
        for key in keys:
            values = [result[key] for result in results if result.get(key) is not None]
            summary[f"{system}_{key}"] = statistics.median(values) if values else None
    return summary


def step_timer_callback(warmup: int, count_tokens: Callable[[dict], int], loss_key: str = "train/loss"):
    """A Lightning callback that times the training steps after ``warmup`` (global steps), counts their real tokens
    with ``count_tokens(batch)`` and samples peak RSS. Built lazily, so TRL workers need not import Lightning."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.rss = PeakRss()
            self.tokens = 0
            self.steps = 0
            self.losses: list[float] = []
            self.start: float | None = None
            self.end = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step >= warmup and self.start is None:
                self.start = time.perf_counter()
                self.rss.start()
            if self.start is not None:
                self.tokens += count_tokens(batch)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if self.start is not None:
                self.steps += 1
                if loss_key in trainer.callback_metrics:
                    self.losses.append(float(trainer.callback_metrics[loss_key]))
                self.end = time.perf_counter()

        def result(self) -> dict:
            return {
                "tokens_per_s": self.tokens / (self.end - self.start),
                "peak_rss_mb": self.rss.stop(),
                "mean_loss": statistics.fmean(self.losses) if self.losses else None,
                "tokens": self.tokens,
                "tokens_per_step": self.tokens / max(self.steps, 1),
                "seconds": self.end - self.start,
                "steps": self.steps,
            }

    return StepTimer()

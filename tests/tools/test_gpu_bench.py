"""The GPU benchmark (tools/bench/gpu_bench.py) in its tiny CPU mode: every (size, algorithm) run measured in its
own process, with the tiny tokenizer of the fixtures instead of SmolLM2's; a failing run reported, not fatal."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench" / "gpu_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_tiny(tokenizer_dir: Path, log_dir: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    command = [sys.executable, str(BENCH), "--device", "cpu", "--tiny", "--tokenizer", str(tokenizer_dir)]
    command += ["--log-dir", str(log_dir), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def tokenizer_dir(tiny_tokenizer, tmp_path: Path) -> Path:
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
    return tmp_path / "tokenizer"


@pytest.mark.slow  # about 25 s on 2 cores: one interpreter's imports, then six forked runs
def test_tiny_cpu_mode_measures_every_size_and_algorithm(tokenizer_dir, tmp_path):
    result, summary = run_tiny(tokenizer_dir, tmp_path / "logs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entries = {(entry["size"], entry["algorithm"]): entry for entry in summary["results"]}
    assert sorted(entries) == sorted((size, algorithm) for size in ("1b", "3b") for algorithm in ("sft", "dpo", "grpo"))
    for entry in entries.values():
        assert "error" not in entry, entry
        assert entry["tokens_per_s"] > 0 and entry["model_tflops_per_s"] > 0
    for size in ("1b", "3b"):
        grpo = entries[(size, "grpo")]
        assert grpo["completions_per_s"] > 0 and 0 < grpo["generation_share"] < 1
    assert summary["failed"] == 0 and summary["settings"]["isolation"] == "fork"
    assert json.loads((tmp_path / "logs" / "gpu_bench.json").read_text())["results"] == summary["results"]
    assert "==== 3b grpo ====" in (tmp_path / "logs" / "gpu_bench_runs.log").read_text()


def test_a_failing_or_overlong_run_becomes_an_error_entry(tmp_path):
    bench = load_bench()
    sizes = {"batch_size": 2, "max_length": 64, "warmup": 1, "steps": 1, "generations": 2, "new_tokens": 8}
    job = bench.Job(
        size="1b",
        algorithm="sft",
        model_dir=str(tmp_path / "no-model"),
        data_file=str(tmp_path / "no-data.jsonl"),
        device="cpu",
        attention="sdpa",
        seed=0,
        **sizes,
    )
    failed = bench.run_isolated(job, timeout=120, isolation="fork", output=tmp_path / "failed.log")
    assert failed["error"].startswith("exit code 1: ") and (tmp_path / "failed.log").read_text()
    stopped = bench.run_isolated(job, timeout=0.01, isolation="fork", output=tmp_path / "stopped.log")
    assert stopped["error"].startswith("timed out after 0.01s")


def test_synthetic_records_are_seeded_and_shaped():
    bench = load_bench()
    words = [f"word{letter}" for letter in "abcdefghijkl"]
    first = bench.synthetic_records("dpo", 50, words, bench.TINY_LENGTHS, seed=3)
    assert first == bench.synthetic_records("dpo", 50, words, bench.TINY_LENGTHS, seed=3)
    assert first != bench.synthetic_records("dpo", 50, words, bench.TINY_LENGTHS, seed=4)
    assert {tuple(record) for record in first} == {("prompt", "chosen", "rejected")}
    lengths = [len(record["chosen"].split()) for record in first]
    assert 1 <= min(lengths) and max(lengths) <= bench.TINY_LENGTHS.max_words and len(set(lengths)) > 5
    sft = bench.synthetic_records("sft", 20, words, bench.TINY_LENGTHS, seed=0)
    assert {tuple(record) for record in sft} == {("instruction", "input", "output")}
    assert {tuple(record) for record in bench.synthetic_records("grpo", 5, words, bench.TINY_LENGTHS, 0)} == {
        ("prompt", "answer")
    }

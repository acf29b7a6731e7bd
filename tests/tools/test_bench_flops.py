"""The benchmark's model-FLOPs count (the MFU numerator) on the tiny Llama, against a hand count."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import peft

from lightning_ft.model import ModelSpec
from lightning_ft.model.trainable import build_trainable_model

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench" / "sft_throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("sft_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_flops_per_token_counts_frozen_trainable_and_attention(tiny_model_dir):
    bench = load_bench()
    model = build_trainable_model(
        ModelSpec(path=str(tiny_model_dir)), peft.LoraConfig(r=4, target_modules="all-linear")
    )
    # per layer: q 32x32, k 32x16, v 32x16, o 32x32, gate/up 32x64, down 64x32 = 9,216; two layers + lm_head 400x32
    frozen = 2 * 9_216 + 12_800
    trainable = 2 * 4 * (64 + 48 + 48 + 64 + 96 + 96 + 96)  # r * (in + out) per adapted linear
    attention = 12 * 2 * 32 * 10  # layers x hidden x mean context of 10
    assert bench.model_flops_per_token(model, mean_context=10) == 4 * frozen + 6 * trainable + attention

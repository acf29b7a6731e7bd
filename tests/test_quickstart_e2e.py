"""End to end on the real SmolLM2-135M-Instruct (GGUF): the quickstart recipe trains a few steps from the command
line, exports an adapter, answers with `lightning-ft chat`, and merges into a model that plain transformers loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_ft.model.export import load_export, merge_export
from tests.conftest import ROOT
from tests.helpers import greedy_reply

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_quickstart_trains_exports_chats_and_merges(smollm2_dir, tmp_path):
    run(sys.executable, "tools/make_quickstart_data.py", "--out", str(tmp_path / "data"), "--train", "24", "--val", "8")
    run(
        "lightning-ft",
        "fit",
        "--config",
        "configs/quickstart.yaml",
        "--model.model.path",
        str(smollm2_dir),
        "--data.train",
        str(tmp_path / "data" / "train.jsonl"),
        "--data.val",
        str(tmp_path / "data" / "val.jsonl"),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.max_steps",
        "3",
        "--trainer.val_check_interval",
        "3",
        "--trainer.limit_val_batches",
        "1",
    )
    (export,) = (tmp_path / "run").glob("lightning_logs/version_*/hf/final")
    assert (export / "adapter_model.safetensors").exists() and (export / "adapter_config.json").exists()
    assert list((tmp_path / "run").glob("lightning_logs/version_*/events.out.tfevents.*"))  # TensorBoard

    chat = run("lightning-ft", "chat", "--model", str(export), "--prompt", "Say hi.", "--max_new_tokens", "8")
    adapted, tokenizer = load_export(export)
    expected = greedy_reply(adapted, tokenizer, [{"role": "user", "content": "Say hi."}], max_new_tokens=8)
    assert expected and chat.stdout == expected + "\n"  # the adapter's greedy reply under the trained template

    merged_dir = merge_export(export, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        tokenize=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        # Folding B @ A into 576-wide fp32 weights rounds differently from applying it: logits of magnitude ~10
        # agree to ~1e-4 absolute, 2e-5 relative.
        torch.testing.assert_close(merged(**prompt).logits, adapted(**prompt).logits, atol=1e-4, rtol=1e-4)

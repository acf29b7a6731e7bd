"""`lightning-ft eval` on the real SmolLM2 before and after a short LoRA run on GSM8K train, on a slice of GSM8K test,
with the base as the baseline: the report is complete and consistent with items.jsonl. `pytest -s` prints the table
quoted in README's "Evaluate" section."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_data
from tests.eval.reports import check_report_matches_items
from tests.helpers import read_jsonl

pytestmark = pytest.mark.slow
TRAIN_RECORDS, TEST_ITEMS = 64, 16


def run(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_lora_on_gsm8k_before_and_after(smollm2_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "gsm8k_train.jsonl"
    lines = shared_data("sft_alpaca/gsm8k_train_alpaca.jsonl").read_text().splitlines()[:TRAIN_RECORDS]
    train.write_text("\n".join(lines) + "\n")
    run(
        *("lightning-ft", "fit", "--config", "configs/sft/lora.yaml", "--model.model.path", str(smollm2_dir)),
        *("--data.train", str(train), "--data.val_fraction", "0", "--data.max_length", "384"),
        *("--data.batch_size", "2", "--trainer.accumulate_grad_batches", "1", "--trainer.max_steps", "12"),
        *("--model.optimizer.init_args.lr", "5e-4", "--trainer.default_root_dir", str(tmp_path / "run")),
        *("--trainer.enable_progress_bar", "false"),
    )
    (export,) = (tmp_path / "run").glob("lightning_logs/version_*/hf/final")
    output = tmp_path / "report"
    printed = run(
        *("lightning-ft", "eval", "--model", str(export), "--baseline", str(smollm2_dir)),
        *("--data", str(shared_data("eval/gsm8k_test.jsonl")), "--limit", str(TEST_ITEMS)),
        *("--max-new-tokens", "256", "--batch-size", str(TEST_ITEMS), "--output", str(output)),
    )
    print(printed)
    report, items = json.loads((output / "report.json").read_text()), read_jsonl(output / "items.jsonl")
    section = report["sets"]["gsm8k_test"]
    assert section["counts"] == {"items": 16, "open_ended": 16, "multiple_choice": 0, "with_reference": 16}
    assert set(section["metrics"]) == {"exact_match", "bleu", "rouge_l", "chrf", "mean_token_loss", "perplexity"}
    assert all(entry["paired_items"] == TEST_ITEMS for entry in section["metrics"].values())
    assert report["models"]["model"]["trained_from"] == str(smollm2_dir)
    check_report_matches_items(report, items, ("model", "baseline"))
    # 12 steps on GSM8K solutions teach their format: the references' loss falls beyond the noise of 16 items.
    assert section["metrics"]["mean_token_loss"]["ci95"][1] < 0

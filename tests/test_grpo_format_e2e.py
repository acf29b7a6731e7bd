"""End to end on the real SmolLM2 with LoRA: GRPO with a format reward raises the mean reward of sampled completions
on held-out GSM8K test prompts (recipe configs/grpo/format_smollm2.yaml; train prompts from GSM8K's train split)."""

from __future__ import annotations

import json

import lightning as L
import pytest

from tests.conftest import shared_data
from tests.helpers import recipe_cli, write_jsonl

pytestmark = pytest.mark.slow
ASK = " Reply in one sentence: The answer is N."
TRAIN_PROMPTS = 10  # GSM8K train records 0-9: 10 steps of 1 prompt
HELD_OUT = 16  # GSM8K test records 1303-1318, 2 samples each


def test_grpo_raises_the_format_reward_on_held_out_gsm8k(smollm2_dir, tmp_path, capsys):
    train = shared_data("sft_alpaca/gsm8k_train_alpaca.jsonl").read_text().splitlines()[:TRAIN_PROMPTS]
    test = shared_data("eval/gsm8k_test.jsonl").read_text().splitlines()[-HELD_OUT:]
    train_file = write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": r["instruction"] + ASK, "answer": r["output"]} for r in map(json.loads, train)],
    )
    held_out = write_jsonl(
        tmp_path / "held_out.jsonl", [{**r, "question": r["question"] + ASK} for r in map(json.loads, test)]
    )
    cli = recipe_cli("grpo/format_smollm2.yaml", smollm2_dir, train_file, held_out, tmp_path / "run")
    L.seed_everything(1)
    before = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/reward"]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    L.seed_everything(1)
    after = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/reward"]
    assert cli.trainer.global_step == 10
    with capsys.disabled():  # the figure for the record: pytest -s shows it
        print(f"\nheld-out mean format reward ({HELD_OUT} prompts x 2 samples): {before:.3f} -> {after:.3f}")
    assert after >= before + 0.3

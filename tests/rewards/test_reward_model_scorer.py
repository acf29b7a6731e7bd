"""A reward-model export as an online-RL reward: inputs are built exactly as in reward-model training (same scores
as `score_pairs`), the prompt's messages are required, and PPO/GRPO accept the export's path in reward_funcs."""

from __future__ import annotations

import json

import lightning as L
import pytest

from lightning_ft.algorithms import GRPO, RewardModel
from lightning_ft.data import PreferenceData, PromptData
from lightning_ft.eval import score_pairs
from lightning_ft.model.spec import ModelSpec
from lightning_ft.rewards.loading import load_rewards, reward_name
from lightning_ft.rewards.model import RewardModelScorer
from tests.algorithms.test_reward import tiny_encoder_dir  # noqa: F401 (fixture)
from tests.helpers import PAIRS, adamw, pair_file, prompt_file, quiet_trainer


@pytest.fixture(scope="module")
def reward_export(tiny_encoder_dir, tmp_path_factory):  # noqa: F811
    """A `RewardModel` export of the tiny encoder (plain template, [CLS] ... [SEP], 64 tokens) after one step."""
    root = tmp_path_factory.mktemp("rm")
    module = RewardModel(ModelSpec(path=str(tiny_encoder_dir), chat_template="plain"), optimizer=adamw(1e-3))
    data = PreferenceData(
        pair_file(root), tokenizer=module.tokenizer, batch_size=2, max_length=64, add_special_tokens=True
    )
    quiet_trainer(max_steps=1).fit(module, datamodule=data)
    return module.export(root / "rm-export"), pair_file(root)


def test_scores_equal_score_pairs(reward_export, tmp_path):
    export, pairs = reward_export
    score_pairs(export, pairs, output=tmp_path / "scores.jsonl")
    expected = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    scorer = RewardModelScorer(export)
    messages = [[{"role": "user", "content": prompt}] for prompt, _, _ in PAIRS]
    chosen = scorer(["unused"] * len(PAIRS), [c for _, c, _ in PAIRS], prompt_messages=messages)
    rejected = scorer(["unused"] * len(PAIRS), [r for _, _, r in PAIRS], prompt_messages=messages)
    assert chosen == pytest.approx([line["chosen"] for line in expected], abs=1e-5)
    assert rejected == pytest.approx([line["rejected"] for line in expected], abs=1e-5)


def test_scorer_needs_the_prompt_messages(reward_export):
    scorer = RewardModelScorer(reward_export[0])
    with pytest.raises(ValueError, match="needs each prompt's messages"):
        scorer(["p"], ["c"])


def test_entries_are_reward_models_or_functions(reward_export):
    export = str(reward_export[0])
    rewards = load_rewards([export, "lightning_ft.rewards.answer_in_tags"])
    assert isinstance(rewards[export], RewardModelScorer)
    assert reward_name(export) == "rm-export" and reward_name("lightning_ft.rewards.answer_in_tags") == "answer_in_tags"
    with pytest.raises(ValueError, match="lists an entry twice"):
        load_rewards(["lightning_ft.rewards.answer_in_tags"] * 2)


def test_grpo_trains_on_a_reward_model(reward_export, tiny_model_dir, tmp_path):
    """The policy's and the reward model's tokenizers differ: the reward model renders the messages itself."""
    L.seed_everything(0)
    module = GRPO(
        ModelSpec(path=str(tiny_model_dir)),
        reward_funcs=[str(reward_export[0]), "lightning_ft.rewards.length_penalty"],
        reward_weights=[1.0, 0.5],
        num_generations=2,
        max_new_tokens=6,
        optimizer=adamw(1e-3),
    )
    data = PromptData(prompt_file(tmp_path, 4), val=prompt_file(tmp_path, 4), tokenizer=module.tokenizer, batch_size=2)
    trainer = quiet_trainer(max_steps=2, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert {"train/rewards/rm-export", "train/rewards/length_penalty", "val/rewards/rm-export"} <= set(metrics)
    expected = metrics["train/rewards/rm-export"] + 0.5 * metrics["train/rewards/length_penalty"]
    assert float(metrics["train/reward"]) == pytest.approx(float(expected), abs=1e-5)

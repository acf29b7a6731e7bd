"""PPO on a tiny Llama: a rule reward rises within a bounded number of seeded rollouts (value head shared with the
policy, or a separate critic), the adaptive KL controller moves and is checkpointed, and values line up with the
completion tokens."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from peft import LoraConfig

from lightning_ft.algorithms import PPO
from lightning_ft.algorithms.online import ends_with_stop
from lightning_ft.data import PromptData
from tests.helpers import RewardRecorder, build_ppo, prompt_file, quiet_trainer

# The tiny model's random output layer is nearly uniform, so LoRA must reach it for the policy to move far.
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"])


def prompts(module: PPO, tmp_path, batch_size: int = 8) -> PromptData:
    return PromptData(prompt_file(tmp_path), tokenizer=module.tokenizer, batch_size=batch_size, max_length=64)


@pytest.mark.parametrize(
    ("critic", "peft"), [("shared", LORA), ("separate", None)], ids=["lora-shared", "full-separate"]
)
def test_rule_reward_rises(tiny_model_dir, tmp_path, critic, peft):
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir, critic=critic, peft=peft)
    recorder = RewardRecorder()
    rollouts = 20
    trainer = quiet_trainer(max_steps=rollouts * module.optimizer_steps_per_batch, callbacks=[recorder])
    trainer.fit(module, datamodule=prompts(module, tmp_path))
    assert len(recorder.rewards) == rollouts
    first, last = sum(recorder.rewards[:5]) / 5, sum(recorder.rewards[-5:]) / 5
    assert last > first + 1.5, recorder.rewards
    for name in ("kl", "entropy", "explained_variance", "clip_fraction", "value_loss", "completion_length"):
        assert torch.isfinite(trainer.callback_metrics[f"train/{name}"]), name


def test_values_are_read_before_each_completion_token(tiny_model_dir, tmp_path):
    """The value of completion token t comes from the hidden state that predicts it (position prompt_length - 1 + t),
    as the log-prob does."""
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir)
    module.configure_model()
    data = prompts(module, tmp_path, batch_size=2)
    data.prepare_data()
    data.setup("fit")
    completions, _ = module.complete(next(iter(data.train_dataloader())), 1, 1.0)
    torch.nn.init.normal_(module.value_head.linear.weight)
    hidden = module.hidden_states(module.model, completions)
    values = module.values(completions, hidden)
    start = completions.prompt_length
    assert values.shape == completions.completion_mask.shape
    torch.testing.assert_close(values[:, 0], module.value_head(hidden[:, start - 1]))
    torch.testing.assert_close(values[:, -1], module.value_head(hidden[:, -2]))


def test_adaptive_kl_controller_moves_and_is_checkpointed(tiny_model_dir, tmp_path):
    """The controller moves by its 20% cap (× rollout size / horizon = 8 / 8) per rollout: down after the first,
    where the policy still is the reference (KL 0 < target), up after the second (KL far above a tiny target):
    0.01 → 0.008 → 0.0096. The k3 estimate, never negative, so one sampled rollout cannot read below the target (k1
    can: it is unbiased, not positive)."""
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir, target_kl=1e-6, kl_horizon=8, ppo_epochs=1, num_minibatches=1, kl_estimator="k3")
    trainer = quiet_trainer(max_steps=2, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=prompts(module, tmp_path))
    assert module.kl_coef == pytest.approx(0.01 * 0.8 * 1.2)
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert checkpoint["kl_coef"] == pytest.approx(0.0096)
    assert {"value_head.linear.weight", "value_head.linear.bias"} <= set(checkpoint["state_dict"])
    resumed = build_ppo(tiny_model_dir, target_kl=1e-6, kl_horizon=8)
    resumed.configure_model()
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.kl_coef == pytest.approx(0.0096)


def test_schedule_spans_every_optimizer_step(tiny_model_dir, tmp_path):
    """8 prompts in batches of 4, one epoch: 2 rollouts × 2 epochs × 2 minibatches = 8 optimiser steps, after
    which a linear schedule reaches exactly 0."""
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir, lr_scheduler="linear")
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, datamodule=prompts(module, tmp_path, batch_size=4))
    assert trainer.global_step == 8
    assert module.optimizers().optimizer.param_groups[0]["lr"] == 0.0


def test_completions_that_never_stop_are_recognised():
    completions = torch.tensor([[5, 6, 2, 0], [5, 5, 5, 5], [2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert ends_with_stop(completions, mask, [2]).tolist() == [True, False, True]


def test_missing_eos_penalty_lowers_the_score(tiny_model_dir, tmp_path):
    """12 new tokens never reach a stop token in the untrained tiny model: every score loses the penalty."""
    L.seed_everything(0)
    module = build_ppo(tiny_model_dir, missing_eos_penalty=5.0)
    module.configure_model()
    data = prompts(module, tmp_path, batch_size=4)
    data.prepare_data()
    data.setup("fit")
    completions, _ = module.complete(next(iter(data.train_dataloader())), 1, 1.0)
    assert (completions.lengths == 12).all()
    _, metrics = module.rollout(completions)
    assert float(metrics["reward"]) == pytest.approx(float(completions.scores.mean()) - 5.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"critic": "twin"}, "Unknown critic 'twin'; valid: shared, separate"),
        ({"kl_estimator": "k2"}, "Unknown kl_estimator 'k2'; valid: k1, k3"),
        ({"target_kl": 6.0, "kl_coef": 0.0}, "needs target_kl > 0 and an initial kl_coef > 0"),
        ({"ppo_epochs": 0}, "model.ppo_epochs and model.num_minibatches must be at least 1"),
        ({"reward_funcs": []}, "PPO needs at least one entry in reward_funcs"),
    ],
)
def test_bad_options_are_named(tiny_model_dir, options, message):
    with pytest.raises(ValueError, match=message):
        build_ppo(tiny_model_dir, **options)

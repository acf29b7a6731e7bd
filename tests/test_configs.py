"""Every recipe parses and instantiates; the public override paths reach the model and data; --print_config
prints a complete config that parses again."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import lightning as L
import pytest

from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.callbacks import AtomicModelCheckpoint, TokenRateProgressBar
from lightning_ft.cli import FineTuneCLI, main, trainer_defaults

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
FRAGMENT_DIRS = ("strategies", "loggers", "tune")  # added to a recipe with a second --config, or tune's spaces
CONFIGS = sorted(path for path in CONFIG_DIR.rglob("*.yaml") if path.parent.name not in FRAGMENT_DIRS)
TEXT_CONFIGS = [path for path in CONFIGS if path.parent.name != "multimodal"]  # tests/multimodal runs the others


def test_there_are_recipes_for_every_method():
    names = {path.stem for path in CONFIGS}
    expected = {
        "full",
        "freeze",
        "lora",
        "lora_bf16",
        "dora",
        "rslora",
        "qlora",
        "qlora_8bit",
        "bottleneck",
        "prefix",
        "prompt",
        "ia3",
        "llama_adapter",
        "quickstart",
        "dpo_lora",
        "ipo",
        "simpo",
        "orpo",
        "kto",
        "minilm_hh_rlhf",
        "rm_lora",
        "gsm8k_lora",
        "format_smollm2",
        "llava_stage1_projector",
        "llava_stage2_lora",
    }
    assert expected <= names
    assert {path.parent.name for path in CONFIGS} >= {"sft", "dpo", "rm", "ppo", "grpo", "multimodal"}
    assert len(CONFIGS) >= 25


def instantiate(args: list[str]) -> FineTuneCLI:
    return FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )


@pytest.mark.parametrize("config", TEXT_CONFIGS, ids=[p.stem for p in TEXT_CONFIGS])
def test_recipe_instantiates_with_the_public_overrides(config, tiny_model_dir, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"instruction": "a", "output": "b"}\n')
    args = [
        "--config",
        str(config),
        "--model.model.path",
        str(tiny_model_dir),
        "--data.train",
        str(train),
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    if config.stem == "rm_lora":  # its reward model is the output of another run
        args += ["--model.reward_funcs", "[lightning_ft.rewards.length_penalty]"]
    cli = instantiate(args)
    assert cli.model.model_spec.path == str(tiny_model_dir)
    assert cli.datamodule.train == str(train)
    assert cli.datamodule.tokenizer is cli.model.tokenizer  # linked from the model


def test_nested_peft_override_reaches_the_adapter_config(tiny_model_dir, tmp_path):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    cli = instantiate(
        [
            "--config",
            str(lora),
            "--model.model.path",
            str(tiny_model_dir),
            "--model.peft.init_args.r",
            "32",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.model.peft.r == 32


def print_config(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return out.getvalue()


def test_print_config_is_complete_and_parses_again(tiny_model_dir, tmp_path):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    printed = print_config(["--config", str(lora), "--model.model.path", str(tiny_model_dir)])
    assert "lora_alpha: 32" in printed and "accumulate_grad_batches: 4" in printed and "max_length: 1024" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    assert print_config(["--config", str(tmp_path / "printed.yaml")]) == printed


def test_unknown_option_lists_choices(tiny_model_dir, capsys):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    with pytest.raises(SystemExit):
        instantiate(
            ["--config", str(lora), "--model.model.path", str(tiny_model_dir), "--model.lr_scheduler", "exponential"]
        )
    assert "cosine" in capsys.readouterr().err


def test_unknown_adapter_class_lists_the_valid_ones(tiny_model_dir, capsys):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(lora),
                "--model.model.path",
                str(tiny_model_dir),
                "--model.peft",
                "peft.NoSuchConfig",
            ]
        )
    error = capsys.readouterr().err
    assert "NoSuchConfig" in error
    assert "Valid adapter classes for model.peft:" in error
    assert "peft.LoraConfig" in error and "lightning_ft.model.BottleneckConfig" in error


def test_progress_bar_can_be_turned_off(tiny_model_dir, tmp_path):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    args = [
        "--config",
        str(lora),
        "--model.model.path",
        str(tiny_model_dir),
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    kwargs = {"subclass_mode_model": True, "subclass_mode_data": True, "run": False}
    with_bar = FineTuneCLI(
        FineTuneModule, L.LightningDataModule, trainer_defaults=trainer_defaults(), args=args, **kwargs
    )
    assert isinstance(with_bar.trainer.progress_bar_callback, TokenRateProgressBar)
    without = FineTuneCLI(
        FineTuneModule,
        L.LightningDataModule,
        trainer_defaults=trainer_defaults(),
        args=[*args, "--trainer.enable_progress_bar", "false"],
        **kwargs,
    )
    assert without.trainer.progress_bar_callback is None


def test_checkpoints_are_atomic_configurable_and_can_be_turned_off(tiny_model_dir, tmp_path):
    lora = CONFIG_DIR / "sft" / "lora.yaml"
    args = ["--config", str(lora), "--model.model.path", str(tiny_model_dir)]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    cli = instantiate([*args, "--checkpoint.every_n_train_steps", "7"])
    checkpoint = cli.trainer.checkpoint_callback
    assert isinstance(checkpoint, AtomicModelCheckpoint)
    assert checkpoint._every_n_train_steps == 7 and checkpoint.save_last
    assert instantiate([*args, "--trainer.enable_checkpointing", "false"]).trainer.checkpoint_callback is None


def test_a_weighted_mix_and_ewc_parse_from_yaml_and_flags(tiny_model_dir, tmp_path):
    recipe = CONFIG_DIR / "pretrain" / "replay_ewc.yaml"
    cli = instantiate(["--config", str(recipe), "--model.model.path", str(tiny_model_dir)])
    assert [(s.path, s.weight, s.kind) for s in cli.datamodule.sources] == [
        ("data/domain/train.jsonl", 0.8, "records"),
        ("../shared/data/pretrain/c4_demo.jsonl", 0.2, "records"),
    ]
    assert cli.model.ewc.strength == 0.01 and cli.model.ewc.replay.train == "../shared/data/pretrain/c4_demo.jsonl"
    mix = "[{path: a.jsonl, weight: 3}, {path: b.txt, weight: 1, kind: text}]"
    cli = instantiate(
        ["--config", str(CONFIG_DIR / "sft" / "lora.yaml"), "--model.model.path", str(tiny_model_dir)]
        + ["--data.train", mix]
    )
    assert [(s.path, s.weight, s.kind) for s in cli.datamodule.sources] == [
        ("a.jsonl", 3, "records"),
        ("b.txt", 1, "text"),
    ]

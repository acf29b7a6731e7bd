"""`fit` on a `lightning-ft data` output: two steps of a LoRA recipe on the tiny model, with the data module that
reads the output's layout. Proves the tools' outputs train."""

from __future__ import annotations

from pathlib import Path

from lightning_ft.cli import main
from tests.conftest import ROOT

DATA_MODULES = {
    "alpaca": ("configs/sft/lora.yaml", "lightning_ft.data.InstructionData", "alpaca"),
    "dolly": ("configs/sft/lora.yaml", "lightning_ft.data.InstructionData", "dolly"),
    "messages": ("configs/sft/lora.yaml", "lightning_ft.data.ChatData", "messages"),
    "sharegpt": ("configs/sft/lora.yaml", "lightning_ft.data.ChatData", "sharegpt"),
    "preference": ("configs/dpo/dpo_lora.yaml", "lightning_ft.data.PreferenceData", "pairs"),
}


def fit_on(train: Path, layout: str, model_dir: Path, root: Path, data_format: str | None = None) -> Path:
    """Two LoRA steps on ``train`` (records in ``layout``); returns the final export directory."""
    recipe, data_class, default_format = DATA_MODULES[layout]
    prompt_limit = ["--data.max_prompt_length", "128"] if layout == "preference" else []
    main(
        ["fit", "--config", str(ROOT / recipe), "--model.model.path", str(model_dir)]
        + ["--data", data_class, "--data.train", str(train), "--data.format", data_format or default_format]
        + ["--data.val_fraction", "0", "--data.max_length", "256", "--data.batch_size", "2"]
        + ["--trainer.max_steps", "2", "--trainer.accumulate_grad_batches", "1", "--trainer.max_epochs", "1"]
        + ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *prompt_limit]
    )
    (export,) = root.glob("lightning_logs/version_*/hf/final")
    return export

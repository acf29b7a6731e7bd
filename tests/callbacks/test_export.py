"""`--export.generation` from the command line reaches the generation_config.json of every export of a fit."""

from __future__ import annotations

import json

import lightning as L
from transformers import GenerationConfig

from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.callbacks import HuggingFaceExport
from lightning_ft.cli import FineTuneCLI
from lightning_ft.model.generation_defaults import GenerationDefaults
from tests.helpers import CONFIGS, write_jsonl


def test_export_generation_from_the_cli_is_recorded_in_the_export(tiny_model_dir, tiny_tokenizer, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "Say hello.", "output": "hello world"}] * 2)
    overrides = {
        "model.model.path": tiny_model_dir,
        "data.train": train,
        "data.val_fraction": 0,
        "data.batch_size": 2,
        "trainer.default_root_dir": tmp_path / "run",
        "trainer.max_steps": 1,
        "trainer.accumulate_grad_batches": 1,
        "trainer.enable_checkpointing": "false",
        "trainer.enable_progress_bar": "false",
        "export.generation": "{temperature: 0.7, top_p: 0.9, max_new_tokens: 64}",
    }
    args = ["--config", str(CONFIGS / "sft" / "lora.yaml")]
    args += [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    cli = FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )
    export = next(callback for callback in cli.trainer.callbacks if isinstance(callback, HuggingFaceExport))
    assert export.generation == GenerationDefaults(max_new_tokens=64, temperature=0.7, top_p=0.9)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    GenerationConfig.from_pretrained(export.last_export).validate(strict=True)
    recorded = json.loads((export.last_export / "generation_config.json").read_text())
    recorded.pop("transformers_version")
    assert recorded == {
        "do_sample": True,
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "eos_token_id": [tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")],
        "pad_token_id": tiny_tokenizer.pad_token_id,
    }


def test_the_export_directory_is_resolved_at_setup_not_when_a_checkpoint_exports(tmp_path):
    """`trainer.log_dir` is a broadcast under DDP: asked for inside a checkpoint that SLURM's SIGUSR1 handler saves on
    one rank while the other waits in the training step's all-reduce, it deadlocks both (seen in the local cluster
    check). It is read once, at setup, on every rank together."""

    class CountingTrainer:
        default_root_dir = str(tmp_path)
        reads = 0

        @property
        def log_dir(self) -> str:
            self.reads += 1
            return str(tmp_path / "version_0")

    trainer, callback = CountingTrainer(), HuggingFaceExport()
    callback.setup(trainer, None, "fit")
    assert trainer.reads == 1
    assert callback.export_dir(trainer) == tmp_path / "version_0" / "hf"
    assert trainer.reads == 1

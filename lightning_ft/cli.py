"""`lightning-ft fit` and `validate`: LightningCLI with our defaults; every other command is in `commands`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ActionConfigFile
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment

from lightning_ft import commands, launcher
from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.callbacks import (
    AtomicModelCheckpoint,
    HuggingFaceExport,
    TokenRateProgressBar,
    TokenThroughputMonitor,
    TrackingReport,
)
from lightning_ft.callbacks.resume import RunLocation, resolve_resume, run_location
from lightning_ft.commands import (  # noqa: F401 - the commands' public names, as before they moved
    DATA_COMMANDS,
    EXTRA_COMMANDS,
    OneLineErrors,
    chat,
    command_arguments,
    data_arguments,
    export,
    merge,
    optional_module,
    serve,
)
from lightning_ft.compat import cli_config_value
from lightning_ft.errors import UsageError
from lightning_ft.model.trainable import known_adapter_configs

DESCRIPTION = (
    "Fine-tune LLMs: `lightning-ft fit --config RECIPE.yaml`. Besides Lightning's subcommands: "
    "`lightning-ft export --help` (merge an adapter into its base), `lightning-ft chat --help` and "
    "`lightning-ft score --help` (score preference pairs with a reward model), `lightning-ft eval --help` (metrics, "
    "baselines with confidence intervals, LLM judge), `lightning-ft tune --help` (hyperparameter search with Optuna)."
)


class FineTuneArgumentParser(OneLineErrors, LightningArgumentParser):
    """Adds the list of valid adapters to the error for an unknown ``peft`` class."""

    def hint(self, message: str) -> str:
        if 'Parser key "peft"' in message and "class_path" in message:
            return "Valid adapter classes for model.peft: " + ", ".join(known_adapter_configs())
        return ""


class FineTuneCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """`fit` and `validate`: the algorithms implement no test or predict step."""
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("description", DESCRIPTION)
        kwargs.setdefault("prog", launcher.PROGRAM)
        parser = FineTuneArgumentParser(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML).")
        return parser

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = cli_config_value(self, self.config_init, "trainer", default={})
        if self.subcommand == "fit":
            check_training_length(trainer_config)
        # Our default progress bar must not clash with `--trainer.enable_progress_bar false`.
        if trainer_config.get("enable_progress_bar") is False:
            callbacks = self.trainer_defaults.get("callbacks", [])
            kept = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": kept}
        resumed_run = self._resolve_ckpt_path(trainer_config)
        if resumed_run is not None:
            # A resumed run goes on logging, checkpointing and exporting in the directory of the run it resumes.
            run_logger = TensorBoardLogger(str(resumed_run.save_dir), resumed_run.name, resumed_run.version)
        else:
            run_logger = TensorBoardLogger(trainer_config.get("default_root_dir") or os.getcwd())
        if resumed_run is not None and trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = run_logger
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.loggers and not isinstance(trainer.loggers[0], TensorBoardLogger | CSVLogger):
            # Trackers (MLflow, W&B) keep no run directory of ours: config.yaml, checkpoints and exports stay in
            # default_root_dir's lightning_logs/version_N, where --ckpt_path last finds them.
            trainer.loggers = [run_logger, *trainer.loggers]
        return trainer

    def _resolve_ckpt_path(self, trainer_config: dict[str, Any]) -> RunLocation | None:
        """Turns ``--ckpt_path last`` (or a requeued SLURM job) into the newest checkpoint of any earlier run under
        ``default_root_dir``; returns the run directory of a resumed checkpoint."""
        arguments = self.config_init.get(str(self.subcommand))
        if arguments is None or "ckpt_path" not in arguments:
            return None
        checkpoint = cli_config_value(self, self.config_init, "checkpoint")
        directories = [Path(checkpoint.dirpath)] if getattr(checkpoint, "dirpath", None) else []
        root = trainer_config.get("default_root_dir") or os.getcwd()
        resolved = resolve_resume(
            arguments["ckpt_path"],
            root=root,
            checkpoint_dirs=directories,
            required=arguments.get("require_checkpoint", False),
            on_slurm=SLURMEnvironment.detect(),
        )
        arguments["ckpt_path"] = resolved
        return run_location(resolved, root) if isinstance(resolved, Path) and self.subcommand == "fit" else None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[L.Callback]) -> L.Trainer:
        # Nor our checkpoint callback with `--trainer.enable_checkpointing false`.
        if config.get("enable_checkpointing") is False:
            callbacks = [callback for callback in callbacks if not isinstance(callback, AtomicModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(HuggingFaceExport, "export")
        # Checkpoints: atomic, with last.ckpt; e.g. --checkpoint.every_n_train_steps 500 for long epochs.
        parser.add_lightning_class_args(AtomicModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_lightning_class_args(TokenThroughputMonitor, "throughput")
        parser.add_argument(
            "--require_checkpoint",
            type=bool,
            default=False,
            help="With --ckpt_path last: stop with an error instead of starting from step 0 when no checkpoint exists.",
        )
        # The data module tokenizes with the model's tokenizer, chat template included.
        parser.link_arguments("model", "data.init_args.tokenizer", compute_fn=_tokenizer_of, apply_on="instantiate")


def check_training_length(trainer_config: dict[str, Any]) -> None:
    """A `fit` that would train nothing (and export the untrained model as the fine-tuned one) is a usage error."""
    for key in ("max_steps", "max_epochs"):
        if trainer_config.get(key) == 0:
            raise UsageError(f"trainer.{key} is 0: nothing would be trained; give a positive value (or -1: no limit)")
    if (trainer_config.get("max_steps") or -1) < -1:
        raise UsageError(f"trainer.max_steps must be positive or -1 (no limit), got {trainer_config['max_steps']}")


def _tokenizer_of(module: FineTuneModule):  # noqa: ANN202 - the return type would drag in transformers here
    return getattr(module, "processor", None) or module.tokenizer  # vision-language models: their processor


def trainer_defaults() -> dict[str, Any]:
    callbacks: list[L.Callback] = [
        TokenRateProgressBar(),
        LearningRateMonitor(logging_interval="step"),
        TrackingReport(),
    ]
    if os.environ.get("LIGHTNING_FT_TRIAL"):  # a `lightning-ft tune` trial: report to its study
        callbacks += optional_module("lightning_ft.tune.trial", extra="tune").trial_callbacks()
    return {"callbacks": callbacks}


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] not in FineTuneCLI.subcommands() and not argv[0].startswith("-"):
        commands.run(argv)
        return
    FineTuneCLI(
        FineTuneModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    launcher.main()

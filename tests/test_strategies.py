"""Strategy fragments (configs/strategies/*.yaml): what each builds, checked on CPU (Lightning refuses FSDP and
DeepSpeed without CUDA, so those are constructed here and run under `pytest -m gpu`)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import DDPStrategy
from peft import LoraConfig
from torch.distributed.fsdp import CPUOffload, ShardingStrategy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from lightning_ft.algorithms import SFT
from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.cli import FineTuneCLI
from lightning_ft.model.spec import ModelSpec
from lightning_ft.strategies import DecoderLayerFSDP, decoder_layer_classes
from tests.conftest import require
from tests.helpers import CONFIGS, strategy_from

FRAGMENTS = sorted((CONFIGS / "strategies").glob("*.yaml"))


def test_every_strategy_has_a_fragment():
    assert {path.stem for path in FRAGMENTS} == {
        "ddp",
        "fsdp",
        "fsdp_offload",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "deepspeed_zero3_offload",
    }


def test_ddp_fragment_is_a_second_config(tiny_model_dir, tmp_path):
    cli = FineTuneCLI(
        FineTuneModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            str(CONFIGS / "sft" / "lora.yaml"),
            "--config",
            str(CONFIGS / "strategies" / "ddp.yaml"),
            "--model.model.path",
            str(tiny_model_dir),
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
    )
    assert isinstance(cli.trainer.strategy, DDPStrategy)


@pytest.mark.parametrize("peft", [None, LoraConfig(r=4, target_modules="all-linear")], ids=["full", "lora"])
def test_fsdp_wraps_and_checkpoints_the_loaded_models_decoder_layers(tiny_model_dir, peft):
    module = SFT(ModelSpec(path=str(tiny_model_dir)), peft=peft)
    module.configure_model()
    assert decoder_layer_classes(module) == {LlamaDecoderLayer}
    strategy = strategy_from("fsdp.yaml")
    assert isinstance(strategy, DecoderLayerFSDP)
    strategy.set_decoder_layer_policies(module)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"]  # frozen and trainable weights may share an FSDP unit (LoRA)


def test_fsdp_offload_and_precision(tiny_model_dir):
    strategy = strategy_from("fsdp_offload.yaml")
    assert strategy.cpu_offload == CPUOffload(offload_params=True)
    strategy.precision_plugin = FSDPPrecision("bf16-mixed")
    assert strategy.mixed_precision_config.param_dtype == torch.bfloat16
    strategy.precision_plugin = FSDPPrecision("bf16-true")
    assert strategy.mixed_precision_config.param_dtype == torch.bfloat16
    assert strategy.mixed_precision_config.reduce_dtype == torch.bfloat16


def test_an_explicit_wrap_policy_is_kept(tiny_model_dir):
    module = SFT(ModelSpec(path=str(tiny_model_dir)))
    module.configure_model()
    strategy = DecoderLayerFSDP(auto_wrap_policy={torch.nn.Linear})
    strategy.set_decoder_layer_policies(module)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {torch.nn.Linear}


def test_a_model_without_decoder_layers_is_named():
    with pytest.raises(ValueError, match="Cannot find the decoder-layer class of Sequential"):
        decoder_layer_classes(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.mark.parametrize(
    ("fragment", "stage", "offload"),
    [("deepspeed_zero2.yaml", 2, False), ("deepspeed_zero3.yaml", 3, False), ("deepspeed_zero3_offload.yaml", 3, True)],
)
def test_deepspeed_fragments(fragment, stage, offload):
    spec = yaml.safe_load((CONFIGS / "strategies" / fragment).read_text())["trainer"]["strategy"]
    assert spec["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert spec["init_args"]["stage"] == stage
    assert spec["init_args"]["exclude_frozen_parameters"]  # adapter-only checkpoints
    require("deepspeed", "the DeepSpeed strategies are built here (in the `test` extra: pip install -e '.[test]')")
    strategy = strategy_from(fragment)
    assert strategy.exclude_frozen_parameters
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage and ("offload_param" in zero) == offload

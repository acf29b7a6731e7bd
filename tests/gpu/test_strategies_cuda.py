"""Real FSDP and DeepSpeed runs on one CUDA device (skipped elsewhere; part of `pytest -m gpu`, see
tools/bench/gpu.sh), and the precision matrix with CUDA's own fp16 GradScaler."""

from __future__ import annotations

import importlib.util

import lightning as L
import pytest
import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT
from lightning_ft.callbacks import AtomicModelCheckpoint
from lightning_ft.model import ModelSpec
from tests.algorithms.test_precision_matrix import ALGORITHMS, PRECISIONS, build
from tests.helpers import LossRecorder, adamw, quiet_trainer, repeated_batch_loader
from tests.test_strategies import strategy_from

pytestmark = pytest.mark.gpu


def lora() -> LoraConfig:
    return LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)


def fit(module, loader, strategy, root, steps: int = 6, ckpt_path=None) -> LossRecorder:
    recorder = LossRecorder()
    checkpoint = AtomicModelCheckpoint(dirpath=root, every_n_train_steps=steps // 2, save_last=True)
    trainer = quiet_trainer(
        accelerator="cuda",
        devices=1,
        strategy=strategy,
        precision="bf16-mixed",
        max_steps=steps,
        callbacks=[recorder, checkpoint],
        enable_checkpointing=True,
        default_root_dir=root,
    )
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return recorder


@pytest.mark.parametrize("fragment", ["fsdp.yaml", "fsdp_offload.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_strategy_trains_checkpoints_and_resumes(tiny_model_dir, tiny_tokenizer, tmp_path, fragment, method):
    if fragment.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (extra .[deepspeed])")
    if method == "qlora" and fragment in ("fsdp_offload.yaml", "deepspeed_zero2.yaml"):
        pytest.skip("sharded QLoRA is checked with fsdp.yaml and deepspeed_zero3.yaml")
    torch.manual_seed(0)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    spec = ModelSpec(path=str(tiny_model_dir), quantization=quantization if method == "qlora" else None)
    module = SFT(spec, peft=None if method == "full" else lora(), optimizer=adamw(1e-2))
    loader = repeated_batch_loader(tiny_tokenizer, steps=6)
    recorder = fit(module, loader, strategy_from(fragment), tmp_path)
    assert recorder.losses[-1] < 0.9 * recorder.losses[0], recorder.losses
    last = tmp_path / "last.ckpt"
    assert last.exists()
    if fragment.startswith("fsdp"):  # a file: only trainable weights in it
        state = torch.load(last, weights_only=False)["state_dict"]
        trainable = {name for name, p in module.named_parameters() if p.requires_grad}
        assert set(state) <= trainable | {name.replace("_fsdp_wrapped_module.", "") for name in trainable}
        assert len(state) > 0
    resumed = SFT(spec, peft=None if method == "full" else lora(), optimizer=adamw(1e-2))
    fit(resumed, repeated_batch_loader(tiny_tokenizer, steps=8), strategy_from(fragment), tmp_path, 8, str(last))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_trains_under_precision_on_cuda(tiny_model_dir, tmp_path, algorithm, precision):
    L.seed_everything(0)
    module, data = build(algorithm, tiny_model_dir, tmp_path)
    trainer = quiet_trainer(
        accelerator="cuda", devices=1, precision=precision, max_steps=2, num_sanity_val_steps=0, limit_val_batches=1
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert any(name.startswith("val/") for name in metrics), sorted(metrics)
    assert all(torch.isfinite(value) for value in metrics.values()), metrics


def test_vision_language_lora_trains_on_cuda_in_bf16(tiny_llava_dir, demo_dir):
    from lightning_ft.algorithms import VisionLanguageSFT
    from lightning_ft.data import MultimodalData

    L.seed_everything(0)
    spec = ModelSpec(path=str(tiny_llava_dir), dtype="bfloat16")
    lm_and_head = LoraConfig(r=8, target_modules=["q_proj", "v_proj", "lm_head"])
    module = VisionLanguageSFT(spec, peft=lm_and_head, optimizer=adamw(2e-2), lr_scheduler="constant")
    data = MultimodalData(
        str(demo_dir / "mllm_demo.jsonl"), format="messages", tokenizer=module.processor, batch_size=6
    )
    recorder = LossRecorder()
    trainer = quiet_trainer(accelerator="cuda", devices=1, precision="bf16-mixed", max_steps=8, callbacks=[recorder])
    trainer.fit(module, datamodule=data)
    assert recorder.losses[-1] < 0.9 * recorder.losses[0], recorder.losses

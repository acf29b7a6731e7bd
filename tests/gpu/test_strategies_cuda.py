"""Real FSDP and DeepSpeed runs on one CUDA device (skipped elsewhere; part of `pytest -m gpu`, see
tools/bench/gpu.sh), and the precision matrix with CUDA's own fp16 GradScaler."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT
from lightning_ft.callbacks import AtomicModelCheckpoint
from lightning_ft.errors import UsageError
from lightning_ft.model import ModelSpec
from tests.conftest import require
from tests.helpers import (
    ALGORITHMS,
    PRECISIONS,
    LossRecorder,
    adamw,
    build_algorithm,
    lora,
    quiet_trainer,
    repeated_batch_loader,
    strategy_from,
)

pytestmark = pytest.mark.gpu


def fit(module, loader, strategy, root, steps: int = 6, ckpt_path=None) -> tuple[L.Trainer, LossRecorder]:
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
    return trainer, recorder


@pytest.mark.parametrize("fragment", ["fsdp.yaml", "fsdp_offload.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_strategy_trains_checkpoints_and_resumes(tiny_model_dir, tiny_tokenizer, tmp_path, fragment, method):
    """6 steps with a checkpoint, then a resume to step 8 from last.ckpt: the resumed run takes steps 7 and 8 only and
    their losses are those of an uninterrupted 8-step run (same seed, same batch every step)."""
    if fragment.startswith("deepspeed"):
        require("deepspeed", "the DeepSpeed fragments run here (in the `test` extra: pip install -e '.[test]')")
    if method == "qlora" and fragment in ("fsdp_offload.yaml", "deepspeed_zero2.yaml"):
        pytest.skip("sharded QLoRA is checked with fsdp.yaml and deepspeed_zero3.yaml")
    if method == "qlora" and fragment == "fsdp.yaml":
        pytest.xfail(
            "saving a checkpoint fails in torch FSDP's full-state-dict hook (it looks for the layer norms' weights in "
            "a state dict that bitsandbytes' 4-bit layers filled); found on an H200, not yet fixed"
        )
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    spec = ModelSpec(path=str(tiny_model_dir), quantization=quantization if method == "qlora" else None)

    def run(steps: int, root, ckpt_path=None) -> tuple[SFT, L.Trainer, LossRecorder]:
        torch.manual_seed(0)  # the same adapter initialisation in every run; a schedule that ignores max_steps
        module = SFT(spec, peft=None if method == "full" else lora(), optimizer=adamw(1e-2), lr_scheduler="constant")
        loader = repeated_batch_loader(tiny_tokenizer, steps=steps)
        return module, *fit(module, loader, strategy_from(fragment), root, steps, ckpt_path)

    module, _, recorder = run(6, tmp_path)
    # At least half as far as the same run in fp32 on the CPU (LoRA: 5.986 -> 5.909 in 6 steps on the tiny model).
    torch.manual_seed(0)
    cpu_module = SFT(
        ModelSpec(path=str(tiny_model_dir)),
        peft=None if method == "full" else lora(),
        optimizer=adamw(1e-2),
        lr_scheduler="constant",
    )
    cpu = LossRecorder()
    quiet_trainer(accelerator="cpu", devices=1, max_steps=6, callbacks=[cpu]).fit(
        cpu_module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=6)
    )
    drop = recorder.losses[0] - recorder.losses[-1]
    assert drop > 0.5 * (cpu.losses[0] - cpu.losses[-1]), (recorder.losses, cpu.losses)
    last = tmp_path / "last.ckpt"
    assert last.exists()
    if fragment.startswith("fsdp"):  # a file: only trainable weights in it
        state = torch.load(last, weights_only=False)["state_dict"]
        wrappers = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")  # FSDP's and activation checkpointing's
        trainable = {name for name, p in module.named_parameters() if p.requires_grad}
        for wrapper in wrappers:
            trainable = {name.replace(wrapper, "") for name in trainable}
        assert set(state) == trainable
    if fragment == "fsdp_offload.yaml":  # its resume restored no weights (found on an H200): refused until fixed
        with pytest.raises(UsageError, match="Resuming under FSDP's CPU offload"):
            run(8, tmp_path, str(last))
        return
    _, trainer, resumed = run(8, tmp_path, str(last))
    assert trainer.global_step == 8 and len(resumed.losses) == 2, (trainer.global_step, resumed.losses)
    _, _, straight = run(8, tmp_path / "uninterrupted")
    # The same kernels in the same order, up to CUDA's non-deterministic atomic reductions: the runs agree to a small
    # fraction of how far training moved the loss (a fresh start would be off by all of it).
    tolerance = 0.05 * (straight.losses[0] - straight.losses[-1])
    assert recorder.losses == pytest.approx(straight.losses[:6], abs=tolerance), (recorder.losses, straight.losses)
    assert resumed.losses == pytest.approx(straight.losses[6:], abs=tolerance), (resumed.losses, straight.losses)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_trains_under_precision_on_cuda(tiny_model_dir, tmp_path, algorithm, precision):
    L.seed_everything(0)
    module, data = build_algorithm(algorithm, tiny_model_dir, tmp_path)
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

"""Runs that need a CUDA device (skipped elsewhere): bf16 training, chunked loss, flash-attention varlen packing,
QLoRA. One prepared command on a GPU machine: `pytest -m gpu`."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import BitsAndBytesConfig

from lightning_ft.algorithms import SFT
from lightning_ft.data.collate import PadCollator
from lightning_ft.data.packing import PackingCollator
from lightning_ft.losses import chunked_cross_entropy, cross_entropy
from lightning_ft.model import ModelSpec
from tests.helpers import (
    BF16_LOGITS_ATOL,
    context_dependent,
    lora,
    per_token_logits,
    repeated_batch_loader,
    short_fit,
    split_by_sequence,
    tokenized_examples,
)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype, precision", [("bfloat16", "bf16-mixed"), ("float32", "bf16-mixed")])
def test_bf16_lora_trains_on_cuda(tiny_model_dir, tiny_tokenizer, dtype, precision):
    torch.manual_seed(0)
    module = SFT(
        ModelSpec(path=str(tiny_model_dir), dtype=dtype),
        peft=lora(),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
    )
    loader = repeated_batch_loader(tiny_tokenizer, steps=8)
    recorder = short_fit(module, loader, steps=8, accelerator="cuda", devices=1, precision=precision)
    assert_trains_like_fp32_on_cpu(recorder.losses, tiny_model_dir, tiny_tokenizer)


def assert_trains_like_fp32_on_cpu(losses: list[float], model_dir, tokenizer) -> None:
    """``losses`` start where the same LoRA run in fp32 on the CPU starts (bf16 rounding apart) and fall at least
    half as far. The tiny random model's loss starts near ln(400) and falls only ~0.1 in 8 steps at lr 1e-2."""
    torch.manual_seed(0)
    module = SFT(ModelSpec(path=str(model_dir)), peft=lora(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    loader = repeated_batch_loader(tokenizer, steps=len(losses))
    reference = short_fit(module, loader, steps=len(losses), accelerator="cpu", devices=1).losses
    assert losses[0] == pytest.approx(reference[0], abs=0.05), (losses, reference)
    assert losses[0] - losses[-1] > 0.5 * (reference[0] - reference[-1]), (losses, reference)


def test_chunked_cross_entropy_matches_plain_on_cuda():
    torch.manual_seed(0)
    hidden = torch.randn(2, 33, 64, device="cuda", requires_grad=True)
    projection = torch.nn.Linear(64, 1000, bias=False, device="cuda")
    labels = torch.randint(0, 1000, (2, 33), device="cuda")
    labels[:, :5] = -100
    results = []
    for loss_fn in (cross_entropy, chunked_cross_entropy):
        hidden.grad = projection.weight.grad = None
        loss_sum, count = loss_fn(hidden, projection, labels)
        loss_sum.backward()
        results.append((loss_sum.detach(), count, hidden.grad.clone(), projection.weight.grad.clone()))
    for plain, chunked in zip(*results, strict=True):
        torch.testing.assert_close(chunked, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
def test_flash_attention_varlen_packing_equals_one_by_one(tiny_model_dir, tiny_tokenizer):
    """Per-token logits of the packed row equal each conversation's alone, on a model whose logits depend on the
    context (a leak across sequences moves them by more than 20x the tolerance: tests/model/test_packing_control.py)."""
    torch.manual_seed(0)
    module = SFT(
        ModelSpec(path=str(tiny_model_dir), dtype="bfloat16", attn_implementation="flash_attention_2"),
        loss_fn=cross_entropy,
    )
    module.configure_model()
    context_dependent(module.model)
    module.model.cuda().eval()
    examples = tokenized_examples(tiny_tokenizer)
    packed = PackingCollator(tiny_tokenizer.pad_token_id)(
        [{"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}]
    )
    with torch.no_grad():
        packed_sum, packed_count = module.loss_sum({k: v.cuda() for k, v in packed.items()})
        singles = [
            module.loss_sum({k: v.cuda() for k, v in PadCollator(tiny_tokenizer.pad_token_id)([e]).items()})
            for e in examples
        ]
    assert packed_count == sum(count for _, count in singles)
    torch.testing.assert_close(packed_sum.float(), sum(s for s, _ in singles).float(), atol=0.05, rtol=1e-2)
    together = per_token_logits(module.model, {k: v.cuda() for k, v in packed.items()})
    for got, example in zip(split_by_sequence(together, packed["sequence_ids"][0].cuda()), examples, strict=True):
        alone = per_token_logits(
            module.model, {k: v.cuda() for k, v in PadCollator(tiny_tokenizer.pad_token_id)([example]).items()}
        )
        torch.testing.assert_close(got, alone, atol=BF16_LOGITS_ATOL, rtol=0)


def test_qlora_nf4_trains_on_cuda(tiny_model_dir, tiny_tokenizer):
    torch.manual_seed(0)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    module = SFT(
        ModelSpec(path=str(tiny_model_dir), quantization=quantization),
        peft=lora(),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
    )
    loader = repeated_batch_loader(tiny_tokenizer, steps=8)
    recorder = short_fit(module, loader, steps=8, accelerator="cuda", devices=1, precision="bf16-mixed")
    assert_trains_like_fp32_on_cpu(recorder.losses, tiny_model_dir, tiny_tokenizer)  # the unquantized run


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_online_rl_runs_on_cuda_in_bf16(tiny_model_dir, tmp_path, algorithm):
    """Rollouts, rewards, reference and value forward passes all on the GPU under bf16-mixed."""
    import lightning as L

    from lightning_ft.algorithms import GRPO, PPO
    from lightning_ft.data import PromptData
    from tests.helpers import REWARD, adamw, prompt_file, quiet_trainer

    L.seed_everything(0)
    spec = ModelSpec(path=str(tiny_model_dir))
    options = {"reward_funcs": [REWARD], "max_new_tokens": 8, "peft": lora(), "optimizer": adamw(1e-3)}
    module = PPO(spec, target_kl=1.0, **options) if algorithm == "ppo" else GRPO(spec, num_generations=4, **options)
    data = PromptData(prompt_file(tmp_path), val=prompt_file(tmp_path), tokenizer=module.tokenizer, batch_size=4)
    trainer = quiet_trainer(accelerator="cuda", devices=1, precision="bf16-mixed", max_steps=8, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(value) for value in metrics.values()), metrics
    assert "val/reward" in metrics

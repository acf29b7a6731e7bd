"""`compile: true` compiles the decoder layers and changes no number: same loss and gradients as eager."""

from __future__ import annotations

import peft
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.data.packing import PackingCollator
from lightning_ft.model import ModelSpec
from tests.helpers import tokenized_examples


def loss_and_grads(model_dir, examples, pad_token_id, compile: bool) -> list[tuple[float, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    module = SFT(
        ModelSpec(path=str(model_dir)),
        peft=peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
        compile=compile,
    )
    module.configure_model()
    collate = PackingCollator(pad_token_id)
    results = []
    # Two packed batches of different lengths: the compiled layers must take both (dynamic shapes).
    for part in (examples, examples[:2]):
        batch = collate([{"input_ids": [e["input_ids"] for e in part], "labels": [e["labels"] for e in part]}])
        module.model.zero_grad()
        loss_sum, count = module.loss_sum(batch)
        (loss_sum / count).backward()
        grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}
        results.append((float(loss_sum / count), grads))
    return results


def test_compiled_layers_match_eager(tiny_model_dir, tiny_tokenizer):
    examples = tokenized_examples(tiny_tokenizer)
    eager = loss_and_grads(tiny_model_dir, examples, tiny_tokenizer.pad_token_id, compile=False)
    compiled = loss_and_grads(tiny_model_dir, examples, tiny_tokenizer.pad_token_id, compile=True)
    for (eager_loss, eager_grads), (compiled_loss, compiled_grads) in zip(eager, compiled, strict=True):
        assert abs(eager_loss - compiled_loss) < 1e-5
        assert eager_grads.keys() == compiled_grads.keys()
        for name, grad in eager_grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_compile_wraps_every_decoder_layer(tiny_model_dir):
    module = SFT(ModelSpec(path=str(tiny_model_dir)), compile={"dynamic": True, "mode": "default"})
    module.configure_model()
    layers = module.model.model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)

"""`ModelSpec`: chat templates, pad tokens, GGUF discovery, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.data.collate import PadCollator
from lightning_ft.model import ModelSpec
from lightning_ft.model.chat_templates import BUILTIN_CHAT_TEMPLATES
from lightning_ft.model.spec import find_gguf_file
from tests.helpers import tokenized_examples


def test_builtin_template_is_installed_on_the_tokenizer(tiny_model_dir):
    tokenizer = ModelSpec(path=str(tiny_model_dir), chat_template="alpaca").load_tokenizer()
    assert tokenizer.chat_template == BUILTIN_CHAT_TEMPLATES["alpaca"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], tokenize=False
    )
    assert text == "### Instruction:\nHi\n\n### Response:\nYo<|im_end|>\n\n"


def test_unknown_template_lists_the_builtin_ones(tiny_model_dir):
    with pytest.raises(ValueError, match=r"Unknown chat template 'vicuna'.*\['alpaca', 'chatml', 'llama3', 'plain'\]"):
        ModelSpec(path=str(tiny_model_dir), chat_template="vicuna").load_tokenizer()


def test_tokenizer_without_template_asks_for_one(tiny_model_dir, tmp_path):
    tokenizer = ModelSpec(path=str(tiny_model_dir)).load_tokenizer()
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="has no chat template"):
        ModelSpec(path=str(tmp_path)).load_tokenizer()


def test_gguf_file_is_found_only_where_unambiguous(tmp_path, tiny_model_dir):
    assert find_gguf_file(str(tiny_model_dir)) is None  # has config.json
    (tmp_path / "a.gguf").touch()
    assert find_gguf_file(str(tmp_path)) == "a.gguf"
    (tmp_path / "b.gguf").touch()
    with pytest.raises(ValueError, match="several GGUF files"):
        find_gguf_file(str(tmp_path))
    assert find_gguf_file("HuggingFaceTB/SmolLM2-135M-Instruct") is None


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, tiny_tokenizer):
    batch = PadCollator(tiny_tokenizer.pad_token_id)(tokenized_examples(tiny_tokenizer))
    gradients = []
    for checkpointing in (False, True):
        module = SFT(ModelSpec(path=str(tiny_model_dir)), gradient_checkpointing=checkpointing)
        module.configure_model()
        assert module.model.is_gradient_checkpointing is checkpointing
        loss_sum, _ = module.loss_sum(batch)
        loss_sum.backward()
        gradients.append({n: p.grad.clone() for n, p in module.model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


def test_a_gguf_loads_from_its_cached_plain_copy_exactly(smollm2_dir, monkeypatch):
    """The cached copy gives the GGUF's own tokens, template and logits; once it exists, loads never parse the GGUF
    again (that parse is what made every load of the 135M model take tens of seconds)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_ft.model.spec import dense_gguf_dir, dense_gguf_kwargs

    spec = ModelSpec(path=str(smollm2_dir))
    cached = dense_gguf_dir(spec)
    assert dense_gguf_dir(spec) == cached and (cached / "model.safetensors").exists()

    def no_parsing(*args, **kwargs):
        raise AssertionError("the GGUF was parsed again")

    with monkeypatch.context() as patched:
        patched.setattr(gguf_loading, "load_gguf_checkpoint", no_parsing)
        tokenizer, model = spec.load_tokenizer(), spec.load_model()
    direct_tokenizer = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    text = "<|im_start|>user\nWhat is 12 × 7? Ünïcödé\t tabs<|im_end|>\n"
    assert tokenizer(text)["input_ids"] == direct_tokenizer(text)["input_ids"]
    assert tokenizer.chat_template == direct_tokenizer.chat_template
    direct = AutoModelForCausalLM.from_pretrained(
        spec.path, gguf_file=spec.gguf_file, dtype=torch.float32, **dense_gguf_kwargs()
    )
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)

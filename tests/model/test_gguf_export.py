"""GGUF export round trips: a model written as GGUF and read back by transformers' GGUF loader gives the logits of
the model it came from (f32), or of that model with its weights rounded as the file stores them (f16, bf16, q8_0).

Tolerances, derived:
- f32 stores every weight exactly, so the reloaded model is the same function: logits within 1e-5 (float32 noise;
  a missing q/k rope permutation moves the tiny model's logits by ~2e-3, so this catches it).
- f16/bf16/q8_0: the reference is the original model with every matrix rounded to the stored type first (norms
  stay f32, as in the file); the reloaded model computes the same function, so again 1e-5.
- q8_0 per weight: a block of 32 stores ``q = round(w / d)`` with ``d = absmax / 127`` kept as f16, so
  ``|q * f16(d) - w| <= d / 2 + 127 * d * 2**-11`` (half a step, plus the f16 rounding of ``d`` times ``|q| <= 127``).
"""

from __future__ import annotations

import gguf
import numpy as np
import peft
import pytest
import torch
from tokenizers import Regex, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lightning_ft.cli import main
from lightning_ft.model import ModelSpec
from lightning_ft.model.export import save_export
from lightning_ft.model.gguf_export import export_gguf, write_gguf
from lightning_ft.model.gguf_vocab import LLAMA3_SPLIT, QWEN2_SPLIT
from lightning_ft.model.gguf_weights import TENSOR_TYPES
from tests.conftest import build_tiny_llama, build_tiny_tokenizer

INPUT_IDS = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 3, 1, 2]])
SAMPLE = "<|im_start|>user\nWhat is the capital of France? 3000 metres!<|im_end|>\n"
SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def tiny_model(model_type: str, vocab_size: int) -> PreTrainedModel:
    if model_type == "llama":
        return build_tiny_llama(vocab_size).eval()
    torch.manual_seed(0)
    if model_type == "mistral":
        return MistralForCausalLM(MistralConfig(vocab_size=vocab_size, sliding_window=None, **SHAPE)).eval()
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab_size, tie_word_embeddings=True, **SHAPE)).eval()


def reload(path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@torch.no_grad()
def logits_of(model: PreTrainedModel) -> torch.Tensor:
    return model(input_ids=INPUT_IDS).logits


@torch.no_grad()
def rounded_as_stored(model: PreTrainedModel, gguf_type: str) -> PreTrainedModel:
    """A copy whose matrices hold what the file stores: rounded to f16/bf16, or quantized and dequantized (q8_0)."""
    rounded = type(model)(model.config).eval()
    rounded.load_state_dict(model.state_dict())
    tensor_type = TENSOR_TYPES[gguf_type]
    for parameter in rounded.parameters():
        if parameter.dim() >= 2:
            stored = gguf.quants.quantize(parameter.numpy(), tensor_type)
            parameter.copy_(torch.from_numpy(gguf.quants.dequantize(stored, tensor_type).reshape(parameter.shape)))
    return rounded


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
def test_f32_reloads_with_the_same_logits(model_type, tokenizer, tmp_path):
    model = tiny_model(model_type, len(tokenizer))
    reloaded = reload(write_gguf(model, tokenizer, tmp_path / "model.gguf", "f32"))
    torch.testing.assert_close(logits_of(reloaded), logits_of(model), atol=1e-5, rtol=0)
    assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings


@pytest.mark.parametrize("gguf_type", ["f16", "bf16", "q8_0"])
def test_rounded_types_reload_with_the_logits_of_the_rounded_model(gguf_type, tokenizer, tmp_path):
    model = tiny_model("llama", len(tokenizer))
    reloaded = reload(write_gguf(model, tokenizer, tmp_path / "model.gguf", gguf_type))
    torch.testing.assert_close(logits_of(reloaded), logits_of(rounded_as_stored(model, gguf_type)), atol=1e-5, rtol=0)
    assert (logits_of(reloaded) - logits_of(model)).abs().max() > 0  # the rounding did happen


def test_q8_0_weights_are_within_the_derived_bound(tokenizer, tmp_path):
    model = tiny_model("llama", len(tokenizer))
    reloaded = reload(write_gguf(model, tokenizer, tmp_path / "model.gguf", "q8_0"))
    for name, original in model.state_dict().items():
        stored = reloaded.state_dict()[name]
        if original.dim() == 1:
            assert torch.equal(stored, original), name  # norms stay f32
            continue
        blocks = original.reshape(-1, 32)
        step = blocks.abs().amax(dim=1, keepdim=True) / 127
        bound = step / 2 + 127 * step * 2**-11 + 1e-7
        assert ((stored.reshape(-1, 32) - blocks).abs() <= bound).all(), name


def test_tokenizer_reads_back_with_its_ids_specials_and_chat_template(tokenizer, tmp_path):
    path = write_gguf(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "model.gguf", "f16")
    reread = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    messages = [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Leaves fall."}]
    assert reread(SAMPLE)["input_ids"] == tokenizer(SAMPLE)["input_ids"]
    assert reread.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        messages, tokenize=False
    )
    assert reread.chat_template == tokenizer.chat_template
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(reread, name) == getattr(tokenizer, name), name
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16


@pytest.mark.parametrize(
    ("split", "name"),
    [(LLAMA3_SPLIT, "llama-bpe"), (QWEN2_SPLIT, "qwen2"), (None, "smollm")],
    ids=["llama3", "qwen2", "digits"],
)
def test_pre_tokenizers_are_named_for_llama_cpp_and_read_back(split, name, tmp_path):
    """Llama 3 / Qwen2 style (split regex, then byte-level) and SmolLM style (single digits, then byte-level)."""
    tokenizer = build_tiny_tokenizer()
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    first = (
        pre_tokenizers.Digits(individual_digits=True)
        if split is None
        else pre_tokenizers.Split(Regex(split), "isolated")
    )
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([first, byte_level])
    path = write_gguf(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "model.gguf", "f16")
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == name
    if split is not None:  # transformers rebuilds these two; it reads 'smollm' as plain byte-level (no digit split)
        reread = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
        assert reread(SAMPLE)["input_ids"] == tokenizer(SAMPLE)["input_ids"]


def test_a_pre_tokenizer_llama_cpp_cannot_name_fails_clearly(tmp_path):
    tokenizer = build_tiny_tokenizer()
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="llama.cpp has no pre-tokenizer matching"):
        write_gguf(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "model.gguf", "f16")


def test_cli_merges_an_adapter_export_first(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    adapted = peft.get_peft_model(base, lora).eval()
    expected = logits_of(adapted)
    export = save_export(
        adapted, AutoTokenizer.from_pretrained(tiny_model_dir), ModelSpec(str(tiny_model_dir)), tmp_path / "a"
    )

    main(["export", "--adapter", str(export), "--output", str(tmp_path / "gguf"), "--gguf", "f32"])
    path = tmp_path / "gguf" / "model-f32.gguf"
    torch.testing.assert_close(logits_of(reload(path)), expected, atol=1e-5, rtol=0)
    assert (expected - logits_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir))).abs().max() > 1e-3
    assert sorted(p.name for p in path.parent.iterdir()) == ["model-f32.gguf"]  # no partial file left behind


def test_plain_model_directory_to_a_gguf_path(tiny_model_dir, tmp_path):
    path = export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", "f32")
    expected = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert path == tmp_path / "tiny.gguf"
    torch.testing.assert_close(logits_of(reload(path)), expected, atol=1e-5, rtol=0)


def test_unsupported_architecture_options_and_types_fail_clearly(tokenizer, tmp_path):
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="supported: llama, mistral, qwen2"):
        write_gguf(gpt2, tokenizer, tmp_path / "gpt2.gguf", "f16")
    scaled = LlamaConfig(vocab_size=len(tokenizer), rope_parameters={"rope_type": "linear", "factor": 2.0}, **SHAPE)
    with pytest.raises(ValueError, match="rope scaling 'linear'"):
        write_gguf(AutoModelForCausalLM.from_config(scaled), tokenizer, tmp_path / "scaled.gguf", "f16")
    with pytest.raises(ValueError, match="supported: f32, f16, bf16, q8_0"):
        write_gguf(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "q4.gguf", "q4_0")
    assert not list(tmp_path.iterdir())


def test_failed_write_keeps_the_previous_file(tokenizer, tmp_path, monkeypatch):
    model = tiny_model("llama", len(tokenizer))
    path = write_gguf(model, tokenizer, tmp_path / "model.gguf", "f32")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", fail)
    with pytest.raises(OSError, match="disk full"):
        write_gguf(model, tokenizer, path, "f16")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


@pytest.mark.slow
def test_smollm2_with_lora_runs_from_f16_gguf(smollm2_dir, tmp_path):
    """SmolLM2-135M-Instruct + a random LoRA (small nonzero B), exported as f16 GGUF and reloaded by transformers,
    replies greedily with the same tokens as the merged model, and its tokenizer renders and encodes the chat the
    same way (the real SmolLM2 BPE tokenizer, chat template included)."""
    spec = ModelSpec(path=str(smollm2_dir))
    tokenizer = spec.load_tokenizer()
    torch.manual_seed(0)
    adapted = peft.get_peft_model(spec.load_model(), peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    export = save_export(adapted, tokenizer, spec, tmp_path / "adapter")
    merged = adapted.eval().merge_and_unload()

    path = export_gguf(export, tmp_path / "gguf", "f16")
    reloaded = reload(path)
    reread = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    reread_prompt = reread.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert reread_prompt["input_ids"] == prompt["input_ids"][0].tolist()
    assert reread.eos_token == tokenizer.eos_token == "<|im_end|>"

    def reply(model: PreTrainedModel) -> list[int]:
        with torch.no_grad():
            output = model.generate(**prompt, max_new_tokens=16, do_sample=False, eos_token_id=tokenizer.eos_token_id)
        return output[0, prompt["input_ids"].shape[1] :].tolist()

    expected = reply(merged)
    assert reply(reloaded) == reply(rounded_as_stored(merged, "f16")) == expected
    assert np.isfinite(logits_of(reloaded).numpy()).all()

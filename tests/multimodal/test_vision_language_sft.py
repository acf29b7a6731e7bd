"""`VisionLanguageSFT` on a tiny assembled LLaVA and the real demo images: assembly keeps its parts, stage 1 trains
the projector alone, stage 2 (LoRA on the language model) lowers the loss, exports reload with equal logits, and
`lightning-ft chat` takes an image."""

from __future__ import annotations

import json
import shutil

import lightning as L
import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from lightning_ft.algorithms import VisionLanguageSFT
from lightning_ft.cli import chat
from lightning_ft.data import MultimodalData
from lightning_ft.model.export import load_export, merge_export
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.vision import language_model_peft_config, vision_language_parts
from tests.helpers import LossRecorder, adamw, greedy_image_reply, quiet_trainer

STEPS = 8
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # CLIP has q/k/v_proj too


def demo_data(module: VisionLanguageSFT, demo_dir) -> MultimodalData:
    return MultimodalData(
        str(demo_dir / "mllm_demo.jsonl"), format="messages", tokenizer=module.processor, batch_size=6, max_length=256
    )


def train(module: VisionLanguageSFT, demo_dir, steps: int = STEPS) -> list[float]:
    L.seed_everything(0)
    recorder = LossRecorder()
    quiet_trainer(max_steps=steps, callbacks=[recorder]).fit(module, datamodule=demo_data(module, demo_dir))
    return recorder.losses


def batch_of(module: VisionLanguageSFT, demo_dir) -> dict[str, torch.Tensor]:
    data = demo_data(module, demo_dir)
    data.prepare_data()
    data.setup("fit")
    return next(iter(data._sft_loader(data.datasets["train"], 6, shuffle=False)))


@torch.no_grad()
def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "pixel_values")}
    return model.eval()(**inputs).logits


def test_assembled_llava_keeps_the_language_model_and_vision_tower(tiny_llava_dir, tiny_parts_dir):
    llava = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    language = AutoModelForCausalLM.from_pretrained(tiny_parts_dir / "language").eval()
    ids = torch.tensor([[1, 504, 2234, 28, 253, 1345, 30]])
    with torch.no_grad():
        text_only = llava(input_ids=ids).logits
        expected = language(input_ids=ids).logits
    assert text_only.shape[-1] == expected.shape[-1] + 1  # the added <image> token
    torch.testing.assert_close(text_only[..., :-1], expected)
    vision = load_file(tiny_parts_dir / "vision" / "model.safetensors")
    tower = llava.model.vision_tower.state_dict()
    assert all(torch.equal(tower[name], weight) for name, weight in vision.items())


def test_stage1_trains_the_projector_only(tiny_llava_dir, demo_dir):
    module = VisionLanguageSFT(
        ModelSpec(path=str(tiny_llava_dir)), train_language_model=False, optimizer=adamw(1e-2), lr_scheduler="constant"
    )
    module.configure_model()
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    losses = train(module, demo_dir)
    assert losses[-1] < losses[0]
    changed = {name for name, p in module.model.named_parameters() if not torch.equal(p, before[name])}
    projector = {name for name in before if name.startswith("model.multi_modal_projector.")}
    assert changed == projector and len(projector) == 4  # two linear layers, weights and biases


def test_stage2_lora_targets_the_language_model_and_exports_equal_logits(tiny_llava_dir, demo_dir, tmp_path):
    module = VisionLanguageSFT(
        ModelSpec(path=str(tiny_llava_dir)),
        # lm_head too: on a tiny random model with a 49k vocabulary, only it moves the near-uniform output quickly
        peft=LoraConfig(r=8, lora_alpha=16, target_modules=[*LINEARS, "lm_head"]),
        optimizer=adamw(2e-2),
        lr_scheduler="constant",
    )
    module.configure_model()
    adapted = {name for name, _ in module.model.named_modules() if name.endswith(".lora_A")}
    assert "base_model.model.lm_head.lora_A" in adapted
    layers = adapted - {"base_model.model.lm_head.lora_A"}
    assert len(layers) == 2 * 7 and all(".language_model." in name for name in layers)  # none in the vision tower
    trainable = {name for name, p in module.model.named_parameters() if p.requires_grad}
    assert {name for name in trainable if "lora_" not in name} == {
        f"base_model.model.model.multi_modal_projector.modules_to_save.default.{layer}.{kind}"
        for layer in ("linear_1", "linear_2")
        for kind in ("weight", "bias")
    }  # the projector trains in full beside the adapter, and is saved with it
    losses = train(module, demo_dir)
    assert losses[-1] < 0.8 * losses[0]
    batch = batch_of(module, demo_dir)
    expected = logits(module.model, batch)
    export = module.export(tmp_path / "export")
    reloaded, processor = load_export(export)
    assert isinstance(reloaded, PeftModel) and isinstance(processor, type(module.processor))
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=1e-5)
    merged = merge_export(export, tmp_path / "merged")  # `lightning-ft export`: plain transformers, no peft
    standalone = AutoModelForImageTextToText.from_pretrained(merged)
    assert AutoProcessor.from_pretrained(merged).image_token == "<image>"
    torch.testing.assert_close(logits(standalone, batch), expected, atol=1e-4, rtol=1e-4)


def test_full_export_loads_with_the_auto_classes_and_chats_about_an_image(tiny_llava_dir, demo_dir, tmp_path, capsys):
    module = VisionLanguageSFT(ModelSpec(path=str(tiny_llava_dir)), optimizer=adamw(1e-3))
    train(module, demo_dir, steps=2)
    batch = batch_of(module, demo_dir)
    expected = logits(module.model, batch)
    export = module.export(tmp_path / "export")
    model = AutoModelForImageTextToText.from_pretrained(export)
    processor = AutoProcessor.from_pretrained(export)
    assert processor.image_token == "<image>" and processor.tokenizer.chat_template == module.tokenizer.chat_template
    torch.testing.assert_close(logits(model, batch), expected, atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    image = demo_dir / "mllm_demo_data" / "2.jpg"
    chat(str(export), prompt="Who is he?", image=str(image), max_new_tokens=4)
    assert capsys.readouterr().out.strip() == greedy_image_reply(model, processor, "Who is he?", image, 4)


def test_stage_options_are_checked(tiny_llava_dir):
    spec = ModelSpec(path=str(tiny_llava_dir))
    with pytest.raises(ValueError, match="Nothing would train"):
        VisionLanguageSFT(spec, train_projector=False, train_language_model=False)
    with pytest.raises(ValueError, match="for stage 1 \\(projector only\\) leave model.peft unset"):
        VisionLanguageSFT(spec, train_language_model=False, peft=LoraConfig(target_modules="all-linear"))


def test_all_linear_reaches_the_language_model_only(tiny_llava_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    parts = vision_language_parts(model)
    assert parts == ("model.vision_tower", "model.multi_modal_projector", "model.language_model")
    config = language_model_peft_config(LoraConfig(target_modules="all-linear"), model, parts, True, False)
    assert len(config.target_modules) == 14 and all(".language_model." in name for name in config.target_modules)
    assert config.modules_to_save == ["multi_modal_projector"]
    with_vision = language_model_peft_config(LoraConfig(target_modules=["q_proj"]), model, parts, False, True)
    assert sorted(with_vision.target_modules) == sorted(
        [f"model.language_model.layers.{i}.self_attn.q_proj" for i in range(2)]
        + [f"model.vision_tower.encoder.layers.{i}.self_attn.q_proj" for i in range(2)]
    )
    assert not with_vision.modules_to_save


def test_qlora_quantizes_the_language_model_only_and_trains(tiny_llava_dir, demo_dir):
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    spec = ModelSpec(path=str(tiny_llava_dir), quantization=BitsAndBytesConfig(load_in_4bit=True))
    module = VisionLanguageSFT(spec, peft=LoraConfig(r=4, target_modules="all-linear"), optimizer=adamw(1e-2))
    module.configure_model()
    quantized = {name for name, m in module.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantized) == 14 and all(".language_model." in name for name in quantized)
    losses = train(module, demo_dir, steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_answers_learn_to_depend_on_the_image(tiny_llava_dir, demo_dir, tmp_path):
    """Three photos, one question, three answers: only the image tells them apart. After training, the loss with each
    photo is far below the loss with the photos rotated among the conversations."""
    answers = {"1.jpg": "Kane and Gretzka.", "2.jpg": "Thomas Muller.", "3.jpg": "Gui Haichao."}
    records = [
        {
            "messages": [{"role": "user", "content": "<image>Who is this?"}, {"role": "assistant", "content": answer}],
            "images": [str(demo_dir / "mllm_demo_data" / photo)],
        }
        for photo, answer in answers.items()
    ]
    path = tmp_path / "who.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    L.seed_everything(0)
    module = VisionLanguageSFT(ModelSpec(path=str(tiny_llava_dir)), optimizer=adamw(1e-2), lr_scheduler="constant")
    data = MultimodalData(str(path), format="messages", tokenizer=module.processor, batch_size=3)
    quiet_trainer(max_steps=60).fit(module, datamodule=data)
    batch = next(iter(data._sft_loader(data.datasets["train"], 3, shuffle=False)))
    rotated = {**batch, "pixel_values": batch["pixel_values"][[1, 2, 0]]}
    module.eval()
    with torch.no_grad():
        right, wrong = (torch.div(*module.loss_sum(inputs)).item() for inputs in (batch, rotated))
    assert right < 0.1 and wrong > 10 * right, (right, wrong)


def test_extra_validation_sets_read_their_images_beside_their_own_file(tiny_llava_dir, demo_dir, tmp_path):
    """``val_extra`` for vision-language SFT: a copy of the main set logs the main set's loss exactly, and a set in
    another directory (its images relative to it) logs the loss it gets as the only validation set."""
    shutil.copytree(demo_dir / "mllm_demo_data", tmp_path / "mllm_demo_data")
    subset = tmp_path / "first_two.jsonl"
    subset.write_text("".join((demo_dir / "mllm_demo.jsonl").read_text().splitlines(keepends=True)[:2]))
    module = VisionLanguageSFT(ModelSpec(path=str(tiny_llava_dir)))

    def validated(**sets) -> dict[str, float]:
        data = MultimodalData(str(demo_dir / "mllm_demo.jsonl"), format="messages", tokenizer=module.processor, **sets)
        trainer = quiet_trainer()
        trainer.validate(module, datamodule=data, verbose=False)
        return {name: float(value) for name, value in trainer.callback_metrics.items()}

    demo = str(demo_dir / "mllm_demo.jsonl")
    metrics = validated(val=demo, val_extra={"copy": demo, "first_two": str(subset)})
    assert metrics["val_copy/loss"] == metrics["val/loss"]
    assert metrics["val_first_two/loss"] == pytest.approx(validated(val=str(subset))["val/loss"], rel=1e-6)

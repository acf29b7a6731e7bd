"""The multimodal recipes through the `lightning-ft` CLI: assemble a LLaVA, stage 1 (projector), stage 2 (LoRA) from
stage 1's export, then chat about an image with stage 2's export."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_ft.cli import main
from lightning_ft.model.export import load_export, read_manifest
from tests.helpers import greedy_image_reply

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "multimodal"


def fit(recipe: str, model: Path, demo_dir: Path, root: Path) -> Path:
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / recipe),
            "--model.model.path",
            str(model),
            "--data.train",
            str(demo_dir / "mllm_demo.jsonl"),
            "--data.format",
            "messages",
            "--data.batch_size",
            "2",
            "--data.max_length",
            "256",
            "--trainer.max_steps",
            "2",
            "--trainer.accumulate_grad_batches",
            "1",
            "--model.gradient_checkpointing",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
        ]
    )
    return root / "lightning_logs" / "version_0" / "hf" / "final"


def test_stage1_then_stage2_then_chat(tiny_parts_dir, demo_dir, tmp_path, capsys):
    llava = tmp_path / "llava"
    vision, language = str(tiny_parts_dir / "vision"), str(tiny_parts_dir / "language")
    main(["assemble-llava", "--vision", vision, "--language", language, "--output", str(llava)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == str(llava)
    stage1 = fit("llava_stage1_projector.yaml", llava, demo_dir, tmp_path / "stage1")
    assert read_manifest(stage1)["kind"] == "full"
    stage2 = fit("llava_stage2_lora.yaml", stage1, demo_dir, tmp_path / "stage2")
    manifest = read_manifest(stage2)
    assert manifest["kind"] == "peft" and manifest["base"]["path"] == str(stage1)
    adapter = json.loads((stage2 / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["multi_modal_projector"]
    capsys.readouterr()
    image = demo_dir / "mllm_demo_data" / "3.jpg"
    main(["chat", "--model", str(stage2), "--image", str(image), "--prompt", "What is this?", "--max_new_tokens", "3"])
    model, processor = load_export(stage2)
    assert capsys.readouterr().out.strip() == greedy_image_reply(model, processor, "What is this?", image, 3)

"""The reasoning and tool-calling recipes run end to end on the tiny model, with Qwen3's published template installed
(`tests/data/qwen3_template.py`): fit, export, and the export renders as training did."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from lightning_ft.cli import main
from tests.conftest import ROOT, shared_data
from tests.data.qwen3_template import QWEN3_CHAT_TEMPLATE
from tests.helpers import write_jsonl

QUESTIONS = ["What is 2 + 3?", "Capital of France?", "Say hello", "Count to three"]


def fit(recipe: str, model_dir: Path, train: Path, root: Path, *extra: str) -> Path:
    """A short run of ``recipe`` on ``train`` with Qwen3's template; returns the final export."""
    template = root / "qwen3_template.yaml"
    root.mkdir(parents=True, exist_ok=True)
    template.write_text(yaml.safe_dump({"model": {"init_args": {"model": {"chat_template": QWEN3_CHAT_TEMPLATE}}}}))
    main(
        ["fit", "--config", str(ROOT / "configs" / "sft" / recipe), "--config", str(template)]
        + ["--model.model.path", str(model_dir), "--data.train", str(train), "--data.val_fraction", "0"]
        + ["--data.max_length", "512", "--trainer.max_steps", "2", "--trainer.accumulate_grad_batches", "1"]
        + ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra]
    )
    (export,) = root.glob("lightning_logs/version_*/hf/final")
    return export


def test_reasoning_recipe_trains_and_exports_its_template_arguments(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "Done.", "reasoning_content": f"Think about: {question}"},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": "<think>\nPolite.\n</think>\n\nYou are welcome."},
            ]
        }
        for question in QUESTIONS
    ]
    train = write_jsonl(tmp_path / "reasoning.jsonl", records)
    export = fit(
        "reasoning.yaml",
        tiny_model_dir,
        train,
        tmp_path / "run",
        "--data.chat_template_kwargs",
        "{enable_thinking: false}",
    )
    tokenizer = AutoTokenizer.from_pretrained(export)
    prompt = [{"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.chat_template.endswith(QWEN3_CHAT_TEMPLATE)
    manifest = json.loads((export / "lightning_ft.json").read_text())
    assert manifest["kind"] == "peft"


def test_tool_calling_recipe_trains_on_glaive_and_exports_a_template_with_tools(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    lines = shared_data("chat/glaive_toolcall_en_demo.jsonl").read_text().splitlines()[:16]
    train = tmp_path / "glaive.jsonl"
    train.write_text("\n".join(lines) + "\n")
    export = fit("tool_calling.yaml", tiny_model_dir, train, tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(export)
    record = json.loads(lines[0])
    tools = [{"type": "function", "function": schema} for schema in json.loads(record["tools"])]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tools=tools, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n# Tools\n") and '"name": "search_recipes"' in rendered

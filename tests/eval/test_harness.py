"""The lm-eval adapter: a local multiple-choice task in YAML over a JSONL file, scored by lm-eval and by
`lightning_ft.eval.choice` on the same model (per-option log-likelihoods and accuracies agree), an unmerged PEFT
adapter equal to its merged model, and the errors."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import get_peft_model

from lightning_ft.eval.choice import choice_loglikelihoods, choice_scores
from lightning_ft.eval.harness import LM_EVAL_MISSING, find_tasks, offline_hub, run_harness
from lightning_ft.eval.items import load_items
from lightning_ft.model.export import load_export
from tests.conftest import require
from tests.helpers import context_dependent, lora, write_jsonl

require("lm_eval", "the lm-eval adapter tests need lm-evaluation-harness (pip install 'lightning-ft[eval]')")

TASK = "lightning_ft_mc"
TINY_QUESTIONS = [
    ("What is the capital of France?", ["Paris", "London", "the capital of France is Paris", "a"], 0),
    ("Convert 3 kilometres to metres.", ["3000 metres", "3 metres", "3 kilometres"], 0),
    ("Say hello.", ["hello world", "goodbye", "Thank you, goodbye!"], 0),
    ("Write a haiku about autumn.", ["autumn leaves falling on a quiet pond", "the a of and to in is it"], 0),
    ("Which digit comes after 4?", ["3", "5", "7", "0"], 1),
    ("Answer briefly: what is 2 + 2?", ["four", "4", "twenty-two"], 1),
    ("Which word is a greeting?", ["goodbye", "autumn", "hello"], 2),
    ("Is the sky blue?", ["no", "yes"], 1),
]
# 20 general-knowledge questions a 135M instruct model gets partly right (its accuracy is neither 0 nor 1).
KNOWLEDGE_QUESTIONS = [
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], 2),
    ("How many days are there in a week?", ["Five", "Six", "Seven", "Eight"], 2),
    ("Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter", "Saturn"], 1),
    ("What is the largest ocean on Earth?", ["Atlantic Ocean", "Indian Ocean", "Arctic Ocean", "Pacific Ocean"], 3),
    ("What gas do plants absorb from the air?", ["Oxygen", "Carbon dioxide", "Nitrogen", "Helium"], 1),
    ("Who wrote the play Romeo and Juliet?", ["Charles Dickens", "William Shakespeare", "Mark Twain", "Homer"], 1),
    ("What is the chemical symbol for gold?", ["Ag", "Fe", "Au", "Pb"], 2),
    ("How many continents are there?", ["Five", "Six", "Seven", "Nine"], 2),
    ("What is the boiling point of water in degrees Celsius?", ["50", "90", "100", "120"], 2),
    ("Which animal is the largest mammal?", ["Elephant", "Blue whale", "Giraffe", "Hippopotamus"], 1),
    ("What is the square root of 81?", ["7", "8", "9", "10"], 2),
    ("In which country are the pyramids of Giza?", ["Mexico", "Egypt", "Peru", "India"], 1),
    ("Which language has the most native speakers?", ["English", "Spanish", "Mandarin Chinese", "Hindi"], 2),
    ("What is the hardest natural substance?", ["Gold", "Iron", "Diamond", "Quartz"], 2),
    ("Which organ pumps blood through the body?", ["Lungs", "Liver", "Heart", "Kidney"], 2),
    ("Who painted the Mona Lisa?", ["Vincent van Gogh", "Leonardo da Vinci", "Pablo Picasso", "Claude Monet"], 1),
    ("What is the currency of Japan?", ["Yuan", "Won", "Yen", "Rupee"], 2),
    ("Which element has atomic number 1?", ["Helium", "Hydrogen", "Oxygen", "Carbon"], 1),
    ("How many sides does a hexagon have?", ["Five", "Six", "Seven", "Eight"], 1),
    ("What is the smallest prime number?", ["0", "1", "2", "3"], 2),
]


def write_task(root: Path, questions: list[tuple[str, list[str], int]]) -> tuple[Path, Path]:
    """A folder with one lm-eval multiple-choice task over a local JSONL (datasets cache kept under ``root``);
    returns ``(task folder, data file)``."""
    data = write_jsonl(root / "mc.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in questions])
    tasks = root / "tasks"
    tasks.mkdir()
    config = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(root / "datasets-cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "question",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (tasks / f"{TASK}.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    return tasks, data


def harness_loglikelihoods(summary: dict[str, Any]) -> list[list[float]]:
    """Per document (in document order), lm-eval's log-likelihood of each option, from its logged samples."""
    samples = sorted(summary["samples"][TASK], key=lambda sample: sample["doc_id"])
    return [[response[0][0] for response in sample["resps"]] for sample in samples]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def assert_matches_lm_eval(model, tokenizer, tasks: Path, data: Path, chat: bool, atol: float) -> dict[str, Any]:
    """Our per-option log-likelihoods equal lm-eval's within ``atol``, and accuracies are identical."""
    summary = run_harness(
        model, tokenizer, [TASK], include_path=str(tasks), apply_chat_template=chat, batch_size=4, log_samples=True
    )
    items = load_items(str(data))
    ours = choice_loglikelihoods(model, tokenizer, items, batch_size=3, chat_template=chat)
    theirs = harness_loglikelihoods(summary)
    assert len(ours) == len(theirs) == len(items)
    for our_row, their_row in zip(ours, theirs, strict=True):
        assert our_row == pytest.approx(their_row, rel=1e-6, abs=atol)
    scores = choice_scores(items, ours)
    metrics = summary["results"][TASK]
    assert mean([s["acc"] for s in scores]) == metrics["acc"]
    assert mean([s["acc_norm"] for s in scores]) == metrics["acc_norm"]
    assert summary["num_samples"][TASK] == len(items)
    return summary


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model, tokenizer = load_export(tiny_model_dir)
    return context_dependent(model).eval(), tokenizer


@pytest.fixture
def tiny_task(tmp_path: Path) -> tuple[Path, Path]:
    return write_task(tmp_path, TINY_QUESTIONS)


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_choice_accuracy_equals_lm_eval(tiny, tiny_task: tuple[Path, Path], chat: bool) -> None:
    model, tokenizer = tiny
    summary = assert_matches_lm_eval(model, tokenizer, *tiny_task, chat=chat, atol=1e-5)
    metrics = summary["results"][TASK]
    assert set(metrics) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert summary["configs"] == [TASK]
    assert summary["lm_eval_version"]
    json.dumps(summary)


def test_samples_only_when_asked(tiny, tiny_task: tuple[Path, Path]) -> None:
    model, tokenizer = tiny
    summary = run_harness(model, tokenizer, [TASK], include_path=str(tiny_task[0]), limit=2)
    assert "samples" not in summary
    assert summary["num_samples"] == {TASK: 2}


def test_peft_adapter_runs_unmerged_and_equals_the_merged_model(tiny, tiny_task: tuple[Path, Path]) -> None:
    """LoRA with random B on every linear layer: lm-eval scores the PeftModel as it is (no merge), the numbers equal
    the merged model's, and differ from the base model's (the adapter is really applied)."""
    model, tokenizer = tiny
    tasks = str(tiny_task[0])
    adapted = get_peft_model(copy.deepcopy(model), lora()).train()
    unmerged = run_harness(adapted, tokenizer, [TASK], include_path=tasks, log_samples=True)
    assert adapted.training and any("lora_A" in name for name, _ in adapted.named_parameters())
    merged_model = copy.deepcopy(adapted).merge_and_unload().eval()
    merged = run_harness(merged_model, tokenizer, [TASK], include_path=tasks, log_samples=True)
    base = run_harness(model, tokenizer, [TASK], include_path=tasks, log_samples=True)
    for with_adapter, folded in zip(harness_loglikelihoods(unmerged), harness_loglikelihoods(merged), strict=True):
        assert with_adapter == pytest.approx(folded, abs=1e-4)
    assert unmerged["results"] == merged["results"]
    difference = torch.tensor(harness_loglikelihoods(unmerged)[0]) - torch.tensor(harness_loglikelihoods(base)[0])
    assert difference.abs().max() > 0.1


def test_unknown_task_is_named_with_a_pointer_to_include_path() -> None:
    with pytest.raises(ValueError, match=r"(?s)no task 'hellaswagg' \(did you mean hellaswag.*include_path"):
        find_tasks(["hellaswagg"])


def test_local_tasks_index_only_the_include_path(tiny_task: tuple[Path, Path]) -> None:
    manager = find_tasks([TASK], include_path=str(tiny_task[0]))
    assert manager.all_tasks == [TASK]
    with pytest.raises(FileNotFoundError, match="include_path"):
        find_tasks([TASK], include_path=str(tiny_task[0] / "absent"))


def test_offline_hub_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    before = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    with offline_hub():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_DATASETS_OFFLINE"] == "0"
    assert (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_missing_lm_eval_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tiny) -> None:
    model, tokenizer = tiny
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"pip install 'lightning-ft\[eval\]'") as error:
        run_harness(model, tokenizer, [TASK])
    assert str(error.value) == LM_EVAL_MISSING


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    return load_export(smollm2_dir)


@pytest.mark.slow
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_choice_accuracy_equals_lm_eval_on_smollm2(smollm2, tmp_path: Path, chat: bool) -> None:
    """The real SmolLM2-135M-Instruct on 20 four-option questions: same per-option log-likelihoods (float32; the
    batches differ, so within 1e-4) and the same acc and acc_norm, strictly between 0 and 1."""
    model, tokenizer = smollm2
    tasks, data = write_task(tmp_path, KNOWLEDGE_QUESTIONS)
    summary = assert_matches_lm_eval(model, tokenizer, tasks, data, chat=chat, atol=1e-4)
    assert 0.0 < summary["results"][TASK]["acc"] < 1.0

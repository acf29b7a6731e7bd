"""`lightning-ft eval` end to end on the tiny model: the report agrees with items.jsonl, items pair by identity,
replies are greedy decoding, and an interrupted run keeps and reuses what it generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lightning_ft.cli import main
from lightning_ft.eval import scoring
from lightning_ft.eval.items import EvalItem
from lightning_ft.eval.judge import GRADE_PREFIX
from lightning_ft.eval.report import set_report
from lightning_ft.model.export import save_export
from lightning_ft.model.generation import generate_replies
from lightning_ft.model.spec import ModelSpec
from tests.eval.reports import check_report_matches_items
from tests.eval.stub_judge import StubServer
from tests.eval.test_harness import TASK, write_task
from tests.helpers import greedy_reply, read_jsonl, write_jsonl

QA = [
    {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
    {"question": "Capital of France?", "answer": "Paris"},
    {"question": "Say hello", "answer": "hello world"},
    {"question": "Count to three", "answer": "one two three"},
    {"question": "Write a haiku about autumn"},  # no reference: replies only
]
TURNS = [{"question_id": 1, "turns": ["Write a haiku", "Now shorter"]}]
CHOICES = [
    {"question": "The capital of France is", "choices": ["Paris", "a haiku", "3000"], "answer": 0},
    {"question": "3 kilometres are", "choices": ["3000 metres", "Paris"], "answer": "A"},
]


@pytest.fixture(scope="module")
def adapter_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA export of the tiny model whose B matrices are random, so it answers differently from its base."""
    spec = ModelSpec(path=str(tiny_model_dir))
    model = get_peft_model(spec.load_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    return save_export(model, spec.load_tokenizer(), spec, tmp_path_factory.mktemp("export") / "final")


def run_eval(tmp_path: Path, export: Path, base: Path, *extra: str) -> tuple[dict, list[dict]]:
    qa = write_jsonl(tmp_path / "qa.jsonl", QA + TURNS)
    choices = write_jsonl(tmp_path / "choices.jsonl", CHOICES)
    output = tmp_path / "report"
    main(
        ["eval", "--model", str(export), "--data", str(qa), "--data", str(choices), "--baseline", str(base)]
        + ["--max-new-tokens", "6", "--batch-size", "2", "--bootstrap-samples", "200", "--output", str(output)]
        + list(extra)
    )
    return json.loads((output / "report.json").read_text()), read_jsonl(output / "items.jsonl")


def test_report_is_consistent_with_items(tmp_path: Path, adapter_export: Path, tiny_model_dir: Path) -> None:
    report, items = run_eval(tmp_path, adapter_export, tiny_model_dir)
    assert report["models"]["model"]["kind"] == "peft" and report["models"]["baseline"]["kind"] == "base"
    assert report["models"]["model"]["trained_from"] == str(tiny_model_dir)
    qa = report["sets"]["qa"]
    assert qa["counts"] == {"items": 6, "open_ended": 6, "multiple_choice": 0, "with_reference": 4}
    assert qa["skipped"] == {"no_reference": 2}
    check_report_matches_items(report, items, ("model", "baseline"))
    qa_items = [item for item in items if item["set"] == "qa"]
    assert qa["metrics"]["mean_token_loss"]["model"] != qa["metrics"]["mean_token_loss"]["baseline"]
    multi_turn = next(item for item in qa_items if item.get("follow_ups"))
    assert len(multi_turn["model"]["replies"]) == 2
    choice = report["sets"]["choices"]
    chosen = [item["model"]["choice"]["acc"] for item in items if item["set"] == "choices"]
    assert choice["counts"]["multiple_choice"] == 2
    assert choice["metrics"]["choice_accuracy"]["model"] == pytest.approx(sum(chosen) / 2)


def test_replies_are_greedy_decoding_whatever_the_batch(tiny_model_dir: Path) -> None:
    spec = ModelSpec(path=str(tiny_model_dir))
    model, tokenizer = spec.load_model().eval(), spec.load_tokenizer()
    conversations = [[{"role": "user", "content": row["question"]}] for row in QA]
    batched = generate_replies(model, tokenizer, conversations, max_new_tokens=8, batch_size=3)
    assert batched == [greedy_reply(model, tokenizer, conversation, 8) for conversation in conversations]


def test_items_pair_by_identity_not_position() -> None:
    """Model and baseline hold the same per-item scores in opposite orders: paired by id every difference is 0;
    paired by position they would differ by (1, 0, -1). An item only one model was scored on is left out."""
    items = [EvalItem(name, [{"role": "user", "content": name}], reference="x") for name in "abcd"]
    model = scoring.SetScores(scores={"a": {"exact_match": 1.0}, "b": {"exact_match": 0.0}, "c": {"exact_match": 0.0}})
    baseline = scoring.SetScores(
        scores={
            "d": {"exact_match": 1.0},
            "c": {"exact_match": 0.0},
            "b": {"exact_match": 0.0},
            "a": {"exact_match": 1.0},
        }
    )
    entry = set_report(items, {"model": model, "baseline": baseline}, samples=100, seed=0)["metrics"]["exact_match"]
    assert entry["paired_items"] == 3 and entry["difference"] == 0.0 and entry["ci95"] == [0.0, 0.0]
    assert (entry["model"], entry["baseline"]) == (pytest.approx(1 / 3), 0.5)


def test_an_interrupted_run_keeps_its_replies_and_the_next_run_reuses_them(
    tmp_path: Path, adapter_export: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = run_eval(tmp_path, adapter_export, tiny_model_dir)
    generated: list[int] = []
    real = scoring.generate_replies

    def counting(model, tokenizer, conversations, **options):  # noqa: ANN001, ANN202
        generated.append(len(conversations))
        return real(model, tokenizer, conversations, **options)

    monkeypatch.setattr(scoring, "generate_replies", counting)
    again, _ = run_eval(tmp_path, adapter_export, tiny_model_dir)
    assert generated == [] and again["sets"] == first["sets"]
    cache = max((tmp_path / "report" / "generations").glob("*.jsonl"), key=lambda path: path.stat().st_size)
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:3]) + '\n{"id": "cut mid-wri')  # killed while writing the 4th reply
    resumed, _ = run_eval(tmp_path, adapter_export, tiny_model_dir)
    assert sum(generated) == len(lines) - 3 and resumed["sets"] == first["sets"]


def test_bad_options_name_the_valid_ones(tmp_path: Path, tiny_model_dir: Path) -> None:
    qa = write_jsonl(tmp_path / "qa.jsonl", QA)
    with pytest.raises(ValueError, match="metric.*'accuracy'.*perplexity"):
        main(["eval", "--model", str(tiny_model_dir), "--data", str(qa), "--metrics", "accuracy"])
    with pytest.raises(ValueError, match="needs a judge"):
        main(["eval", "--model", str(tiny_model_dir), "--data", str(qa), "--judge-mode", "single"])
    with pytest.raises(ValueError, match="give --baseline"):
        main(["eval", "--model", str(tiny_model_dir), "--data", str(qa), "--judge", "x", "--judge-mode", "pairwise"])
    assert EvalItem("x", []).to_dict() == {"id": "x", "source": ""}


def test_endpoint_judge_verdicts_land_in_the_report(
    tmp_path: Path,
    adapter_export: Path,
    tiny_model_dir: Path,
    stub_server: StubServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A judge scoring every reply 8 and always preferring the reply shown first: each model's mean grade is 8, and
    every item is judged in both orders, so each pair disagrees with itself (inconsistent) and the win rate is 0.5.
    Nothing is prefilled for an endpoint, and the API key is sent but never written."""
    monkeypatch.setenv("STUB_KEY", "sk-test-secret")
    stub_server.mode, stub_server.max_requests = "first_wins", 100
    report, items = run_eval(
        tmp_path, adapter_export, tiny_model_dir, "--judge-url", stub_server.url, "--judge-model", "stub"
    )  # fmt: skip
    open_ended = 6
    assert len(stub_server.requests) == 2 * open_ended + 2 * open_ended
    assert all(request["messages"][-1]["role"] == "user" for request in stub_server.requests)
    qa = report["sets"]["qa"]
    for role in ("model", "baseline"):
        assert qa["judge"][role] == {"judged": 6, "parsed": 6, "unparsable": 0, "errors": 0, "mean_score": 8.0}
    pairwise = qa["pairwise_judge"]
    assert (pairwise["inconsistent"], pairwise["wins"], pairwise["losses"], pairwise["win_rate"]) == (6, 0, 0, 0.5)
    assert pairwise["ci95"] == [0.5, 0.5] and "judge" not in report["sets"]["choices"]
    judged = [item for item in items if item["set"] == "qa"]
    assert all(item["pairwise_judge"]["winner"] == "inconsistent" for item in judged)
    assert report["settings"]["judge"]["prefill"] is False
    written = (tmp_path / "report" / "report.json").read_text() + (tmp_path / "report" / "items.jsonl").read_text()
    assert "sk-test-secret" not in written
    with pytest.raises(ValueError, match="judge_prefill needs a local judge"):
        run_eval(tmp_path, adapter_export, tiny_model_dir, "--judge-url", stub_server.url, "--judge-model", "stub",
                 "--judge-prefill", "true")  # fmt: skip


def test_a_local_judge_continues_a_prefilled_verdict(
    tmp_path: Path, adapter_export: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local judge (here the tiny model) is asked with the verdict's start as a final assistant message; what
    it cannot finish is counted unparsable per item, never a crash."""
    from lightning_ft.eval import judge_backends

    asked: list[list[dict[str, str]]] = []
    real = judge_backends.LocalJudge.complete_many

    def recording(self, requests, seed, **options):  # noqa: ANN001, ANN202
        asked.extend(requests)
        return real(self, requests, seed, **options)

    monkeypatch.setattr(judge_backends.LocalJudge, "complete_many", recording)
    report, _ = run_eval(
        tmp_path, adapter_export, tiny_model_dir, "--judge", str(tiny_model_dir), "--judge-mode", "single",
        "--judge-retries", "0",
    )  # fmt: skip
    assert asked and all(request[-1] == {"role": "assistant", "content": GRADE_PREFIX} for request in asked)
    grades = report["sets"]["qa"]["judge"]["model"]
    assert grades["judged"] == 6 and grades["parsed"] + grades["unparsable"] + grades["errors"] == 6
    assert report["settings"]["judge"] == {
        "model": str(tiny_model_dir), "url": None, "modes": ["single"], "criteria": None, "prefill": True
    }  # fmt: skip


def test_harness_numbers_land_in_the_same_report(tmp_path: Path, adapter_export: Path) -> None:
    """A local lm-eval task over the same multiple-choice file: lm-eval's accuracy (chat template, as ours) equals
    our choice accuracy for the same unmerged adapter model."""
    tasks, data = write_task(tmp_path, [(row["question"], row["choices"], 0) for row in CHOICES])
    output = tmp_path / "report"
    main(
        ["eval", "--model", str(adapter_export), "--data", str(data), "--metrics", "choice", "--output", str(output)]
        + ["--harness", TASK, "--harness-include", str(tasks)]
    )
    report = json.loads((output / "report.json").read_text())
    harness = report["harness"]["model"]["results"][TASK]
    assert harness["acc"] == report["sets"]["mc"]["metrics"]["choice_accuracy"]["model"]
    assert harness["acc_norm"] == report["sets"]["mc"]["metrics"]["choice_accuracy_norm"]["model"]

"""The LLM judge: verdict parsing, bounded retries, both orders of a pairwise comparison, per-item errors, an
OpenAI-compatible endpoint (a stub server on 127.0.0.1) and the real SmolLM2 as a local judge."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightning_ft.eval.items import EvalItem, load_items
from lightning_ft.eval.judge import (
    GRADE_PREFIX,
    EndpointJudge,
    LocalJudge,
    combine_orders,
    compare,
    comparison_scores,
    grade,
    grade_scores,
    parse_score,
    parse_winner,
    summarize_comparisons,
    summarize_grades,
)
from lightning_ft.eval.judge_backends import PrefillTokenizer
from lightning_ft.eval.judge_prompts import comparison_messages, grading_messages
from tests.conftest import build_tiny_tokenizer, shared_data
from tests.eval.stub_judge import VERDICT, StubServer


def items_named(*names: str) -> list[EvalItem]:
    return [EvalItem(name, [{"role": "user", "content": f"Question {name}?"}]) for name in names]


def replies_for(items: list[EvalItem], text: str = "An answer.") -> dict[str, list[str]]:
    return {item.id: [f"{text} ({item.id})"] for item in items}


class ScriptedJudge:
    """A judge whose reply is ``script(judging prompt text)``; records every call (prompt, seed, temperature)."""

    def __init__(self, script: Callable[[str], str], batch_size: int | None = None) -> None:
        self.script = script
        self.calls: list[tuple[str, int, float | None]] = []
        if batch_size is not None:
            self.batch_size = batch_size

    def complete(self, messages: list[dict[str, str]], seed: int, temperature: float | None = None) -> str:
        prompt = messages[1]["content"]
        self.calls.append((prompt, seed, temperature))
        return self.script(prompt)

    def calls_about(self, text: str) -> list[tuple[str, int, float | None]]:
        return [call for call in self.calls if text in call[0]]


# Parsing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"reasoning": "Good.", "score": 7}', 7),
        ('```json\n{"reasoning": "Good.", "score": 7}\n```', 7),
        ('My verdict:\n{"score": 7, "reasoning": "Good."}\nThat is all.', 7),
        ('{"reasoning": "Good.", "score": "7"}', 7),
        ('{"reasoning": "Half way.", "score": 7.5}', 7.5),
        ("The reply is fine. Rating: [[7]]", 7),
        ("Rating: 7", 7),
        ('{"score": 7, "reasoning": "cut off befo', 7),
        ("score: 7/10", 7),
        ('{"reasoning": "Great.", "score": 11}', None),
        ('{"reasoning": "Awful.", "score": 0}', None),
        ("Rating: [[0]]", None),
        ('{"score": 10 to 1 to 10', None),
        ("This reply is great, I would give it full marks.", None),
        ('{"reasoning": "no score at all"}', None),
    ],
)
def test_parse_score(text: str, score: float | None) -> None:
    parsed = parse_score(text, scale=10)
    assert (parsed["score"] if parsed else None) == score


def test_parse_score_keeps_reasoning_and_scale() -> None:
    assert parse_score('{"reasoning": "Clear.", "score": 4}', scale=5) == {"score": 4, "reasoning": "Clear."}
    assert parse_score('{"reasoning": "Clear.", "score": 6}', scale=5) is None


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"reasoning": "The first is right.", "winner": "1"}', "1"),
        ('```json\n{"reasoning": "x", "winner": "2"}\n```', "2"),
        ('Verdict: {"winner": "tie", "reasoning": "Both fine."} Done.', "tie"),
        ('{"reasoning": "x", "winner": 2}', "2"),
        ('{"reasoning": "x", "winner": "Assistant 1"}', "1"),
        ("Assistant A is better. [[A]]", "1"),
        ("[[B]]", "2"),
        ("Equally good. [[C]]", "tie"),
        ('{"winner": "2", "reasoning": "cut', "2"),
        ('{"reasoning": "x", "winner": "3"}', None),
        ("Both are nice answers.", None),
    ],
)
def test_parse_winner(text: str, winner: str | None) -> None:
    parsed = parse_winner(text)
    assert (parsed["winner"] if parsed else None) == winner


@pytest.mark.parametrize(
    ("first", "second", "combined"),
    [("a", "a", "a"), ("b", "b", "b"), ("tie", "tie", "tie"), ("a", "tie", "tie"), ("tie", "b", "tie")]
    + [("a", "b", "inconsistent"), ("b", "a", "inconsistent")],
)
def test_combine_orders(first: str, second: str, combined: str) -> None:
    assert combine_orders(first, second) == combined


# Prompts -------------------------------------------------------------------------------------------------------


def test_grading_prompt_shows_the_whole_conversation_and_the_reference() -> None:
    item = EvalItem("q", [{"role": "user", "content": "What is 2+2?"}], ["And 3+3?"], reference="4")
    messages = grading_messages(item, ["It is 4.", "It is 6."], ("accuracy",), scale=10)
    prompt = messages[1]["content"]
    assert [m["role"] for m in messages] == ["system", "user"]
    for text in ("What is 2+2?", "It is 4.", "And 3+3?", "It is 6.", "accuracy", "1 to 10"):
        assert text in prompt
    assert "[Reference answer to the first question]\n4\n" in prompt
    assert prompt.index("It is 4.") < prompt.index("And 3+3?") < prompt.index("It is 6.")
    prefilled = grading_messages(item, ["It is 4."], ("accuracy",), scale=10, prefix=GRADE_PREFIX)
    assert prefilled[-1] == {"role": "assistant", "content": GRADE_PREFIX}
    assert "reference" not in grading_messages(items_named("x")[0], ["y"], ("accuracy",), 10)[1]["content"].lower()


def test_comparison_prompt_puts_first_replies_as_assistant_1() -> None:
    item = EvalItem("q", [{"role": "user", "content": "Name a colour."}])
    prompt = comparison_messages(item, ["Red."], ["Blue."], ("accuracy",))[1]["content"]
    assert prompt.index("Assistant 1's reply") < prompt.index("Red.") < prompt.index("Assistant 2's reply")
    assert prompt.index("Assistant 2's reply") < prompt.index("Blue.")


def test_replies_must_match_the_items() -> None:
    judge = ScriptedJudge(lambda prompt: VERDICT)
    items = items_named("q1", "q2")
    with pytest.raises(ValueError, match="No replies for 1 of 2 items"):
        grade(judge, items, {"q1": ["x"]})
    with pytest.raises(ValueError, match="1 turns; got 2 replies"):
        grade(judge, items, {"q1": ["x", "y"], "q2": ["z"]})
    with pytest.raises(ValueError, match="continues a prefilled reply"):
        grade(judge, items, replies_for(items), response_prefix=GRADE_PREFIX)
    assert judge.calls == []


# Grading -------------------------------------------------------------------------------------------------------


def test_grade_retries_an_unparsable_verdict_a_bounded_number_of_times() -> None:
    """Garbage for q2 every time: exactly retries + 1 = 3 calls, seeded 0, 1, 2, the retries sampled at 0.7."""
    items = items_named("q1", "q2", "q3")
    judge = ScriptedJudge(lambda prompt: "I like it." if "(q2)" in prompt else VERDICT)
    verdicts = grade(judge, items, replies_for(items), retries=2, seed=0)
    assert [(seed, temperature) for _, seed, temperature in judge.calls_about("(q2)")] == [
        (0, None),
        (1, 0.7),
        (2, 0.7),
    ]
    assert len(judge.calls) == 3 + 1 + 1
    assert verdicts[1] == {
        "id": "q2",
        "status": "unparsable",
        "score": None,
        "reasoning": None,
        "attempts": 3,
        "raw": "I like it.",
    }
    assert verdicts[0] == {"id": "q1", "status": "ok", "score": 8, "reasoning": "Correct and clear.", "attempts": 1}
    assert verdicts[2]["status"] == "ok"
    assert summarize_grades(verdicts) == {"judged": 3, "parsed": 2, "unparsable": 1, "errors": 0, "mean_score": 8.0}
    assert grade_scores(verdicts) == [8.0, None, 8.0]


def test_grade_stops_retrying_once_a_verdict_parses() -> None:
    replies = iter(["not yet", '{"reasoning": "ok", "score": 3}'])
    judge = ScriptedJudge(lambda prompt: next(replies))
    items = items_named("q1")
    [verdict] = grade(judge, items, replies_for(items), retries=5)
    assert (verdict["status"], verdict["score"], verdict["attempts"], len(judge.calls)) == ("ok", 3, 2, 2)


def test_judge_failures_are_recorded_per_item_and_not_retried() -> None:
    def script(prompt: str) -> str:
        if "(q1)" in prompt:
            raise RuntimeError("HTTP 500 from the judge")
        return VERDICT

    items = items_named("q1", "q2")
    judge = ScriptedJudge(script)
    verdicts = grade(judge, items, replies_for(items), retries=2)
    assert verdicts[0] == {
        "id": "q1",
        "status": "error",
        "score": None,
        "reasoning": None,
        "attempts": 1,
        "error": "RuntimeError: HTTP 500 from the judge",
    }
    assert verdicts[1]["status"] == "ok"
    assert len(judge.calls) == 2
    assert summarize_grades(verdicts) == {"judged": 2, "parsed": 1, "unparsable": 0, "errors": 1, "mean_score": 8.0}


class BatchedJudge(ScriptedJudge):
    """A scripted judge with ``complete_many``; ``fail_batches`` makes every batch call raise."""

    def __init__(self, script: Callable[[str], str], batch_size: int, fail_batches: bool = False) -> None:
        super().__init__(script, batch_size)
        self.batches: list[int] = []
        self.fail_batches = fail_batches

    def complete_many(self, conversations: list[list[dict[str, str]]], seed: int, **options: Any) -> list[str]:
        self.batches.append(len(conversations))
        if self.fail_batches:
            raise MemoryError("batch too large")
        return [self.complete(messages, seed, **options) for messages in conversations]


def test_grade_batches_through_complete_many_and_reports_progress() -> None:
    """6 items, batch size 4: batches of 4 and 2, progress after each; q5's retries are batched alone."""
    items = items_named(*(f"q{i}" for i in range(6)))
    judge = BatchedJudge(lambda prompt: "?" if "(q5)" in prompt else VERDICT, batch_size=4)
    progress: list[tuple[int, int]] = []
    verdicts = grade(judge, items, replies_for(items), retries=1, progress=lambda *done: progress.append(done))
    assert judge.batches == [4, 2]
    assert progress == [(4, 6), (6, 6)]
    assert [v["status"] for v in verdicts] == ["ok"] * 5 + ["unparsable"]
    assert len(judge.calls_about("(q5)")) == 2


def test_a_failing_batch_is_judged_item_by_item() -> None:
    items = items_named("q1", "q2", "q3")
    judge = BatchedJudge(lambda prompt: VERDICT, batch_size=8, fail_batches=True)
    verdicts = grade(judge, items, replies_for(items))
    assert judge.batches == [3]
    assert [v["status"] for v in verdicts] == ["ok"] * 3


def test_grade_prefills_the_verdict_and_parses_prefix_plus_continuation() -> None:
    judge = ScriptedJudge(lambda prompt: ' 6, "reasoning": "Mostly right."}')
    judge.supports_prefill = True
    seen: list[list[dict[str, str]]] = []
    complete = judge.complete
    judge.complete = lambda messages, seed, **options: seen.append(messages) or complete(messages, seed, **options)
    items = items_named("q1")
    [verdict] = grade(judge, items, replies_for(items), response_prefix=GRADE_PREFIX)
    assert seen[0][-1] == {"role": "assistant", "content": GRADE_PREFIX}
    assert (verdict["status"], verdict["score"], verdict["reasoning"]) == ("ok", 6, "Mostly right.")


# Pairwise ------------------------------------------------------------------------------------------------------


def prefers(text: str) -> Callable[[str], str]:
    """A judge preferring whichever assistant's reply contains ``text`` (a tie when both or neither do)."""

    def script(prompt: str) -> str:
        first, second = prompt.split("[Assistant 2's reply]")
        winner = "tie" if (text in first) == (text in second) else "1" if text in first else "2"
        return json.dumps({"reasoning": "compared", "winner": winner})

    return script


def test_compare_judges_both_orders_and_cancels_a_consistent_preference() -> None:
    """a wins q1 and q2, b wins q3, q4 is a tie: win rate (2 + 0.5) / 4 = 0.625."""
    items = items_named("q1", "q2", "q3", "q4")
    replies_a = {"q1": ["Right."], "q2": ["Right."], "q3": ["Wrong."], "q4": ["Right."]}
    replies_b = {"q1": ["Wrong."], "q2": ["Wrong."], "q3": ["Right."], "q4": ["Right."]}
    judge = ScriptedJudge(prefers("Right."))
    verdicts = compare(judge, items, replies_a, replies_b)
    assert [v["winner"] for v in verdicts] == ["a", "a", "b", "tie"]
    assert [[order["order"] for order in v["orders"]] for v in verdicts] == [["ab", "ba"]] * 4
    assert [order["winner"] for order in verdicts[0]["orders"]] == ["a", "a"]
    assert len(judge.calls) == 8
    assert comparison_scores(verdicts) == [1.0, 1.0, 0.0, 0.5]
    assert summarize_comparisons(verdicts) == {
        "judged": 4,
        "parsed": 4,
        "wins": 2,
        "losses": 1,
        "ties": 1,
        "inconsistent": 0,
        "unparsable": 0,
        "errors": 0,
        "win_rate": 0.625,
    }


def test_a_judge_that_always_prefers_the_first_position_is_inconsistent_on_every_item() -> None:
    items = items_named("q1", "q2", "q3")
    judge = ScriptedJudge(lambda prompt: '{"reasoning": "first is best", "winner": "1"}')
    replies_a, replies_b = replies_for(items, "From A"), replies_for(items, "From B")
    verdicts = compare(judge, items, replies_a, replies_b)
    for item in items:
        shown_first = [prompt.index("From A") < prompt.index("From B") for prompt, _, _ in judge.calls_about(item.id)]
        assert shown_first == [True, False]
    assert [v["winner"] for v in verdicts] == ["inconsistent"] * 3
    assert [[order["winner"] for order in v["orders"]] for v in verdicts] == [["a", "b"]] * 3
    summary = summarize_comparisons(verdicts)
    assert (summary["inconsistent"], summary["wins"], summary["losses"], summary["ties"]) == (3, 0, 0, 0)
    assert summary["win_rate"] == 0.5


def test_compare_records_an_unparsable_or_failed_order_without_a_winner() -> None:
    """q1's A-first order never parses (1 + retries = 2 calls); q2's B-first order raises."""

    def script(prompt: str) -> str:
        a_first = prompt.index("From A") < prompt.index("From B")
        if "(q1)" in prompt and a_first:
            return "hmm"
        if "(q2)" in prompt and not a_first:
            raise TimeoutError("judge timed out")
        return '{"reasoning": "x", "winner": "tie"}'

    items = items_named("q1", "q2", "q3")
    judge = ScriptedJudge(script)
    progress: list[tuple[int, int]] = []
    verdicts = compare(
        judge,
        items,
        replies_for(items, "From A"),
        replies_for(items, "From B"),
        retries=1,
        progress=lambda *d: progress.append(d),
    )
    assert [(v["status"], v["winner"]) for v in verdicts] == [("unparsable", None), ("error", None), ("ok", "tie")]
    assert verdicts[0]["orders"][0]["attempts"] == 2 and verdicts[0]["orders"][1]["status"] == "ok"
    assert verdicts[1]["orders"][1]["error"] == "TimeoutError: judge timed out"
    assert progress[-1] == (3, 3)
    summary = summarize_comparisons(verdicts)
    assert (summary["parsed"], summary["unparsable"], summary["errors"], summary["win_rate"]) == (1, 1, 1, 0.5)
    assert comparison_scores(verdicts) == [None, None, 0.5]


# Local judge ---------------------------------------------------------------------------------------------------


def test_prefill_tokenizer_continues_the_last_assistant_message() -> None:
    tokenizer = PrefillTokenizer(build_tiny_tokenizer())
    messages = [{"role": "user", "content": "Rate it."}, {"role": "assistant", "content": GRADE_PREFIX}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith(f"<|im_start|>assistant\n{GRADE_PREFIX}")
    plain = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert plain.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_local_judge_batches_and_records_what_a_random_model_writes(tiny_model_dir: Path) -> None:
    """A random tiny model cannot write a verdict: every item ends unparsable after 1 + 1 attempts, none crashes."""
    judge = LocalJudge.from_path(tiny_model_dir, max_new_tokens=4, batch_size=2)
    items = items_named("q1", "q2", "q3")
    verdicts = grade(judge, items, replies_for(items), retries=1, response_prefix=GRADE_PREFIX)
    parsed = [v for v in verdicts if v["status"] == "ok"]
    assert all(1 <= v["score"] <= 10 for v in parsed)
    unparsable = [v for v in verdicts if v["status"] == "unparsable"]
    assert all(v["attempts"] == 2 and v["raw"].startswith(GRADE_PREFIX) for v in unparsable)
    assert summarize_grades(verdicts)["errors"] == 0
    assert "LocalJudge(" in repr(judge)


# Endpoint judge ------------------------------------------------------------------------------------------------

SECRET = "sk-stub-0123456789-secret"


@pytest.fixture
def endpoint_judge(stub_server: StubServer, monkeypatch: pytest.MonkeyPatch) -> EndpointJudge:
    monkeypatch.setenv("STUB_JUDGE_KEY", SECRET)
    return EndpointJudge(stub_server.url, "stub-judge", api_key_env="STUB_JUDGE_KEY", timeout=5.0)


def assert_secret_absent(*things: Any) -> None:
    assert SECRET not in json.dumps(things, default=repr)


def test_endpoint_judge_parses_verdicts_and_sends_the_key_only_to_the_server(
    stub_server: StubServer, endpoint_judge: EndpointJudge
) -> None:
    items = items_named("q1", "q2")
    verdicts = grade(endpoint_judge, items, replies_for(items), seed=5)
    assert [(v["status"], v["score"]) for v in verdicts] == [("ok", 8), ("ok", 8)]
    assert len(stub_server.requests) == 2
    request = stub_server.requests[0]
    assert request["authorization"] == f"Bearer {SECRET}"
    assert (request["model"], request["seed"], request["temperature"], request["max_tokens"]) == (
        "stub-judge",
        5,
        0.0,
        512,
    )
    assert "(q1)" in request["messages"][1]["content"]
    settings = {name: value for name, value in vars(endpoint_judge).items() if name != "_client"}
    assert_secret_absent(verdicts, summarize_grades(verdicts), repr(endpoint_judge), settings)
    assert "STUB_JUDGE_KEY" in repr(endpoint_judge)


def test_endpoint_garbage_is_unparsable_per_item_after_bounded_retries(
    stub_server: StubServer, endpoint_judge: EndpointJudge
) -> None:
    """3 items x (1 + 2 retries) = 9 requests; the retries are sampled (temperature 0.7) with seeds 1 and 2."""
    stub_server.mode = "garbage"
    items = items_named("q1", "q2", "q3")
    verdicts = grade(endpoint_judge, items, replies_for(items), retries=2)
    assert [(v["status"], v["attempts"], v["raw"]) for v in verdicts] == [
        ("unparsable", 3, "The reply seems fine to me.")
    ] * 3
    assert len(stub_server.requests) == 9
    first_item = [r for r in stub_server.requests if "(q1)" in r["messages"][1]["content"]]
    assert [(r["seed"], r["temperature"]) for r in first_item] == [(0, 0.0), (1, 0.7), (2, 0.7)]
    assert summarize_grades(verdicts) == {"judged": 3, "parsed": 0, "unparsable": 3, "errors": 0, "mean_score": None}


def test_endpoint_http_500_is_an_error_per_item_and_the_run_completes(
    stub_server: StubServer, endpoint_judge: EndpointJudge
) -> None:
    stub_server.mode = "error"
    items = items_named("q1", "q2", "q3")
    verdicts = grade(endpoint_judge, items, replies_for(items), retries=2)
    assert [(v["status"], v["attempts"]) for v in verdicts] == [("error", 1)] * 3
    assert all(v["error"].startswith("InternalServerError: ") and "stub failure" in v["error"] for v in verdicts)
    assert len(stub_server.requests) == 3
    comparisons = compare(endpoint_judge, items, replies_for(items, "A"), replies_for(items, "B"), retries=2)
    assert len(stub_server.requests) == 3 + 6
    summary = summarize_comparisons(comparisons)
    assert (summary["judged"], summary["errors"], summary["parsed"], summary["win_rate"]) == (3, 3, 0, None)
    assert_secret_absent(verdicts, comparisons, summary)


def test_endpoint_timeout_is_an_error(stub_server: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_server.mode = "slow"
    judge = EndpointJudge(stub_server.url, "stub-judge", api_key_env="UNSET_JUDGE_KEY", timeout=0.3)
    monkeypatch.delenv("UNSET_JUDGE_KEY", raising=False)
    items = items_named("q1")
    [verdict] = grade(judge, items, replies_for(items))
    stub_server.release.set()
    assert verdict["status"] == "error" and verdict["error"].startswith("APITimeoutError: ")
    assert stub_server.requests[0]["authorization"] == "Bearer EMPTY"


def test_endpoint_judge_needs_the_openai_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'lightning-ft\[eval\]'"):
        EndpointJudge("http://127.0.0.1:9/v1", "judge")


# The real SmolLM2 as a local judge -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_grades_mt_bench_answers(smollm2_dir: Path) -> None:
    """SmolLM2-135M grades GPT-4's first-turn answers to the 3 MT-bench questions with a reference answer whose
    answers are shortest. Prompted plainly it seldom writes a verdict that parses (measured on the first 10 questions
    with a GPT-4 answer: 3 of 10, 4 of 10 with 2 retries), so its reply is prefilled with `GRADE_PREFIX` (10 of 10
    parsed, on the first attempt)."""
    items = [item for item in load_items(str(shared_data("eval/mt_bench_questions.jsonl"))) if item.reference]
    gpt4 = {}
    for line in shared_data("eval/mt_bench_reference_gpt4.jsonl").read_text().splitlines():
        record = json.loads(line)
        gpt4[str(record["question_id"])] = record["choices"][0]["turns"][:1]
    items = sorted((item for item in items if item.id in gpt4), key=lambda item: len(gpt4[item.id][0]))[:3]
    judge = LocalJudge.from_path(smollm2_dir, max_new_tokens=12, batch_size=3)
    verdicts = grade(judge, items, {item.id: gpt4[item.id] for item in items}, retries=1, response_prefix=GRADE_PREFIX)
    parsed = [v for v in verdicts if v["status"] == "ok"]
    assert parsed, [v.get("raw") for v in verdicts]
    assert all(isinstance(v["score"], int | float) and 1 <= v["score"] <= 10 for v in parsed)
    summary = summarize_grades(verdicts)
    assert summary["judged"] == 3 and summary["errors"] == 0
    assert summary["parsed"] + summary["unparsable"] == 3 and summary["parsed"] == len(parsed)
    assert summary["mean_score"] == pytest.approx(sum(v["score"] for v in parsed) / len(parsed))

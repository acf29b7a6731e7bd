"""`generate`: Self-Instruct on the real SmolLM2 and on a scripted endpoint (failures counted by reason), resuming a
killed run, the paper's filters, and clear errors for bad arguments and seed files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from lightning_ft.data.sources import DataError
from lightning_ft.prep import generate as generate_module
from lightning_ft.prep.generate import generate
from lightning_ft.prep.self_instruct import (
    InstructionPool,
    UnparsableInstance,
    parse_instance,
    parse_instructions,
    rejection_reason,
)
from tests.conftest import shared_data
from tests.helpers import read_jsonl
from tests.prep.fitting import fit_on
from tests.prep.stub_endpoint import TASKS, EndpointStub, running_stub

SEED_FILE = "sft_alpaca/self_instruct_seed_tasks.jsonl"


@pytest.fixture
def seeds8(tmp_path: Path) -> Path:
    """The first 8 Self-Instruct seed tasks."""
    lines = shared_data(SEED_FILE).read_text(encoding="utf-8").splitlines()[:8]
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def stub() -> Iterator[EndpointStub]:
    with running_stub() as server:
        yield server


def seed_instructions(path: Path) -> list[str]:
    return [record["instruction"] for record in read_jsonl(path)]


@pytest.mark.slow
def test_smollm2_generates_trainable_records_unlike_each_other_and_the_seeds(
    seeds8: Path, smollm2_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "generated.jsonl"
    report = generate(
        str(seeds8),
        str(output),
        model=str(smollm2_dir),
        num_instructions=4,
        examples_per_prompt=4,
        demonstrations=1,
        batch_size=6,
        max_new_tokens=48,
        top_p=0.9,
    )

    records = read_jsonl(output)
    assert len(records) == report["held"] == 4
    assert all(set(record) == {"instruction", "input", "output"} for record in records)
    assert all(isinstance(value, str) for record in records for value in record.values())
    assert all(record["instruction"].strip() and record["output"].strip() for record in records)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = [record["instruction"] for record in records]
    for first, second in combinations(kept, 2):
        assert scorer.score(first, second)["rougeL"].fmeasure < 0.7, (first, second)
    for instruction in kept:
        for seed in seed_instructions(seeds8):
            assert scorer.score(seed, instruction)["rougeL"].fmeasure < 0.7, (seed, instruction)
    assert json.loads((tmp_path / "generated.jsonl.report.json").read_text()) == report
    assert fit_on(output, "alpaca", tiny_model_dir, tmp_path / "fit").is_dir()


def test_endpoint_failures_are_counted_by_reason_and_the_run_completes(seeds8: Path, stub: EndpointStub) -> None:
    """Round 0 sends 4 instruction requests: #1 HTTP 500, #2 garbage (unparsable), #3 and #4 list TASKS[0:6].
    TASKS[1] (keyword), TASKS[4] (a seed) are rejected; examples are asked for TASKS 0, 2, 3, 5 in requests #5-#8,
    where #5 times out and #6 fails with 500: TASKS 3 and 5 are written. Round 1 needs 3: requests #9-#12 list
    TASKS[6:16]; TASKS 6, 8, 9 are kept (7 is too short), 10-15 are surplus; examples #13-#15 succeed."""
    stub.script = {1: "error", 2: "garbage", 5: "slow", 6: "error"}
    output = seeds8.parent / "out.jsonl"

    report = generate(
        str(seeds8),
        str(output),
        endpoint=stub.url,
        endpoint_model="stub",
        num_instructions=5,
        batch_size=4,
        timeout=0.5,
    )

    records = read_jsonl(output)
    assert [record["instruction"] for record in records] == [TASKS[i] for i in (3, 5, 6, 8, 9)]
    assert records[0] == {"instruction": TASKS[3], "input": "", "output": f"An answer to: {TASKS[3]}"}
    assert report["held"] == 5 and report["rounds"] == 2 and report["runs"] == 1
    assert report["requests"] == {"instance_prompts": 7, "instruction_prompts": 8}
    assert report["candidates"] == {"parsed": 16, "passed_filters": 7}
    assert report["instruction_failures"] == {"http_500": 1, "unparsable_reply": 1}
    assert report["rejected"] == {"duplicate": 1, "surplus": 6, "too_short": 1, "unsuitable_keyword": 1}
    assert report["instance_failures"] == {"http_500": 1, "timeout": 1}
    assert report["backend"] == f"endpoint {stub.url} model stub"
    assert len(stub.requests) == 15
    assert stub.requests[0]["model"] == "stub" and stub.requests[0]["top_p"] == 0.5
    assert stub.requests[4]["temperature"] == 0.0  # examples are decoded greedily


def test_a_killed_run_resumes_without_duplicates(
    seeds8: Path, stub: EndpointStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 0 (2 requests: TASKS[0:6]) writes TASKS 0, 2, 3, 5. Round 1 keeps TASKS 6 and 8; the run dies while
    appending them, after TASKS 6's line and half of TASKS 8's. The rerun drops the half line, redoes round 1 (the
    stub now lists TASKS[12:16]) and keeps TASKS 12: six distinct records."""
    output = seeds8.parent / "out.jsonl"
    arguments = {"endpoint": stub.url, "endpoint_model": "stub", "num_instructions": 6, "batch_size": 2}
    append = generate_module.append_records

    def append_then_die(path: Path, records: list[dict[str, str]]) -> None:
        if not path.exists() or len(read_jsonl(path)) < 4:
            return append(path, records)
        append(path, records[:1])
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(records[1])[:20])
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "append_records", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(str(seeds8), str(output), **arguments)
    assert len(output.read_text().splitlines()) == 6 and not output.read_text().endswith("\n")
    monkeypatch.undo()

    report = generate(str(seeds8), str(output), **arguments)

    instructions = [record["instruction"] for record in read_jsonl(output)]
    assert instructions == [TASKS[i] for i in (0, 2, 3, 5, 6, 12)]
    assert report["held"] == 6 and report["resumed_from"] == 5 and report["kept_this_run"] == 1
    assert report["runs"] == 2 and report["rounds"] == 2
    assert report["repairs"] == {"dropped_partial_line": 1}
    assert report["requests"] == {"instance_prompts": 5, "instruction_prompts": 4}  # round 1's first try is lost
    assert report["candidates"] == {"parsed": 10, "passed_filters": 5}
    assert report["rejected"] == {"duplicate": 1, "surplus": 3, "unsuitable_keyword": 1}

    requests_before = len(stub.requests)
    again = generate(str(seeds8), str(output), **arguments)
    assert len(stub.requests) == requests_before and again["held"] == 6 and again["runs"] == 3
    assert len(read_jsonl(output)) == 6


def test_bad_arguments_and_seed_files_give_clear_errors(seeds8: Path, tmp_path: Path) -> None:
    output = str(tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="exactly one of `model`.*and `endpoint`.*got both"):
        generate(str(seeds8), output, model="some/model", endpoint="http://127.0.0.1:1/v1", endpoint_model="m")
    with pytest.raises(ValueError, match="exactly one of `model`.*got neither"):
        generate(str(seeds8), output)
    with pytest.raises(ValueError, match="needs `endpoint_model`"):
        generate(str(seeds8), output, endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="must be a .jsonl file"):
        generate(str(seeds8), str(tmp_path / "out.parquet"), endpoint="http://127.0.0.1:1/v1", endpoint_model="m")

    lines = seeds8.read_text().splitlines()
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text("\n".join([lines[0], lines[1][:-5], *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=f"{malformed}:2: malformed JSON"):
        generate(str(malformed), output, endpoint="http://127.0.0.1:1/v1", endpoint_model="m")
    mistyped = tmp_path / "mistyped.jsonl"
    mistyped.write_text("\n".join([lines[0], lines[1], json.dumps({"instruction": 7, "instances": []})]) + "\n")
    with pytest.raises(DataError, match=f"{mistyped}:3: field 'instruction' must be a non-empty string"):
        generate(str(mistyped), output, endpoint="http://127.0.0.1:1/v1", endpoint_model="m")
    bad_instances = tmp_path / "bad_instances.jsonl"
    bad_instances.write_text(json.dumps({"instruction": "Say hello politely.", "instances": "hello"}) + "\n")
    with pytest.raises(DataError, match=f"{bad_instances}:1: field 'instances' must be a list"):
        generate(str(bad_instances), output, endpoint="http://127.0.0.1:1/v1", endpoint_model="m")

    corrupt_output = tmp_path / "corrupt.jsonl"
    corrupt_output.write_text('{"instruction": "A first task to do well."}\n{not json\n{"instruction": "x"}\n')
    with pytest.raises(DataError, match=f"{corrupt_output}:2: malformed JSON"):
        generate(str(seeds8), str(corrupt_output), endpoint="http://127.0.0.1:1/v1", endpoint_model="m")


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Tell a joke.", "too_short"),  # 3 words: the paper keeps more than 3
        ("Tell a joke now.", None),
        (" ".join(["word"] * 151), "too_long"),
        ("Describe the image below in detail.", "unsuitable_keyword"),
        ("Go to the website and copy its title.", "unsuitable_keyword"),
        ("Imagine a world without cars, then describe it.", None),  # "image" only as a word
        ("Write a program that sorts numbers.", "write_a_program"),
        ("- List three fruits that are red.", "starts_with_punctuation"),
        ("Ünderline the verbs in this sentence please.", "starts_non_ascii"),
    ],
)
def test_the_papers_filters(instruction: str, reason: str | None) -> None:
    assert rejection_reason(instruction) == reason


def test_pool_rejects_duplicates_and_rouge_l_at_the_threshold() -> None:
    """ "Give three tips for staying healthy." against "Give three tips for staying happy and healthy.": the longest
    common subsequence is all 6 words of the first, of 8 in the second: P = 1, R = 6/8, F1 = 2·0.75/1.75 = 6/7 =
    0.857 >= 0.7. Against "Name three birds.": LCS 1 ("three"), P = 1/3, R = 1/8, F1 = 2/11 = 0.18."""
    known, similar = "Give three tips for staying happy and healthy.", "Give three tips for staying healthy."
    different = "Name three birds."
    pool = InstructionPool(0.7)
    pool.add(known)
    assert pool.rejection_reason("give three tips for staying happy, and healthy") == "duplicate"
    assert pool.rejection_reason(similar) == "similar"
    assert pool.rejection_reason(different) is None
    assert pool.scorer.score(known, similar)["rougeL"].fmeasure == pytest.approx(6 / 7)
    assert pool.scorer.score(known, different)["rougeL"].fmeasure == pytest.approx(2 / 11)
    at_threshold = InstructionPool(pool.scorer.score(known, similar)["rougeL"].fmeasure)
    at_threshold.add(known)
    assert at_threshold.rejection_reason(similar) == "similar"  # rejected at F1 == threshold
    above = InstructionPool(0.86)
    above.add(known)
    assert above.rejection_reason(similar) is None
    pool.add(similar)
    pool.remove(similar)
    assert pool.instructions == [known] and pool.rejection_reason(different) is None


def test_parsing_replies() -> None:
    reply = (
        "Sure!\n9. write a poem about   rain.\nIt should rhyme.\nTask 10: Name a river.\n**11.** Sort the list.\n12."
    )
    assert parse_instructions(reply) == ["Write a poem about rain.", "Name a river.", "Sort the list."]
    assert parse_instructions("I cannot do that.") == []
    assert parse_instance("Input: <none>\nOutput: Paris.") == ("", "Paris.")
    assert parse_instance("Input: 2 + 2\nOutput: 4\nInput: 3 + 3\nOutput: 6") == ("2 + 2", "4")
    assert parse_instance("The answer is 4.") == ("", "The answer is 4.")
    assert parse_instance("input: N/A\noutput: Done.") == ("", "Done.")
    for reply, reason in [("Input: 2 + 2", "input_without_output"), ("Input: x\nOutput:  ", "empty_output")]:
        with pytest.raises(UnparsableInstance) as failure:
            parse_instance(reply)
        assert failure.value.reason == reason

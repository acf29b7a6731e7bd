"""``lightning-ft data generate``: Self-Instruct (Wang et al. 2022) bootstrapping of new instructions from seed tasks
with a local model or an OpenAI-compatible endpoint, written as alpaca records (``instruction``, ``input``,
``output``) that ``lightning-ft fit`` trains on.

Each round asks for new instructions with ``batch_size`` prompts, each showing a random sample of the pool (seeds and,
once there are some, kept instructions); parses the replies; filters the candidates (`self_instruct`); asks for an
example of each kept one; and appends the complete records to the output. A failed request or an unparsable reply is
counted by reason in the report, never fatal.

Resumable: records are appended (and synced) as each round ends and the report is rewritten after every round, so a
killed run keeps what it wrote. Rerun with the same arguments to continue: the pool is rebuilt from the output's
records (a half-written last line is dropped), the rounds continue where the report says they stopped, its counts
add up, and nothing already written is generated again.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lightning_ft.data.sources import DataError
from lightning_ft.errors import UsageError
from lightning_ft.model.spec import DTypeName
from lightning_ft.prep.completions import Completer, Message, check_backend, completer_from, describe
from lightning_ft.prep.records import report_path, write_report
from lightning_ft.prep.self_instruct import (
    InstructionPool,
    SeedTask,
    UnparsableInstance,
    demonstrations_for,
    instance_prompt,
    instruction_prompt,
    parse_instance,
    parse_instructions,
    prompt_examples,
    read_seed_tasks,
    rejection_reason,
)

COUNT_SECTIONS = ("requests", "candidates", "instruction_failures", "rejected", "instance_failures", "repairs")


def generate(
    seed_tasks: str,
    output: str,
    model: str | None = None,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    num_instructions: int = 100,
    examples_per_prompt: int = 8,
    generated_examples: int = 2,
    demonstrations: int = 2,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.5,
    similarity_threshold: float = 0.7,
    min_words: int = 4,
    max_words: int = 150,
    max_idle_rounds: int = 10,
    timeout: float = 60.0,
    dtype: DTypeName = "float32",
    report: str | None = None,
) -> dict[str, Any]:
    """Generate ``num_instructions`` new alpaca records from seed tasks, Self-Instruct style.

    Args:
        seed_tasks: Seed tasks: Self-Instruct's ``{instruction, instances: [{input, output}]}`` records or alpaca
            records (jsonl/json/parquet/csv or hub dataset id).
        output: The JSONL file the records are appended to; an existing one is continued.
        model: A local model (directory, export, GGUF directory or hub id); or give ``endpoint``.
        endpoint: An OpenAI-compatible API root, e.g. ``http://localhost:8000/v1``; or give ``model``.
        endpoint_model: The model name the endpoint serves.
        api_key_env: Environment variable holding the endpoint's API key.
        num_instructions: Records the output should hold in the end.
        examples_per_prompt: Instructions shown in each prompt (the paper: 8).
        generated_examples: How many of them are machine-generated, once enough are (the paper: 2).
        demonstrations: Seed tasks shown, with their example, before asking for an instruction's example.
        seed: Seeds the sampled examples and the generation.
        batch_size: Prompts for new instructions per round (generated together by a local model).
        max_new_tokens: Longest reply.
        temperature: Sampling temperature of new instructions (examples are decoded greedily, as in the paper).
        top_p: Nucleus of that sampling (the paper: 0.7 and 0.5).
        similarity_threshold: Reject an instruction whose ROUGE-L F1 to one already in the pool is at least this.
        min_words: Reject shorter instructions (the paper: more than 3 words).
        max_words: Reject longer instructions.
        max_idle_rounds: Stop after this many rounds in a row keep nothing (a model that never follows the format).
        timeout: Seconds to wait for one endpoint reply.
        dtype: The local model's weights' dtype.
        report: Where the JSON report goes (default ``<output>.report.json``); it is rewritten after every round.

    Returns:
        The report: records asked and held, candidates, rejections and failures per reason, requests, seconds.
    """
    settings = dict(locals())  # the arguments, as the report states them
    started = time.perf_counter()
    output_path = Path(output)
    if output_path.suffix.lower() != ".jsonl":
        raise UsageError(f"{output}: generate appends records as it keeps them, so the output must be a .jsonl file")
    check_backend(model, endpoint, endpoint_model)
    seeds = read_seed_tasks(seed_tasks)
    if demonstrations > 0 and not any(task.output for task in seeds):
        raise DataError(f"{seed_tasks}: no seed task has an example output to demonstrate; set demonstrations=0")
    report_file = Path(report) if report else report_path(output_path)
    records, dropped_partial = read_generated(output_path)
    run = GenerationRun.resume(report_file, output, [record["instruction"] for record in records])
    if dropped_partial:
        run.counts["repairs"]["dropped_partial_line"] += 1
    sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    completer = completer_from(
        model, endpoint, endpoint_model, api_key_env, timeout, dtype, batch_size=batch_size, **sampling
    )
    settings["backend"] = describe(completer)
    pool = InstructionPool(similarity_threshold)
    for instruction in [task.instruction for task in seeds] + run.generated:
        pool.add(instruction)
    prompting = {"examples_per_prompt": examples_per_prompt, "generated_examples": generated_examples}
    prompting |= {"demonstrations": demonstrations, "min_words": min_words, "max_words": max_words}
    idle_rounds = 0
    with tqdm(total=num_instructions, initial=len(run.generated), desc="self-instruct", unit="instruction") as bar:
        while len(run.generated) < num_instructions and idle_rounds < max_idle_rounds:
            kept = self_instruct_round(
                completer,
                random.Random(f"{seed}:{run.rounds}"),
                seed * 1_000_003 + run.rounds * 1_009,
                seeds,
                run,
                pool,
                needed=num_instructions - len(run.generated),
                prompts=batch_size,
                **prompting,
            )
            append_records(output_path, kept)
            run.generated += [record["instruction"] for record in kept]
            run.rounds += 1
            idle_rounds = 0 if kept else idle_rounds + 1
            bar.update(len(kept))
            write_report(run.report(settings, started, "running"), report_file)
    if len(run.generated) >= num_instructions:
        stopped = f"output holds {len(run.generated)} records (asked {num_instructions})"
    else:
        stopped = f"no instruction kept in {max_idle_rounds} rounds in a row"
    final = run.report(settings, started, stopped)
    write_report(final, report_file)
    return final


@dataclass
class GenerationRun:
    """What the runs writing one output have done: the instructions it holds, rounds, and counts by reason."""

    generated: list[str]
    resumed_from: int = 0
    rounds: int = 0
    runs: int = 1
    seconds_before: float = 0.0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {section: Counter() for section in COUNT_SECTIONS})

    @classmethod
    def resume(cls, report: Path, output: str, generated: list[str]) -> GenerationRun:
        """Continue the run whose report is ``report`` when ``output`` holds its records; else a fresh one."""
        state = previous_report(report, output) if generated else {}
        return cls(
            generated,
            resumed_from=len(generated),
            rounds=state.get("rounds", 0),
            runs=state.get("runs", 0) + 1,
            seconds_before=state.get("seconds", 0.0),
            counts={section: Counter(state.get(section, {})) for section in COUNT_SECTIONS},
        )

    def report(self, settings: dict[str, Any], started: float, stopped: str) -> dict[str, Any]:
        seconds = time.perf_counter() - started
        return {
            **settings,
            "held": len(self.generated),
            "kept_this_run": len(self.generated) - self.resumed_from,
            "resumed_from": self.resumed_from,
            "runs": self.runs,
            "rounds": self.rounds,
            **{section: dict(sorted(self.counts[section].items())) for section in COUNT_SECTIONS},
            "stopped": stopped,
            "seconds": round(self.seconds_before + seconds, 2),
            "seconds_this_run": round(seconds, 2),
        }


def self_instruct_round(
    completer: Completer,
    rng: random.Random,
    generation_seed: int,
    seeds: list[SeedTask],
    run: GenerationRun,
    pool: InstructionPool,
    needed: int,
    prompts: int,
    examples_per_prompt: int,
    generated_examples: int,
    demonstrations: int,
    min_words: int,
    max_words: int,
) -> list[dict[str, str]]:
    """One round: ask ``prompts`` times for new instructions, keep at most ``needed`` that pass the filters, and
    return the alpaca records of those whose example could be generated (``pool`` holds exactly those after)."""
    seed_instructions = [task.instruction for task in seeds]
    conversations = [
        instruction_prompt(
            prompt_examples(rng, seed_instructions, run.generated, examples_per_prompt, generated_examples)
        )
        for _ in range(prompts)
    ]
    candidates = new_instructions(completer, conversations, generation_seed, run.counts)
    accepted = []
    for instruction in candidates:
        if len(accepted) >= needed:
            run.counts["rejected"]["surplus"] += 1
            continue
        reason = rejection_reason(instruction, min_words, max_words) or pool.rejection_reason(instruction)
        if reason is not None:
            run.counts["rejected"][reason] += 1
            continue
        accepted.append(instruction)
        pool.add(instruction)
    run.counts["candidates"]["passed_filters"] += len(accepted)
    records = instance_records(completer, accepted, rng, seeds, demonstrations, generation_seed + 1, run.counts)
    for instruction in set(accepted) - {record["instruction"] for record in records}:
        pool.remove(instruction)
    return records


def new_instructions(
    completer: Completer, conversations: list[list[Message]], seed: int, counts: dict[str, Counter[str]]
) -> list[str]:
    """The instructions parsed from the replies to ``conversations``; failed and unparsable replies are counted."""
    counts["requests"]["instruction_prompts"] += len(conversations)
    candidates = []
    for reply in completer.complete_many(conversations, seed, progress="new instructions"):
        if reply.text is None:
            counts["instruction_failures"][str(reply.failure)] += 1
            continue
        parsed = parse_instructions(reply.text)
        if not parsed:
            counts["instruction_failures"]["unparsable_reply"] += 1
        candidates += parsed
    counts["candidates"]["parsed"] += len(candidates)
    return candidates


def instance_records(
    completer: Completer,
    instructions: list[str],
    rng: random.Random,
    seeds: list[SeedTask],
    demonstrations: int,
    seed: int,
    counts: dict[str, Counter[str]],
) -> list[dict[str, str]]:
    """An alpaca record for each instruction whose example (decoded greedily, as the paper) parses; the others
    are counted by reason."""
    if not instructions:
        return []
    prompts = [
        instance_prompt(instruction, demonstrations_for(rng, seeds, demonstrations)) for instruction in instructions
    ]
    counts["requests"]["instance_prompts"] += len(prompts)
    records = []
    replies = completer.with_sampling(temperature=0.0).complete_many(prompts, seed, progress="examples")
    for instruction, reply in zip(instructions, replies, strict=True):
        try:
            if reply.text is None:
                raise UnparsableInstance(str(reply.failure))
            task_input, task_output = parse_instance(reply.text)
        except UnparsableInstance as failure:
            counts["instance_failures"][failure.reason] += 1
            continue
        records.append({"instruction": instruction, "input": task_input, "output": task_output})
    return records


def read_generated(output: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records an earlier run wrote to ``output`` and whether a half-written last line was dropped (the file is
    cut back to its last complete line). A malformed line elsewhere raises a `DataError` naming it."""
    if not output.exists():
        return [], False
    content = output.read_bytes()
    lines = content.split(b"\n")
    records, offset, dropped = [], 0, False
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if not is_last:  # only the last line can be cut short by a killed run
                    raise DataError(
                        f"{output}:{number}: malformed JSON ({error.msg} at column {error.colno})"
                    ) from None
                with output.open("r+b") as file:
                    file.truncate(offset)
                dropped = True
                break
            if not isinstance(record, Mapping) or not isinstance(record.get("instruction"), str):
                raise DataError(f"{output}:{number}: field 'instruction' must be a string (an alpaca record)")
            records.append(dict(record))
        offset += len(line) + 1
    if not dropped and content and not content.endswith(b"\n"):
        with output.open("ab") as file:
            file.write(b"\n")
    return records, dropped


def previous_report(report: Path, output: str) -> dict[str, Any]:
    """The report of the run that wrote ``output`` (empty when ``report`` is another output's or absent)."""
    if not report.exists():
        return {}
    try:
        state = json.loads(report.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return state if isinstance(state, dict) and state.get("output") == output else {}


def append_records(output: Path, records: list[dict[str, str]]) -> None:
    """Append ``records`` as JSON lines, synced to disk before returning."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())

"""Self-Instruct's pieces (Wang et al. 2022, arXiv:2212.10560): seed tasks, the prompts that ask a model for new
instructions and for an example of each, the parsing of its replies, and the paper's filters.

Filters, as the paper's code applies them to each generated instruction: more than 3 and at most 150 words; none of
the words a text-only model cannot act on (image, picture, graph, file, map, draw, plot, go to, ...); not "Write a
program" (the model adds it to existing tasks); not starting with punctuation or a non-ASCII character; and
ROUGE-L F1 below 0.7 to every instruction already in the pool (seeds included).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_ft.data.sources import DataError
from lightning_ft.prep.completions import Message
from lightning_ft.prep.records import normalise, read_records

# The paper's list (self_instruct/bootstrap_instructions.py): tasks a text-only model cannot do.
UNSUITABLE_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps")
UNSUITABLE_WORDS += ("draw", "plot", "go to")
UNSUITABLE = re.compile(r"\b(" + "|".join(re.escape(word) for word in UNSUITABLE_WORDS) + r")\b", re.IGNORECASE)
PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
NUMBERED_LINE = re.compile(r"^\s*(?:[-*#]+\s*)?(?:\*\*)?(?:task\s*)?(\d+)\s*[.):]\s*(?:\*\*)?\s*(.*)$", re.IGNORECASE)
INPUT_LINE = re.compile(r"^\s*\**input\**\s*:\**", re.IGNORECASE | re.MULTILINE)
OUTPUT_LINE = re.compile(r"^\s*\**output\**\s*:\**", re.IGNORECASE | re.MULTILINE)
NEXT_EXAMPLE = re.compile(r"^\s*\**(?:input|task)\**\s*:", re.IGNORECASE | re.MULTILINE)
NO_INPUT = {"", "none", "no input", "noinput", "n a", "na", "empty"}
SHORT_DEMONSTRATION_CHARS = 400


@dataclass(frozen=True)
class SeedTask:
    """A task: its instruction and one example (input may be empty; output empty when the seed has none)."""

    instruction: str
    input: str = ""
    output: str = ""


def read_seed_tasks(path: str) -> list[SeedTask]:
    """Seed tasks from ``path``: Self-Instruct's ``{instruction, instances: [{input, output}]}`` records or alpaca
    records (``instruction``, ``input``, ``output``); a bad record raises a `DataError` naming its line and field."""
    file = read_records(path, any_shape=True)
    tasks = [_seed_task(record, file.where(index)) for index, record in enumerate(file.records)]
    return tasks


def _seed_task(record: Mapping[str, Any], where: str) -> SeedTask:
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(f"{where}: field 'instruction' must be a non-empty string, got {instruction!r}")
    instances = record.get("instances")
    if instances is None:
        return SeedTask(instruction.strip(), _text(record, "input", where), _text(record, "output", where))
    if not isinstance(instances, list) or not all(isinstance(instance, Mapping) for instance in instances):
        raise DataError(f"{where}: field 'instances' must be a list of {{input, output}} objects")
    if not instances:
        return SeedTask(instruction.strip())
    first = instances[0]
    return SeedTask(instruction.strip(), _text(first, "input", where), _text(first, "output", where))


def _text(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return (value or "").strip()


def instruction_prompt(examples: Sequence[str]) -> list[Message]:
    """Ask for new instructions after a numbered list of ``examples`` (the paper's "Come up with a series of tasks"
    prompt, as a chat turn asking the list to go on)."""
    listing = "\n".join(f"{number}. {' '.join(text.split())}" for number, text in enumerate(examples, start=1))
    content = (
        f"Come up with a series of new, diverse tasks. Here are {len(examples)} examples:\n\n{listing}\n\n"
        f"Write more tasks like these but different from them, as a numbered list continuing from "
        f"{len(examples) + 1}, one task per line, without answers."
    )
    return [{"role": "user", "content": content}]


def parse_instructions(reply: str) -> list[str]:
    """The instructions of a numbered list (``9. ...``, ``Task 9: ...``, ``**9.** ...``): the first line of each item,
    whitespace collapsed and the first letter capitalised; text outside numbered lines is dropped."""
    instructions = []
    for line in reply.splitlines():
        match = NUMBERED_LINE.match(line)
        if match is None:
            continue
        text = " ".join(match.group(2).split())
        if text:
            instructions.append(text[0].upper() + text[1:])
    return instructions


def rejection_reason(instruction: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """Why the paper's filters reject ``instruction``, or ``None`` when it passes them (similarity is the pool's)."""
    count = len(instruction.split())
    if count < min_words:
        return "too_short"
    if count > max_words:
        return "too_long"
    if UNSUITABLE.search(instruction):
        return "unsuitable_keyword"
    if instruction.lower().startswith("write a program"):
        return "write_a_program"
    if instruction[0] in PUNCTUATION:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "starts_non_ascii"
    return None


class InstructionPool:
    """The instructions so far (seeds and kept ones); a new one must not duplicate any (compared `normalise`-d) and
    must stay below ``threshold`` ROUGE-L F1 to each (the `rouge-score` package's scorer, no stemming, as the
    paper). Checking is linear in the pool's size.

    Args:
        threshold: Reject at ROUGE-L F1 >= threshold.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        from rouge_score import rouge_scorer

        self.threshold = threshold
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.instructions: list[str] = []
        self.normalised: set[str] = set()

    def rejection_reason(self, instruction: str) -> str | None:
        """``duplicate``, ``similar`` or ``None`` (a new instruction)."""
        if normalise(instruction) in self.normalised:
            return "duplicate"
        for known in self.instructions:
            if self.scorer.score(known, instruction)["rougeL"].fmeasure >= self.threshold:
                return "similar"
        return None

    def add(self, instruction: str) -> None:
        self.instructions.append(instruction)
        self.normalised.add(normalise(instruction))

    def remove(self, instruction: str) -> None:
        self.instructions.remove(instruction)
        self.normalised = {normalise(known) for known in self.instructions}

    def __len__(self) -> int:
        return len(self.instructions)


def prompt_examples(
    rng: random.Random, seeds: Sequence[str], generated: Sequence[str], count: int, generated_count: int
) -> list[str]:
    """``count`` instructions to show: ``generated_count`` machine-generated ones once there are that many (the
    paper shows 2 of 8), the rest seeds, in random order."""
    from_generated = min(generated_count, len(generated), count)
    examples = rng.sample(list(seeds), min(count - from_generated, len(seeds)))
    examples += rng.sample(list(generated), from_generated)
    rng.shuffle(examples)
    return examples


INSTANCE_REQUEST = (
    "Write an example input for the task below and the correct output for it, as 'Input: ...' and 'Output: ...'. "
    "If the task needs no input, write 'Input: <none>'.\n\nTask: {instruction}"
)


def instance_prompt(instruction: str, demonstrations: Sequence[SeedTask]) -> list[Message]:
    """Ask for an example (input and output) of ``instruction``, after ``demonstrations`` as earlier chat turns.

    The paper generates inputs first, then outputs, for every task but classification ones; this asks for both in
    one reply, input first, for every task."""
    messages: list[Message] = []
    for task in demonstrations:
        messages.append({"role": "user", "content": INSTANCE_REQUEST.format(instruction=task.instruction)})
        messages.append({"role": "assistant", "content": f"Input: {task.input or '<none>'}\nOutput: {task.output}"})
    messages.append({"role": "user", "content": INSTANCE_REQUEST.format(instruction=instruction)})
    return messages


def demonstrations_for(rng: random.Random, seeds: Sequence[SeedTask], count: int) -> list[SeedTask]:
    """``count`` seed examples to show, short ones when there are enough (they keep prompts short)."""
    with_output = [task for task in seeds if task.output]
    short = [task for task in with_output if len(task.input) + len(task.output) <= SHORT_DEMONSTRATION_CHARS]
    choices = short if len(short) >= count else with_output
    return rng.sample(choices, min(count, len(choices)))


class UnparsableInstance(ValueError):
    """A reply that holds no usable example; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_instance(reply: str) -> tuple[str, str]:
    """``(input, output)`` from ``Input: ...`` / ``Output: ...``; a reply with neither label is the output of a task
    without input; anything after a second ``Input:`` or ``Task:`` line (a further example) is dropped.

    Raises:
        UnparsableInstance: ``input_without_output`` or ``empty_output``.
    """
    output_match = OUTPUT_LINE.search(reply)
    input_match = INPUT_LINE.search(reply)
    if output_match is None:
        if input_match is not None:
            raise UnparsableInstance("input_without_output")
        return "", _non_empty_output(reply)
    task_input = ""
    if input_match is not None and input_match.start() < output_match.start():
        task_input = reply[input_match.end() : output_match.start()].strip()
    output = reply[output_match.end() :]
    further = NEXT_EXAMPLE.search(output)
    if further is not None:
        output = output[: further.start()]
    if normalise(task_input).replace("<", "").replace(">", "").strip() in NO_INPUT:
        task_input = ""
    return task_input, _non_empty_output(output)


def _non_empty_output(text: str) -> str:
    if not text.strip():
        raise UnparsableInstance("empty_output")
    return text.strip()

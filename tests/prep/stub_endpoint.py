"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1 for the data tools: new instructions from a fixed list,
examples, translations, and scripted failures, bounded in requests."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.chat_stub import ChatStubHandler, ChatStubServer, serving

# Distinct tasks (pairwise ROUGE-L well below 0.7, and to the seed tasks), with rejects at fixed places.
TASKS = [
    "Suggest three names for a bakery that sells only sourdough bread.",
    "Draw a picture of your favourite animal.",  # rejected: unsuitable keyword
    "Explain why the sky looks blue during the day.",
    "Convert this temperature from Celsius to Fahrenheit.",
    "What is the relation between the given pairs?",  # rejected: duplicate of seed task 1
    "List five tips for staying focused while studying.",
    "Rewrite the sentence in the passive voice.",
    "Summarize.",  # rejected: too short
    "Classify the review as positive or negative.",
    "Give a recipe for a vegan chocolate cake.",
    "Translate the greeting into Spanish.",
    "Estimate how many hours a marathon runner trains weekly.",
    "Name the planets of the solar system in order from the sun.",
    "Count the vowels in the following word.",
    "Describe the water cycle to a ten year old.",
    "Propose a slogan for a bicycle repair shop.",
]
GARBAGE = "Input: ???"  # neither a numbered list nor an example with an output


class EndpointHandler(ChatStubHandler):
    """``POST /v1/chat/completions``. Request number ``n`` (from 1) behaves as ``server.script.get(n, "ok")``: ``ok``
    answers the prompt (instruction lists, examples, translations), ``garbage`` sends `GARBAGE`, ``error`` HTTP 500,
    ``slow`` answers after the client's timeout. Past ``max_requests`` it refuses with 429."""

    server: EndpointStub

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            number = len(self.server.requests)
        behaviour = self.server.script.get(number, "ok")
        if number > self.server.max_requests:
            return self.reply(429, {"error": {"message": "too many requests"}})
        if behaviour == "error":
            return self.reply(500, {"error": {"message": "stub failure", "type": "server_error"}})
        if behaviour == "slow":
            self.server.release.wait(timeout=self.server.slow_seconds)
        content = GARBAGE if behaviour == "garbage" else self.server.answer(body["messages"][-1]["content"])
        self.complete(content, body["model"])


class EndpointStub(ChatStubServer):
    def __init__(self, tasks_per_reply: int = 3) -> None:
        super().__init__(EndpointHandler)
        self.script: dict[int, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.max_requests = 200
        self.tasks_per_reply = tasks_per_reply
        self.next_task = 0
        self.lock = threading.Lock()
        self.slow_seconds = 1.0

    def answer(self, prompt: str) -> str:
        """New tasks for an instruction prompt (the next ones of `TASKS`, numbered as asked), an example for an
        example prompt, ``[<language>] text`` for "Translate to <language>...\\n\\ntext"."""
        if prompt.startswith("Come up with"):
            start = int(re.search(r"continuing from (\d+)", prompt).group(1))
            with self.lock:
                chosen = TASKS[self.next_task : self.next_task + self.tasks_per_reply]
                self.next_task += len(chosen)
            return "\n".join(f"{start + offset}. {task}" for offset, task in enumerate(chosen))
        if prompt.startswith("Translate to"):
            language, text = re.match(r"Translate to (\w+)[^\n]*\n\n(.*)", prompt, re.DOTALL).groups()
            return f"[{language}] {text}"
        task = prompt.rsplit("Task: ", 1)[-1]
        return f"Input: <none>\nOutput: An answer to: {task}"


@contextmanager
def running_stub(tasks_per_reply: int = 3) -> Iterator[EndpointStub]:
    with serving(EndpointStub(tasks_per_reply)) as server:
        yield server

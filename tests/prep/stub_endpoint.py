"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1 for the data tools: new instructions from a fixed list,
examples, translations, and scripted failures, bounded in requests."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class EndpointHandler(BaseHTTPRequestHandler):
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
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
        response = {"id": "stub", "object": "chat.completion", "created": 0, "model": body["model"]}
        self.reply(200, {**response, "choices": [choice], "usage": usage})

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EndpointStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tasks_per_reply: int = 3) -> None:
        super().__init__(("127.0.0.1", 0), EndpointHandler)
        self.script: dict[int, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.max_requests = 200
        self.tasks_per_reply = tasks_per_reply
        self.next_task = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.slow_seconds = 1.0

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closed the socket a slow reply writes to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

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
    server = EndpointStub(tasks_per_reply)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

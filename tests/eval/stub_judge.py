"""A stub OpenAI-compatible judge endpoint on 127.0.0.1: scripted verdicts, failures and delays, bounded in requests."""

from __future__ import annotations

import json
from typing import Any

from tests.chat_stub import ChatStubHandler, ChatStubServer

VERDICT = '{"reasoning": "Correct and clear.", "score": 8}'


class StubHandler(ChatStubHandler):
    """``POST /v1/chat/completions`` answering per the server's ``mode``: ``verdict``, ``garbage``, ``error`` (HTTP
    500), ``slow`` (after the client's timeout) or ``first_wins`` (a score of 8 to grading, "1" to comparisons: a
    judge with total position bias); refuses (429) past ``max_requests``."""

    server: StubServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "authorization": self.headers["Authorization"], **body})
        if self.path != "/v1/chat/completions" or len(self.server.requests) > self.server.max_requests:
            return self.reply(404 if self.path != "/v1/chat/completions" else 429, {"error": {"message": "no"}})
        if self.server.mode == "error":
            return self.reply(500, {"error": {"message": "stub failure", "type": "server_error"}})
        if self.server.mode == "slow":
            self.server.release.wait(timeout=5)
        content = VERDICT if self.server.mode == "verdict" else "The reply seems fine to me."
        if self.server.mode == "first_wins":
            comparing = "Assistant 1" in body["messages"][-1]["content"]
            content = '{"reasoning": "The first.", "winner": "1"}' if comparing else VERDICT
        self.complete(content, body["model"])


class StubServer(ChatStubServer):
    def __init__(self) -> None:
        super().__init__(StubHandler)
        self.mode = "verdict"
        self.requests: list[dict[str, Any]] = []
        self.max_requests = 20

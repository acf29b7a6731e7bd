"""What the test stubs of OpenAI-compatible chat endpoints share: a threaded server on 127.0.0.1 (a free port),
JSON replies in the chat-completion shape, and a context that starts and always stops it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatStubHandler(BaseHTTPRequestHandler):
    """Replies of a chat-completions endpoint; subclasses decide what to answer in ``do_POST``."""

    def complete(self, content: str, model: str) -> None:
        """HTTP 200 with one assistant ``content`` as ``model``'s chat completion."""
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
        response = {"id": "stub", "object": "chat.completion", "created": 0, "model": model}
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


class ChatStubServer(ThreadingHTTPServer):
    """Bound to 127.0.0.1 on a free port; ``release`` ends the waits of scripted slow replies."""

    daemon_threads = True

    def __init__(self, handler: type[ChatStubHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closed the socket a slow reply writes to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextmanager
def serving(server: ChatStubServer) -> Iterator[ChatStubServer]:
    """Serve in a thread for the block; afterwards release slow replies, stop and close, whatever happened."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

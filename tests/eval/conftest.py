"""Fixtures of the evaluation tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.eval.stub_judge import StubServer


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)

"""Fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat_stub import serving
from tests.eval.stub_judge import StubServer


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    with serving(StubServer()) as server:
        yield server

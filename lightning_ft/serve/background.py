"""Run the server in a child process for the length of a ``with`` block (tests, benchmarks, scripts): on a free port
of 127.0.0.1, ready when the block starts, and stopped with every process it started when the block ends."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from lightning_ft.serve.server import ServeConfig, run_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(config: ServeConfig, startup_timeout: float = 300.0) -> Iterator[str]:
    """Start the server of ``config`` (``port`` 0: a free one) and yield its base URL (``http://HOST:PORT/v1``).

    The server runs in its own process group; on exit it gets SIGINT (LitServe's graceful shutdown), then whatever
    of the group is left gets SIGKILL, so no worker outlives the block.
    """
    config = replace(config, port=config.port or free_port())
    process = multiprocessing.get_context("spawn").Process(target=_serve_in_own_group, args=(config,))
    process.start()
    try:
        _wait_until_ready(config, process, startup_timeout)
        yield f"http://{config.host}:{config.port}/v1"
    finally:
        _stop(process)


def _serve_in_own_group(config: ServeConfig) -> None:
    os.setpgrp()
    run_server(config)


def _wait_until_ready(config: ServeConfig, process: multiprocessing.process.BaseProcess, timeout: float) -> None:
    request = urllib.request.Request(f"http://{config.host}:{config.port}/health")
    if config.api_key:
        request.add_header("Authorization", f"Bearer {config.api_key}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"The server exited with code {process.exitcode} before it was ready")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"The server was not ready within {timeout} s")


def _stop(process: multiprocessing.process.BaseProcess, grace: float = 30.0) -> None:
    if process.pid is None:
        return
    if process.is_alive():
        os.kill(process.pid, signal.SIGINT)
        process.join(grace)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, or the server itself if it did not stop
    except (ProcessLookupError, PermissionError):
        pass
    process.join(5)

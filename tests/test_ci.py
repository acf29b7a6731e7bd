"""What CI relies on in tests/conftest.py: `on_ci` reads CI=false as not CI; `require` (and `shared_data`) skip a
missing prerequisite outside CI and fail under it; `pytest -m gpu` without CUDA stops with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, on_ci, require, selects_marker, shared_data


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("TRUE", True), ("false", False), ("False", False), ("0", False)]
    + [("", False), ("no", False), ("off", False), (None, False)],
)
def test_on_ci(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert on_ci() is expected


def test_require_returns_the_module(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("json", "the standard library") is __import__("json")


@pytest.mark.parametrize("ci", ["false", "0", ""])
def test_a_missing_dependency_skips_outside_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="cannot import no_such_module_xyz.*a reason"):
        require("no_such_module_xyz", "a reason")
    with pytest.raises(pytest.skip.Exception, match="is absent"):
        shared_data("no/such/file.jsonl")


def test_a_missing_dependency_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have every test prerequisite: cannot import no_such"):
        require("no_such_module_xyz", "a reason")
    with pytest.raises(pytest.fail.Exception, match="CI must have every test prerequisite: .*is absent"):
        shared_data("no/such/file.jsonl")


@pytest.mark.parametrize(
    ("markexpr", "selected"),
    [("gpu", True), ("gpu and not slow", True), ("gpu or slow", True), ("(gpu)", True)]
    + [("", False), ("not gpu", False), ("slow", False), ("not slow", False), ("slow or not gpu", False)],
)
def test_which_marker_expressions_select_the_gpu_tests(markexpr, selected):
    assert selects_marker(markexpr, "gpu") is selected


def pytest_run(*args: str) -> subprocess.CompletedProcess:
    """pytest in a child process that sees no CUDA device."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)


def test_pytest_m_gpu_without_cuda_stops_with_one_line():
    result = pytest_run("-m", "gpu", "tests/gpu")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR")]
    assert errors == [
        f"ERROR: -m 'gpu' selects the GPU tests, but torch {torch.__version__} sees no CUDA device: run them on a GPU "
        "machine (plain `pytest` skips them on CPU)"
    ]


def test_plain_pytest_still_skips_the_gpu_tests_on_cpu():
    result = pytest_run("tests/gpu/test_cuda.py")
    assert result.returncode == pytest.ExitCode.OK, result.stdout[-2000:] + result.stderr[-2000:]
    assert "needs a CUDA device" in result.stdout and "passed" not in result.stdout

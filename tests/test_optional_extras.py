"""The base install (no extras) runs every command that needs none; `serve` and `merge` without their extra stop
with the command that installs it. One process with the extras' packages made unimportable runs the commands."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

RUN_WITHOUT_EXTRAS = """
import contextlib, importlib.abc, io, json, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"litserve", "mergekit"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from lightning_ft.cli import main
outcomes = []
for command in json.loads(sys.argv[1]):
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            main(command)
        outcomes.append([0, printed.getvalue()])
    except SystemExit as stop:
        outcomes.append([stop.code if isinstance(stop.code, int) else str(stop.code), printed.getvalue()])
print(json.dumps(outcomes))
"""


def test_serve_and_merge_name_their_extra_and_other_commands_run_without_it() -> None:
    commands = [["chat", "--help"], ["serve", "--model", "some/model"], ["merge", "merge.yaml", "out"]]
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_EXTRAS, json.dumps(commands)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (chat, serve, merge) = json.loads(result.stdout.strip().splitlines()[-1])
    assert chat[0] == 0 and "--max_new_tokens" in chat[1]
    for (code, _), extra, package in ((serve, "serve", "litserve"), (merge, "merge", "mergekit")):
        assert code == (
            f"lightning-ft {extra} needs the `{extra}` extra ({package} is not installed): "
            f'pip install "lightning-ft[{extra}]"'
        )

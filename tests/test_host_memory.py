"""`fix_mmap_threshold`: after it, a tensor of a few MiB gets its own mapping even after a larger one was freed
(glibc would otherwise have raised its threshold above it and served it from the heap, where freed memory stays)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from lightning_ft.host_memory import THRESHOLD_ENVIRONMENT, fix_mmap_threshold

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")

MAPPED_GROWTH = """
import ctypes, sys, torch
from lightning_ft.host_memory import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
large = torch.ones(16 << 20, dtype=torch.uint8)
del large  # freeing a 16 MiB mapping raises glibc's threshold to 16 MiB
before = libc.mallinfo2().hblkhd
kept = torch.ones(4 << 20, dtype=torch.uint8)
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_growth(mode: str) -> int:
    """Bytes of mapped blocks a 4 MiB tensor adds after a 16 MiB one was freed, in a fresh process."""
    run = subprocess.run([sys.executable, "-c", MAPPED_GROWTH, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


def test_a_few_mib_get_their_own_mapping_once_the_threshold_is_fixed():
    assert mapped_growth("default") == 0  # served from the heap
    assert mapped_growth("fixed") >= 4 << 20


def test_a_users_own_threshold_is_left_alone(monkeypatch):
    monkeypatch.setenv(THRESHOLD_ENVIRONMENT, "65536")
    assert fix_mmap_threshold() is False

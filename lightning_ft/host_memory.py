"""Give freed tensor memory back to the system while training on the CPU.

A training step on the CPU allocates and frees activations of a few MiB thousands of times. glibc's malloc serves an
allocation above its mmap threshold with its own mapping, returned to the system when freed, but it raises that
threshold to the size of every such block freed (up to 32 MiB). After the first steps, the activations come from the
heap instead, where freed blocks stay resident and fragment. Fixing the threshold stops the raising: a DPO step on
SmolLM2-135M peaks at 2.6 GB resident instead of 6.9 GB (`tools/bench/dpo_throughput.py`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
THRESHOLD_ENVIRONMENT = "MALLOC_MMAP_THRESHOLD_"  # glibc's own variable: a user's setting is left alone
DEFAULT_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of at least ``threshold_bytes`` from its own mapping, released when freed.

    Returns whether the threshold was set: not where the C library is not glibc, nor where the user set
    ``MALLOC_MMAP_THRESHOLD_`` (their choice stands).
    """
    if THRESHOLD_ENVIRONMENT in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))

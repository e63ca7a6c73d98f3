"""Keep freed host memory in the process, so XLA:CPU reuses warm pages step after step.

XLA:CPU allocates each execution's temporaries (hundreds of MB in a train step) with malloc and
frees them afterwards. glibc hands blocks that large straight back to the kernel (mmap/munmap,
and per-thread arenas that are unmapped when empty), so the next step touches fresh pages and
the kernel zeroes every one: ~100,000 page faults per ConvNet step at batch 128 on this
project's 2-core CPU before the kernel gradients were chunked (a quarter of the step), ~48,000
after (scripts/bench_train_parts.py). `keep_freed_memory` tells glibc to serve large
blocks from one heap it never trims; the process then holds its peak memory until it exits,
which for a training or attack job is what it needs anyway.

Call it before JAX runs anything (XLA's threads pick their malloc arena on first use): the
`jaxrobust` CLI and the benchmark scripts do. JAXROBUST_KEEP_FREED_MEMORY=0 turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, glibc malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory; True if it took effect (Linux with glibc).

    Idempotent; a no-op (False) elsewhere or with JAXROBUST_KEEP_FREED_MEMORY=0.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("JAXROBUST_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # musl: leave it
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0),  # large blocks from the heap, never mmap (freed = unmapped)
                (_M_TRIM_THRESHOLD, 2**31 - 1),  # never give the top of the heap back
                (_M_TOP_PAD, 64 << 20),  # grow the heap in 64 MiB steps
                (_M_ARENA_MAX, 1))  # one heap: per-thread arenas are unmapped when they empty
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied

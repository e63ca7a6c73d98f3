"""Tests of jaxrobust.hostmem: with freed memory kept, reallocating a large buffer touches warm
pages (no page faults); without, every reallocation faults its pages in again."""
import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource
from jaxrobust import hostmem
print(hostmem.keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):  # malloc as XLA:CPU does (NumPy asks for huge pages, which hides the cost)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)  # touch every page
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _probe(env_value: str) -> tuple[str, int]:
    import os

    env = dict(os.environ, JAXROBUST_KEEP_FREED_MEMORY=env_value)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_kept_memory_is_reused_without_page_faults():
    applied, kept_faults = _probe("1")
    off, default_faults = _probe("0")
    assert applied == "True" and off == "False"
    pages = 3 * (64 << 20) // 4096  # three reallocations of 64 MiB in 4 KiB pages
    assert default_faults > 0.5 * pages  # glibc maps each one anew
    assert kept_faults < 0.05 * pages


def test_idempotent():
    from jaxrobust import hostmem

    first = hostmem.keep_freed_memory()
    assert hostmem.keep_freed_memory() is first

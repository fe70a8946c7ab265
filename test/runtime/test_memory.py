"""The C allocator's mmap threshold, set on purpose in the mapping node: a threshold fixed
low (the node's entry point fixed it at 128 kB until the twentieth session) makes every
large tensor a fresh, zero-filled mapping (the node's training thread spent half its time
in the kernel); set, large blocks are reused."""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from panoptic_mapping.runtime.memory import set_mmap_threshold

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                           reason="mallopt thresholds are glibc's")

# In a child process (the test process's allocator is left alone): the threshold fixed at
# 128 kB, as the node's entry point did; page faults per 2 MB block allocated, written and
# freed, before and after set_mmap_threshold(4).
_PROBE = textwrap.dedent("""
    import ctypes, resource, numpy as np
    from panoptic_mapping.runtime.memory import set_mmap_threshold
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)

    def faults_per_block(n=50):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            a = np.empty(1 << 19, np.float32)  # 2 MB
            a.fill(1.0)
            del a
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

    fixed = faults_per_block()
    print(set_mmap_threshold(4.0))
    faults_per_block(5)
    print(fixed, faults_per_block())
""")


@glibc
def test_large_blocks_come_from_the_heap_once_the_threshold_is_set():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    assert out[0] == "None"  # applied
    fixed, after = (float(x) for x in out[1].split())
    assert fixed >= 400  # a fresh mapping each: 512 pages of 4 kB touched
    assert after < fixed / 20


def test_zero_leaves_the_allocator_as_it_is():
    assert set_mmap_threshold(0) == "left as it is (0)"

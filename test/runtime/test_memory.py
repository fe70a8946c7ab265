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


@glibc
def test_trimming_the_heap_gives_free_pages_back():
    """Blocks freed inside the heap stay resident until trimmed: after 200 MB of 1 MB
    blocks are freed in a child process (threshold 4 MB: they came from the heap), the
    resident memory falls once trim_heap runs."""
    probe = textwrap.dedent("""
        import numpy as np
        from panoptic_mapping.runtime.memory import set_mmap_threshold, trim_heap
        from panoptic_mapping.runtime.workers import process_memory_mb
        set_mmap_threshold(4.0)
        blocks = [np.ones(1 << 18, np.float32) for _ in range(200)]  # 200 x 1 MB
        keep = blocks[-1]
        del blocks[:-1]
        before = process_memory_mb()
        print(trim_heap(), before, process_memory_mb())
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    released, before, after = out[0] == "True", float(out[1]), float(out[2])
    assert released and after < before - 100, out

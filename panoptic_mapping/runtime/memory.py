"""The C allocator's treatment of large blocks, set on purpose in the mapping node.

glibc serves blocks above its mmap threshold with a fresh ``mmap`` and returns them with
``munmap`` on free; every new mapping is then zero-filled page by page by the kernel. The
threshold normally rises by itself to the largest block freed (up to 32 MB on 64-bit), so a
loop allocating the same large tensors again and again soon gets them from the heap; a
``mallopt`` call turns that rise off. The mapping node's entry point made one since its
first build (a fixed 128 kB, meant to keep image buffers out of the threads' heaps under a
flood of frames, never measured): the node's training thread made ~1400 ``mmap``/``munmap``
pairs a second, spent half its time in the kernel and trained 5.5 steps/s against 12 for
the same map in a plain process. That call is gone; the node sets this instead: 4 MB
(the tensors of a training step reach tens of MB) gave 11.5 steps/s against 12.0 with
32 MB in a plain process. The heaps then keep freed image buffers as holes, so the node
also trims them (:func:`trim_heap`) before each status report: `make demo` ended at 997 MB
resident (1192 without trimming, 1009 with the old 128 kB threshold).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["set_mmap_threshold", "trim_heap"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=1)
def _libc() -> tuple[ctypes.CDLL | None, str | None]:
    """(the C library, its name), looked up once: ``find_library`` runs ``ldconfig`` in a
    subprocess, and :func:`trim_heap` runs at every status report. (None, name) when it
    cannot be loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name), name
    except (OSError, TypeError):
        return None, name


def set_mmap_threshold(threshold_mb: float) -> str | None:
    """Serve blocks up to ``threshold_mb`` from the heap and keep up to twice that free at
    its top (glibc's own choice once its threshold has risen there), and let at most two
    arenas hold the threads' blocks (fewer half-empty arenas: the node's peak RSS with a
    32 MB threshold was 1533 MB with two, 1632 MB without). Returns None when set, else why
    not (not glibc, or glibc refused the value); 0 leaves the allocator as it is."""
    if threshold_mb <= 0:
        return "left as it is (0)"
    libc, name = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return f"no mallopt in the C library ({name}): not glibc"
    size = int(threshold_mb * (1 << 20))
    if mallopt(_M_MMAP_THRESHOLD, size) != 1:
        return f"glibc refused an mmap threshold of {threshold_mb:g} MB"
    mallopt(_M_TRIM_THRESHOLD, 2 * size)
    mallopt(_M_ARENA_MAX, 2)
    return None


def trim_heap() -> bool:
    """Give the free pages inside the allocator's heaps back to the system
    (``malloc_trim(0)``): with blocks up to the mmap threshold served from the heaps, image
    buffers freed between others leave holes that only trimming returns (in the loopback
    flood test RSS rose 931 -> 975 -> 1008 MB over three rounds without it). Returns
    whether anything was released; False where it does not apply (not glibc)."""
    trim = getattr(_libc()[0], "malloc_trim", None)
    return trim is not None and bool(trim(0))

"""File modes of what the map writes.

Atomic writes go through :func:`tempfile.mkstemp`, whose files are private (0600) whatever
the process umask says; a map another user's process (a manipulation stack, a viewer)
should read would then be unreadable. :func:`apply_umask` gives the temp file the mode an
``open()`` would have given it before it is renamed into place.
"""
from __future__ import annotations

import os
import threading

__all__ = ["process_umask", "apply_umask"]

_lock = threading.Lock()


def process_umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc``),
    else by setting and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(fd: int) -> None:
    """Give an open file the mode 0666 & ~umask (what ``open(path, 'w')`` creates)."""
    os.fchmod(fd, 0o666 & ~process_umask())

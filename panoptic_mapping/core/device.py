"""Which torch device a component runs on: one rule for the mapper and the front-ends;
and how numpy arrays get there."""
from __future__ import annotations

import re

import numpy as np
import torch

__all__ = ["resolve_device", "check_device_name", "numpy_tensor", "DEVICE_FORMS"]

DEVICE_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """``device`` if it is one of :data:`DEVICE_FORMS`; ValueError naming them otherwise
    (a configuration check: whether the GPU exists is decided where it is used)."""
    if not _DEVICE.match(str(device)):
        raise ValueError(f"device '{device}' is not one of {DEVICE_FORMS}")
    return str(device)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the GPU when one is present, else the CPU; a CUDA device that is not
    there raises RuntimeError naming what is."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(check_device_name(str(device)))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' requested but no CUDA GPU is available "
                               "(use 'auto' or 'cpu')")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise RuntimeError(f"device '{device}' requested but this machine has {n} CUDA "
                               f"device(s): cuda:0..cuda:{n - 1}")
    return dev


def numpy_tensor(a, dtype: type | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """``a`` as a tensor (of numpy ``dtype`` when given) on ``device``, sharing the array's
    memory where torch can. A read-only array (a recording's frame, a memory-mapped file)
    is copied first: torch shares numpy memory and warns that it cannot protect it."""
    a = np.asarray(a, dtype=dtype)
    return torch.as_tensor(a if a.flags.writeable else a.copy(), device=device)

"""Small conversions shared by the field's modules: numpy or torch in, torch (or numpy) out."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "float_dtype", "to_numpy"]


def as_tensor(x: Any, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a tensor on ``device`` (default: where it is) with ``dtype``."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device,
                    dtype=dtype if dtype is not None else x.dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

"""Which torch device a component runs on: one rule for the mapper and the front-ends."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the GPU when one is present, else the CPU; 'cuda' without a GPU raises."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but no CUDA GPU is available")
    return dev

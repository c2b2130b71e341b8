"""Runtime choices shared by every module: device, smoke mode, CPU thread behaviour."""

from __future__ import annotations

import os

import torch

from .errors import UsageError


def smoke_mode() -> bool:
    """True when `LDM_LITE_SMOKE=1`: notebooks and scripts shrink sizes and steps (used by the tests)."""
    return os.environ.get("LDM_LITE_SMOKE", "0").lower() not in ("", "0", "false", "no")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`"auto"` picks CUDA, then Apple's MPS, then the CPU; anything else is passed to `torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"unknown device {device!r} ({e}); use auto, cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} was asked for but this machine has no usable CUDA GPU; use "
                         "device='auto' (picks the GPU when there is one) or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError(f"device {device!r} was asked for but Apple's MPS is not available here; use 'auto' or 'cpu'")
    return dev


def on_gpu(device: torch.device) -> bool:
    return device.type in ("cuda", "mps")

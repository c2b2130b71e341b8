"""The checks every public entry point runs on its arguments before any work (one boundary, `ldm_lite.errors`).

Each check takes the argument's name and value, returns the value in the form the library uses (an int, a float,
a float tensor, a list of strings, a torch.Generator) and raises `UsageError` / `UsageTypeError` /
`NonFiniteError` with a message that names the argument, what it got and what it expects.

Conventions chosen here (documented in docs/bad_inputs.md):
- images are float tensors (B, C, H, W) in [-1, 1]; values up to 1e-3 outside are clamped (rounding of a
  conversion), further out is an error that says how to convert (above 1.5: "looks like 0..255"). A uint8 image
  is an error with the conversion, never converted silently.
- class labels are integers 0..K-1 (whole-number floats are accepted, fractional ones are an error); ∅ is never a
  label value: it is `guidance_scale=0` or `conditioner.null(B)`.
- `generator`: a `torch.Generator`, None, or an int, which is a seed: `generator=42` means
  `torch.Generator().manual_seed(42)` (a CPU generator, so one seed gives the same samples on every device).
- step counts are ints (10.5 steps is an error, not 11 steps); bools are not numbers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import NonFiniteError, UsageError, UsageTypeError

IMAGE_TOLERANCE = 1e-3  # images may exceed [-1, 1] by this much (rounding); they are clamped


def describe(value: Any) -> str:
    """A short description of what the caller passed, for error messages."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """An int (numpy ints too; not a bool, not a float: `steps=10.5` is refused) within [min, max]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            raise UsageTypeError(f"{name} must be an int, got {value!r}; use {name}={int(value)}")
        raise UsageTypeError(f"{name} must be an int, got {describe(value)}")
    value = int(value)
    _check_range(name, value, min, max)
    return value


def check_number(name: str, value: Any, *, min: float | None = None, max: float | None = None,
                 above: float | None = None) -> float:
    """A finite real number (int or float, not a bool) within [min, max] and > `above`."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageTypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteError(f"{name} must be a finite number, got {value}")
    _check_range(name, value, min, max)
    if above is not None and not value > above:
        raise UsageError(f"{name} must be > {above:g}, got {value:g}")
    return value


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        want = (f"lie in [{lo:g}, {hi:g}]" if lo is not None and hi is not None
                else f"be >= {lo:g}" if lo is not None else f"be <= {hi:g}")
        raise UsageError(f"{name} must {want}, got {value:g}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if not isinstance(value, str | int | type(None)) or value not in choices:
        raise UsageError(f"unknown {name} {value!r}; known: {sorted(choices, key=str)}")
    return value


def check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise UsageTypeError(f"{name} must be a function (or None), got {describe(value)}")
    return value


def check_generator(name: str, value: Any) -> torch.Generator | None:
    """None, a torch.Generator, or an int seed (-> a CPU generator seeded with it; see the module doc)."""
    if value is None or isinstance(value, torch.Generator):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"{name}={value} is a negative seed; use a seed >= 0 or a torch.Generator")
        return torch.Generator().manual_seed(int(value))
    raise UsageTypeError(f"{name} must be a torch.Generator, an int seed or None, got {describe(value)}; e.g. "
                         f"{name}=torch.Generator().manual_seed(0) or {name}=0")


def as_tensor(name: str, value: Any) -> Tensor:
    """A tensor from a tensor, a numpy array or a (nested) list of numbers; a TypeError for anything else."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray | list | tuple | numbers.Number) and not isinstance(value, bool | str):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            pass
    raise UsageTypeError(f"{name} must be a tensor (or array / list of numbers), got {describe(value)}")


def check_finite(name: str, x: Tensor) -> Tensor:
    """Refuse NaN/inf (one host sync; call it once at a boundary, not inside a loop on a GPU)."""
    if x.is_floating_point() or x.is_complex():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            raise NonFiniteError(f"{name} holds {n_nan} NaN and {n_inf} inf value(s) (of {x.numel()}); "
                                 "pass finite values")
    return x


def check_shape(name: str, x: Tensor, shape: Sequence[int | str | None], hint: str = "") -> Tensor:
    """x.shape must match `shape`, where None/a string (an axis name, e.g. "B") matches any size."""
    if x.ndim != len(shape) or any(isinstance(s, int) and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join(str(s) if s is not None else "*" for s in shape) + ")"
        raise UsageError(f"{name} must have shape {want}, got {tuple(x.shape)}{'; ' + hint if hint else ''}")
    return x


def check_images(name: str, x: Any, *, channels: int | None = None, batch: int | None = None) -> Tensor:
    """Images (B, C, H, W) as a finite float tensor in [-1, 1] (see the module doc for the tolerance)."""
    x = as_tensor(name, x)
    if x.dtype == torch.uint8:
        raise UsageTypeError(f"{name} is a uint8 image (0..255) but images are floats in [-1, 1]; convert with "
                             f"{name}.float() / 127.5 - 1")
    if not x.is_floating_point():
        raise UsageTypeError(f"{name} must be a float tensor in [-1, 1], got {describe(x)}")
    if x.ndim == 3:
        raise UsageError(f"{name} must be a batch (B, C, H, W), got one image {tuple(x.shape)}; use {name}[None]")
    check_shape(name, x, ("B", channels if channels is not None else "C", "H", "W"))
    if batch is not None and x.shape[0] != batch:
        raise UsageError(f"{name} holds {x.shape[0]} images but {batch} are needed (one per sample)")
    check_finite(name, x)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - IMAGE_TOLERANCE or hi > 1 + IMAGE_TOLERANCE:
        how = (f"it looks like 0..255: use {name} / 127.5 - 1" if hi > 1.5 else
               "rescale it to [-1, 1] (from [0, 1]: x * 2 - 1)")
        raise UsageError(f"{name} must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; {how}")
    return x.float().clamp(-1, 1)


def check_labels(name: str, labels: Any, num_classes: int) -> Tensor:
    """Class indices (B,) in 0..K-1 -> LongTensor; whole-number floats accepted, fractional ones refused."""
    if isinstance(labels, numbers.Number) and not isinstance(labels, bool):
        raise UsageTypeError(f"{name} must be a list of class indices, one per image, got {labels!r}; "
                             f"use {name}=[{labels!r}]")
    y = as_tensor(name, labels)
    if y.dtype == torch.bool:
        raise UsageTypeError(f"{name} must be integer class indices, got a bool tensor")
    if y.ndim != 1 or y.numel() == 0:
        raise UsageError(f"{name} must be a non-empty 1-D list of class indices (B,), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        check_finite(name, y)
        if not bool((y == y.round()).all()):
            raise UsageError(f"{name} must be whole class indices, got {y[y != y.round()][:5].tolist()}; "
                             "round them yourself if that is what you mean")
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        raise UsageError(f"{name} must lie in 0..{num_classes - 1} (this model has {num_classes} classes), got "
                         f"{y[bad][:5].tolist()}; for the unconditional model (∅) use guidance_scale=0")
    return y.long()


def check_strings(name: str, value: Any, count: int | None = None) -> list[str]:
    """One string or a non-empty sequence of strings -> list[str], optionally exactly `count` of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, bytes):
        raise UsageTypeError(f"{name} must be a string or a list of strings, got {describe(value)}")
    items = list(items)
    wrong = [i for i, p in enumerate(items) if not isinstance(p, str)]
    if wrong:
        raise UsageTypeError(f"{name} must hold strings, got {describe(items[wrong[0]])} at index {wrong[0]}")
    if not items:
        raise UsageError(f"{name} is empty; pass at least one string")
    if count is not None and len(items) != count:
        raise UsageError(f"{name} holds {len(items)} strings but {count} are needed (one per image)")
    return items

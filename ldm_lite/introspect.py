"""Look inside a network while it runs: the output shape of every block and the outputs of chosen blocks (for the
notebooks' "piece by piece")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def trace_shapes(model: nn.Module, *inputs: Any, depth: int = 2, **kwargs: Any) -> list[tuple[str, str, tuple]]:
    """Run `model(*inputs, **kwargs)` once and return (module name, class, output shape) for every submodule down
    to `depth` dots, in the order they ran. E.g. `trace_shapes(unet, z_t, t)` shows each level's resolution."""
    rows: list[tuple[str, str, tuple]] = []
    hooks = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def hook(mod, args, out, name=name):
            if isinstance(out, torch.Tensor):
                rows.append((name, type(mod).__name__, tuple(out.shape)))

        hooks.append(module.register_forward_hook(hook))
    try:
        model(*inputs, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return rows


def format_shapes(rows: list[tuple[str, str, tuple]]) -> str:
    """The rows of `trace_shapes` as an aligned text table."""
    width = max((len(n) for n, _, _ in rows), default=4)
    lines = [f"{'module':<{width}}  {'class':<18} output shape"]
    lines += [f"{n:<{width}}  {c:<18} {tuple(s)}" for n, c, s in rows]
    return "\n".join(lines)


@torch.no_grad()
def activations(model: nn.Module, *inputs: Any, names: Sequence[str], **kwargs: Any) -> dict[str, torch.Tensor]:
    """Run `model(*inputs, **kwargs)` once and return the output of each named submodule (names as in
    `model.named_modules()`, e.g. "conv_in", "down.0.1", "mid2" of a UNet), in the order of `names`."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no submodules {missing}; names look like {list(modules)[1:6]}")
    out: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda mod, args, o, n=n: out.__setitem__(n, o.detach())) for n in names]
    try:
        model(*inputs, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return {n: out[n] for n in names if n in out}

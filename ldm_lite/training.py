"""Training infrastructure shared by every training loop in `ldm_lite.train`.

- `batch_indices(n, batch_size, seed, step)`: the batch order is a pure function of (seed, step), so a resumed
  run sees exactly the batches an uninterrupted run would (no DataLoader iterator state to save).
- `EMA`: exponential moving average of a model's weights.
- `save_training_state` / `load_training_state`: an atomic checkpoint folder with the model
  (config.json + model.safetensors), tensors of the optimizers/EMA/extra modules/RNG (training.safetensors)
  and everything else as JSON (state.json: step, history, optimizer hyper-parameters). No pickle anywhere.
- `check_finite`: the NaN guard; raises `TrainingDiverged` naming the last good checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import (
    CheckpointError,
    atomic_dir,
    load_state_into,
    load_weights,
    read_config,
    read_json,
    save_model,
    write_json,
)
from .runtime import pick_device

log = logging.getLogger(__name__)

TRAINING_FILE = "training.safetensors"
STATE_FILE = "state.json"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    return pick_device(device)


# ----------------------------------------------------------------------------------------------- data order


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices (batch_size,) of the batch at `step`: epoch e = step // (n // batch_size) walks through
    torch.randperm(n) drawn from a generator seeded with seed + e (the last partial batch is dropped)."""
    if n < batch_size:
        raise ValueError(f"the dataset has {n} items, fewer than batch_size={batch_size}; lower batch_size")
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return perm[i * batch_size: (i + 1) * batch_size]


class ImageSource:
    """Random access to images (N, C, H, W): from a tensor, or from a dataset of dicts with an "image" key."""

    def __init__(self, data: Any):
        self.data = data
        if not isinstance(data, torch.Tensor) and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(f"expected an image tensor (N, C, H, W) or a map-style dataset, got {type(data).__name__}")

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self.data, torch.Tensor):
            return self.data[idx]
        items = [self.data[int(i)] for i in idx]
        return torch.stack([it["image"] if isinstance(it, dict) else it for it in items])


# ----------------------------------------------------------------------------------------------- EMA


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta after every step, d = min(decay, (1 + n) / (10 + n)) after n
    updates (the warm-up of LDM's LitEma, so early weights do not linger); buffers are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay, self.num_updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.num_updates = num_updates


# ----------------------------------------------------------------------------------------------- state <-> files


def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> tensors "{name}.{param}.{key}" + JSON (param_groups, non-tensor values)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = name + "."
    for k, v in tensors.items():
        if k.startswith(prefix):
            pid, key = k[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    for k, v in meta["scalars"].items():
        pid, key = k.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(device)
    return rng


def save_training_state(directory: str | os.PathLike, model: nn.Module, *, step: int,
                        optimizers: dict[str, torch.optim.Optimizer], modules: dict[str, nn.Module] | None = None,
                        ema: EMA | None = None, history: dict[str, list] | None = None,
                        extra: dict | None = None) -> Path:
    """Write model + training state to `directory` atomically (see the module docstring for the layout)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tensors: dict[str, torch.Tensor] = dict(_rng_state(device))
    meta: dict[str, Any] = {"step": step, "history": history or {}, "extra": extra or {}, "optimizers": {}}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(f"opt.{name}", opt)
        tensors.update(t)
        meta["optimizers"][name] = m
    for name, module in (modules or {}).items():
        tensors.update({f"module.{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
        meta["ema"] = {"decay": ema.decay, "num_updates": ema.num_updates}
    with atomic_dir(directory) as tmp:
        save_model(model, model.config, tmp)  # type: ignore[arg-type]
        save_file(tensors, str(tmp / TRAINING_FILE))
        write_json(tmp / STATE_FILE, meta)
    return directory


def load_training_state(directory: str | os.PathLike, model: nn.Module, *,
                        optimizers: dict[str, torch.optim.Optimizer], modules: dict[str, nn.Module] | None = None,
                        ema: EMA | None = None) -> dict:
    """Restore what `save_training_state` wrote, in place; returns state.json (step, history, extra)."""
    directory = Path(directory)
    meta = read_json(directory / STATE_FILE)
    saved = read_config(directory, type(model).__name__, type(model.config))  # type: ignore[attr-defined]
    if saved != model.config:
        raise CheckpointError(f"{directory} was trained with {saved}, not this model's {model.config}; "
                              "build the model from that config or start afresh")
    load_state_into(model, directory)
    tensors = load_weights(directory / TRAINING_FILE)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, opt in optimizers.items():
        opt.load_state_dict(_unflatten_optimizer(f"opt.{name}", tensors, meta["optimizers"][name]))
    for name, module in (modules or {}).items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if ema is not None:
        if not any(k.startswith("ema.") for k in tensors):
            raise CheckpointError(f"{directory} has no EMA weights; resume with ema=None or start afresh")
        ema.load_state_dict({k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")},
                            meta["ema"]["num_updates"])
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return meta


# ----------------------------------------------------------------------------------------------- NaN guard


class TrainingDiverged(FloatingPointError):
    """The loss became NaN/inf; `history` and `last_checkpoint` are attached."""

    def __init__(self, message: str, history: dict[str, list], last_checkpoint: Path | None):
        super().__init__(message)
        self.history, self.last_checkpoint = history, last_checkpoint


def check_finite(loss: torch.Tensor, step: int, history: dict[str, list], last_checkpoint: Path | None,
                 last_step: int | None, what: str = "loss") -> None:
    if math.isfinite(loss.item()):
        return
    where = (f"the last good checkpoint (step {last_step}) is kept at {last_checkpoint}; resume from it with a "
             "lower lr" if last_checkpoint else "no checkpoint was written (set out_dir/checkpoint_every)")
    raise TrainingDiverged(f"{what} became {loss.item()} at step {step}; stopped. {where}", history, last_checkpoint)


@dataclass
class History:
    """Curves logged during training: `log(step=..., rec=...)` appends to a dict of lists."""

    data: dict[str, list]

    def log(self, **values: float) -> None:
        n = len(self.data.get("step", []))
        for k, v in values.items():
            self.data.setdefault(k, [math.nan] * n if k != "step" else []).append(float(v))
        for vals in self.data.values():  # keys missing this step get NaN, so every list has the same length
            if len(vals) < n + 1:
                vals.append(math.nan)

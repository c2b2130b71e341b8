"""Checkpoints: `config.json` + `model.safetensors`, written atomically, loaded without pickle.

Layout (the project's convention, shared by every model):

    <dir>/config.json        {"kind": "<ModelClass>", "format": 1, "config": {...dataclass fields...}}
    <dir>/model.safetensors  the state dict
    <dir>/metrics.json       optional, written by training / evaluation
    <dir>/state.json + training.safetensors   optional training state (optimizer, EMA, step, RNG)

A folder is first written to `<dir>.tmp-<pid>` and then moved into place with `os.replace`, so an
interrupted save never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UsageError, UsageTypeError

FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

C = TypeVar("C")


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded: missing, corrupt, or made for another model/config."""


# ---------------------------------------------------------------- dataclass configs <-> json
def config_difference(saved: Any, current: Any, limit: int = 3) -> str:
    """The fields in which two configs (dataclasses, nested as dataclasses or dicts) differ, as one short line:
    `unet.model_channels: 64 in the checkpoint, 32 now`."""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}

    a, b = flat(saved), flat(current)
    diffs = [f"{k}: {a.get(k, '(absent)')!r} in the checkpoint, {b.get(k, '(absent)')!r} now"
             for k in sorted(set(a) | set(b), key=lambda k: (k.count("."), k)) if a.get(k) != b.get(k)]
    more = f"; {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict) -> C:
    """Build a (possibly nested) dataclass config from a dict, rejecting unknown fields by name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(
            f"config fields {unknown} are not fields of {cls.__name__}; "
            "the checkpoint was written by another model or another version of ldm_lite"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# ---------------------------------------------------------------- atomic folders
CRASH_ENV = "LDM_LITE_CRASH_AT"  # test hook: "<phase>:<n>" SIGKILLs the process the n-th time a write reaches <phase>
_crash_counts: dict[str, int] = {}


def crash_point(phase: str) -> None:
    """Test hook for crash safety: phases "files" (some files of the new folder written), "swap" (the old folder
    moved aside, the new one not yet in place), "cleanup" (the new one in place, the old one not yet deleted)."""
    want, _, n = os.environ.get(CRASH_ENV, "").partition(":")
    if want != phase:
        return
    _crash_counts[phase] = _crash_counts.get(phase, 0) + 1
    if _crash_counts[phase] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_dir(path: str | os.PathLike) -> _AtomicDir:
    """`with atomic_dir(p) as tmp:` write files into `tmp`; on success `tmp` replaces `p`. A crash at any moment
    leaves either the old or the new folder complete (`recover_dir` puts the old one back if the crash fell
    between the two renames); a failed write (full disk, read-only folder) raises `CheckpointError` and leaves
    the old folder as it was."""
    return _AtomicDir(Path(path))


class _AtomicDir:
    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        self.old = path.with_name(f"{path.name}.old-{os.getpid()}")

    def _fail(self, e: OSError) -> CheckpointError:
        shutil.rmtree(self.tmp, ignore_errors=True)
        kept = f"the previous {self.path.name} is intact" if self.path.exists() else f"nothing was written to {self.path}"
        return CheckpointError(f"could not write {self.path} ({e.strerror or e}); {kept}. Free disk space or make the "
                               f"folder writable, or choose another output folder")

    def __enter__(self) -> Path:
        try:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise self._fail(e) from e
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if issubclass(exc_type, OSError):
                raise self._fail(exc) from exc
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        had_old = self.path.exists()
        try:
            if had_old:
                os.replace(self.path, self.old)  # keep the previous folder until the new one is in place
                crash_point("swap")
            os.replace(self.tmp, self.path)
        except OSError as e:
            if had_old and self.old.exists() and not self.path.exists():
                os.replace(self.old, self.path)
            raise self._fail(e) from e
        if had_old:
            crash_point("cleanup")
            shutil.rmtree(self.old, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path | None:
    """After a crash: put back `<path>.old-*` if `path` is missing (the crash fell between the two renames of an
    atomic write) and remove leftover `.tmp-*` / `.old-*` folders. Returns `path` if a folder is there now."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    leftovers = sorted(path.parent.glob(f"{path.name}.old-*")), sorted(path.parent.glob(f"{path.name}.tmp-*"))
    olds, tmps = leftovers
    if not path.exists() and olds:
        os.replace(olds.pop(), path)
    for p in olds + tmps:
        shutil.rmtree(p, ignore_errors=True)
    return path if path.exists() else None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file + os.replace)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; is this an ldm_lite checkpoint folder?") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, re-save or re-train it") from None


def _refuse_links(directory: Path) -> None:
    """A checkpoint folder whose files are symlinks pointing outside it is refused (it could read any file)."""
    root = directory.resolve()
    for f in directory.iterdir():
        if f.is_symlink() and root not in f.resolve().parents:
            raise CheckpointError(f"{f} is a symlink to {f.resolve()}, outside the checkpoint folder {directory}; "
                                  "copy the file into the folder instead of linking it")


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.parent.is_dir():
        _refuse_links(path.parent)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; the checkpoint folder is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); the checkpoint is corrupt") from None


# ---------------------------------------------------------------- models
def save_model(model: torch.nn.Module, config: Any, directory: str | os.PathLike, kind: str | None = None,
               half: bool = False) -> Path:
    """config.json + model.safetensors in `directory`, written atomically. `half`: the floating-point parameters
    are stored in float16 (about half the file; buffers stay as they are); loading casts them back to the model's
    dtype, so the loaded model holds `round_to_half(model)`'s weights exactly."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"could not create {directory.parent} ({e.strerror or e}); choose a writable output "
                              "folder") from e
    with atomic_dir(directory) as tmp:
        _write_model_files(model, config, tmp, kind, half)
    return directory


def round_to_half(model: torch.nn.Module) -> torch.nn.Module:
    """Round `model`'s floating-point parameters to the nearest float16 value, in place (their dtype unchanged):
    the weights a `half` save stores, so a model can be measured as it will ship."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(p.half().to(p.dtype))
    return model


def _write_model_files(model: torch.nn.Module, config: Any, directory: Path, kind: str | None = None,
                       half: bool = False) -> None:
    meta = {"kind": kind or type(model).__name__, "format": FORMAT, "config": config_to_dict(config)}
    if half:
        meta["parameters_dtype"] = "float16"  # for a reader of the folder; loading casts to the model's dtype
    write_json(directory / CONFIG_FILE, meta)
    params = {name for name, p in model.named_parameters() if p.is_floating_point()} if half else set()
    state = {k: (v.half() if k in params else v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))


def read_config(directory: str | os.PathLike, kind: str, config_cls: type[C]) -> C:
    if not isinstance(directory, str | os.PathLike):
        raise UsageTypeError(f"directory must be a path (str or pathlib.Path) to a saved model folder, got "
                             f"{type(directory).__name__}")
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder; pass the folder written by save_pretrained()")
    _refuse_links(directory)
    meta = read_json(directory / CONFIG_FILE)
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} is not an ldm_lite config (no 'kind'/'config'); "
            "to load a diffusers model use the conversion helpers instead"
        )
    if meta.get("format", FORMAT) > FORMAT:
        raise CheckpointError(f"{directory} was written by a newer ldm_lite (checkpoint format {meta['format']}, this "
                              f"version reads up to {FORMAT}); upgrade ldm_lite to load it")
    if meta["kind"] != kind:
        raise CheckpointError(f"{directory} holds a {meta['kind']}, not a {kind}; load it with {meta['kind']}.from_pretrained")
    return config_from_dict(config_cls, meta["config"])


def load_state_into(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    state = load_weights(Path(directory) / WEIGHTS_FILE)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        detail = "; ".join(
            s for s in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad[:3]]}" if bad else "",
            ) if s
        )
        raise CheckpointError(f"weights in {directory} do not match the model built from its config ({detail})")
    check_finite_weights(state, Path(directory) / WEIGHTS_FILE)
    model.load_state_dict(state)


def check_finite_weights(state: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Refuse loaded weights holding NaN/inf, naming the tensor (they would make every output NaN, silently)."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise CheckpointError(f"{where}: tensor {name!r} {tuple(t.shape)} holds {n_nan} NaN and {n_inf} inf "
                                  "value(s); the checkpoint comes from a diverged run or is corrupt: load an earlier "
                                  "checkpoint or re-train")


class Pretrained:
    """Mixin: `save_pretrained(dir)` / `from_pretrained(dir)` (eval mode) for a module with a dataclass `config`."""

    config: Any
    config_class: type

    def save_pretrained(self, directory: str | os.PathLike, half: bool = False) -> Path:
        """config.json + model.safetensors (`half`: parameters stored in float16, see `save_model`)."""
        return save_model(self, self.config, directory, half=half)  # type: ignore[arg-type]

    @classmethod
    def read_pretrained_config(cls, directory: str | os.PathLike) -> Any:
        """The config of a saved folder (fields added since it was written get their defaults)."""
        return read_config(directory, cls.__name__, cls.config_class)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
        config = cls.read_pretrained_config(directory)
        model = cls(config)  # type: ignore[call-arg]
        load_state_into(model, directory)  # type: ignore[arg-type]
        return model.to(map_location).eval()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- training state (resumable checkpoints)
TRAINING_FILE = "training.safetensors"  # optimizer/EMA/extra-module tensors, RNG states
STATE_FILE = "state.json"  # step, history, optimizer hyper-parameters, LR schedulers, EMA counters


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


def save_training_state(directory: str | os.PathLike, model: torch.nn.Module, *, step: int,
                        optimizers: dict[str, torch.optim.Optimizer], modules: dict[str, torch.nn.Module] | None = None,
                        ema: Any = None, generators: dict[str, torch.Generator] | None = None,
                        schedulers: dict[str, Any] | None = None, history: dict[str, list] | None = None,
                        extra: dict | None = None) -> Path:
    """Write the model (config.json + model.safetensors) and its training state to `directory` atomically:
    tensors of the optimizers, extra modules, EMA and RNGs in training.safetensors, the rest in state.json."""
    directory = Path(directory)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    tensors.update({f"rng.gen.{name}": g.get_state() for name, g in (generators or {}).items()})
    meta: dict[str, Any] = {"step": step, "history": history or {}, "extra": extra or {}, "optimizers": {},
                            "schedulers": {name: s.state_dict() for name, s in (schedulers or {}).items()}}
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
        _write_model_files(model, model.config, tmp)  # type: ignore[attr-defined]
        crash_point("files")
        save_file(tensors, str(tmp / TRAINING_FILE))
        write_json(tmp / STATE_FILE, meta)
    return directory


def load_training_state(directory: str | os.PathLike, model: torch.nn.Module, *,
                        optimizers: dict[str, torch.optim.Optimizer], modules: dict[str, torch.nn.Module] | None = None,
                        ema: Any = None, generators: dict[str, torch.Generator] | None = None,
                        schedulers: dict[str, Any] | None = None) -> dict:
    """Restore what `save_training_state` wrote, in place; returns state.json (step, history, extra)."""
    directory = Path(directory)
    meta = read_json(directory / STATE_FILE)
    saved = type(model).read_pretrained_config(directory)  # type: ignore[attr-defined]  (older folders: today's meaning)
    if saved != model.config:
        raise CheckpointError(f"{directory} was trained with another configuration ({config_difference(saved, model.config)}"
                              "); keep that run and write this one elsewhere (--out, train-ae: --name; Python: "
                              "out_dir), or start this one afresh over it (--fresh; Python: resume=False)")
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
    for name, g in (generators or {}).items():
        g.set_state(tensors[f"rng.gen.{name}"])
    for name, s in (schedulers or {}).items():
        s.load_state_dict(meta["schedulers"][name])
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return meta


def rename_key(key: str, rules: list[tuple[str, str]]) -> str:
    """A state-dict key through regex rules (pattern, replacement), applied in order: the one renaming used by every
    checkpoint conversion (diffusers, CompVis)."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


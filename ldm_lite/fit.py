"""The one training loop, `fit`, that every trainer in `ldm_lite.train` plugs a step function into.

`fit` owns everything that is not the model's own maths:
- batch order: a pure function of (seed, step) (`batch_indices`), so a resumed run sees exactly the batches an
  uninterrupted one would (no DataLoader iterator state to save);
- linear learning-rate warm-up (a pure function of the step) and gradient clipping (`StepContext.optimize`);
- an EMA of the weights (`EMA`, LDM's LitEma warm-up), copied into the model at the end;
- the NaN guard (`StepContext.check`): raises `TrainingDiverged` naming the last good checkpoint;
- atomic checkpoints every `checkpoint_every` steps and exact resume (`ldm_lite.checkpoint.save_training_state`);
- a time budget (wall-clock seconds of this call, or CPU seconds of the whole run: `budget_clock`),
  DistributedDataParallel under `torchrun` (rank 0 writes; rank 0 decides when time is up),
  a tqdm progress bar and the history (a dict of lists).

A step function is `step_fn(ctx: StepContext) -> dict[str, float]` (the values to log). It reads `ctx.step`,
`ctx.indices()` (the batch), calls `ctx.check(loss)` before backward and `ctx.optimize(name, loss)` to take an
optimizer step.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_training_state, recover_dir, save_training_state
from .errors import UsageError
from .runtime import pick_device

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"  # <out_dir>/checkpoint: latest model + training state (resumable)
FINAL_DIR = "model"  # <out_dir>/model: the final model (EMA weights when ema is set)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    return pick_device(device)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices (batch_size,) of the batch at `step`: epoch e = step // (n // batch_size) walks through
    torch.randperm(n) drawn from a generator seeded with seed + e (the last partial batch is dropped)."""
    if n < batch_size:
        raise UsageError(f"the dataset has {n} items, fewer than batch_size={batch_size}; lower batch_size")
    epoch, i = divmod(step, n // batch_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return perm[i * batch_size: (i + 1) * batch_size]


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


@dataclass
class History:
    """Curves logged during training: `log(step=..., rec=...)` appends to a dict of lists."""

    data: dict[str, list]

    def log(self, **values: float) -> None:
        n = len(self.data.get("step", []))
        for k, v in values.items():
            self.data.setdefault(k, [math.nan] * n if k != "step" else []).append(int(v) if k == "step" else float(v))
        for vals in self.data.values():  # keys missing this step get NaN, so every list has the same length
            if len(vals) < n + 1:
                vals.append(math.nan)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN/inf; `history` and `last_checkpoint` are attached."""

    def __init__(self, message: str, history: dict[str, list], last_checkpoint: Path | None):
        super().__init__(message)
        self.history, self.last_checkpoint = history, last_checkpoint


def distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under `torchrun` (WORLD_SIZE > 1) joins the process group: NCCL on GPUs (one
    per LOCAL_RANK), gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():  # a peer that dies makes the others fail after this timeout instead of hanging
        timeout = datetime.timedelta(seconds=float(os.environ.get("LDM_LITE_DDP_TIMEOUT_S", "300")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


@dataclass
class StepContext:
    """What a step function sees: the step, its batch, the NaN guard and the optimizers."""

    step: int
    dataset_size: int
    batch_size: int
    seed: int
    optimizers: dict[str, torch.optim.Optimizer]
    grad_clip: float | None
    rank: int = 0
    world: int = 1
    history: History = field(default_factory=lambda: History({}))
    last_checkpoint: Path | None = None
    last_checkpoint_step: int | None = None
    deferred: bool = False  # defer NaN checks to `flush` (accelerators: no device sync per step)
    pending: list = field(default_factory=list)  # deferred checks: (step, what, value)

    def indices(self) -> torch.Tensor:
        """The global batch at this step (B,), a pure function of (seed, step)."""
        return batch_indices(self.dataset_size, self.batch_size, self.seed, self.step)

    def check(self, value: torch.Tensor, what: str = "loss") -> None:
        """The NaN guard: raise `TrainingDiverged` (naming the last good checkpoint) if `value` is not finite. On an
        accelerator the check is deferred to the next `flush` (one device sync every few steps, not every step)."""
        if self.deferred:
            self.pending.append((self.step, what, value.detach()))
        elif not math.isfinite(value.item()):
            self._diverged(self.step, value.item(), what)

    def flush(self) -> None:
        """Run the deferred NaN checks (one device -> host copy for all of them)."""
        if not self.pending:
            return
        finite = torch.isfinite(torch.stack([v.float().reshape(()) for _, _, v in self.pending])).tolist()
        pending, self.pending = self.pending, []
        for ok, (step, what, value) in zip(finite, pending):
            if not ok:
                self._diverged(step, value.item(), what)

    def _diverged(self, step: int, value: float, what: str) -> None:
        where = (f"the last good checkpoint (step {self.last_checkpoint_step}) is kept at {self.last_checkpoint}; "
                 "resume from it with a lower lr" if self.last_checkpoint
                 else "no checkpoint was written (set out_dir/checkpoint_every)")
        raise TrainingDiverged(f"{what} became {value} at step {step}; stopped. {where}", self.history.data,
                               self.last_checkpoint)

    def optimize(self, name: str, loss: torch.Tensor) -> torch.Tensor | float:
        """zero_grad, backward, clip the gradient norm to `grad_clip` (if set), step; returns the norm (a tensor,
        read only when logged) or NaN without clipping."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm: torch.Tensor | float = math.nan
        if self.grad_clip is not None:
            params = [p for group in opt.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip).detach()
        opt.step()
        return norm


def _resume_dir(resume: bool | str | os.PathLike | None, out: Path | None) -> Path | None:
    if resume is None or resume is False:
        return None
    if resume is True:
        if out is None:
            raise UsageError("resume=True needs out_dir (the checkpoint is read from <out_dir>/checkpoint)")
        return recover_dir(out / CHECKPOINT_DIR)  # None: nothing to resume yet, start afresh
    return Path(resume)


# the clocks a time budget can count (looked up when read, so a test can replace one)
CLOCKS: dict[str, Callable[[], float]] = {"wall": lambda: time.perf_counter(), "cpu": lambda: time.process_time()}


def _out_of_time(seconds: float, max_seconds: float, world: int, device: torch.device) -> bool:
    """Whether `seconds` spent exceed the time budget; under torchrun rank 0 decides for all, so every rank stops
    together (a host clock read on one process: no device sync)."""
    spent = seconds > max_seconds
    if world == 1:
        return spent
    flag = torch.tensor([float(spent)], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def fit(
    model: nn.Module,
    step_fn: Callable[[StepContext], dict[str, float]],
    *,
    steps: int,
    optimizers: dict[str, torch.optim.Optimizer],
    dataset_size: int,
    batch_size: int,
    seed: int = 0,
    warmup: int = 0,
    grad_clip: float | None = None,
    ema: tuple[nn.Module, float] | None = None,
    modules: dict[str, nn.Module] | None = None,
    generators: dict[str, torch.Generator] | None = None,
    schedulers: dict[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1_000,
    resume: bool | str | os.PathLike | None = None,
    max_seconds: float | None = None,
    budget_clock: str = "wall",
    min_steps: int = 0,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
    log_every: int = 1,
    sync_every: int | None = None,
    show: Iterable[str] = ("loss",),
    step_callback: Callable[[int, float], Any] | None = None,
    progress: bool = True,
    desc: str = "train",
    extra: dict | None = None,
) -> dict[str, list]:
    """Run `step_fn` for steps [start, steps) and return the history (dict of lists).

    model: what checkpoints hold (config.json + weights; `save_pretrained` writes `<out_dir>/model` at the end).
    optimizers / modules / generators / schedulers: the training state saved with every checkpoint (modules: extra
    trained state outside the model, e.g. a discriminator; schedulers: LR schedulers, saved as JSON).
    warmup: the learning rate grows linearly over the first `warmup` steps (from each group's initial lr).
    ema: (module, decay): an EMA of `module`'s weights, copied into it at the end.
    resume: True (continue from <out_dir>/checkpoint if present) or a checkpoint folder; the resumed run ends with
    the same weights, bit for bit, as an uninterrupted one. max_seconds: stop early (after a checkpoint) once that
    much time has passed; resume=True continues later. budget_clock: what max_seconds counts: "wall" (wall-clock
    seconds of this call: a time slot) or "cpu" (CPU seconds of this process in the training loop,
    `time.process_time`, summed over every resumed segment of the run — each checkpoint stores them as
    `cpu_seconds` — so arms sharing a busy machine compare at equal compute; a resumed run whose budget is spent
    does nothing). min_steps: the time budget is not consulted before this many steps (a quality floor: on a slow
    or busy machine the run takes longer instead of ending undertrained; a warning says so).
    sync_every: on an accelerator, NaN checks, logged values and the time budget are read every `sync_every` steps
    (default `log_every`) and before every checkpoint, so a step queues work without waiting for the device; on the
    CPU (or with a `step_callback`) every step. No checkpoint is ever written from non-finite weights.
    """
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    if checkpoint_every < 0:
        raise UsageError(f"checkpoint_every must be >= 0 (0 = only at the end), got {checkpoint_every}")
    if budget_clock not in CLOCKS:
        raise UsageError(f"budget_clock={budget_clock!r} is unknown; use 'wall' (wall-clock seconds of this call) or "
                         "'cpu' (CPU seconds of the whole run)")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:  # fail before training, not at the first checkpoint
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create the output folder {out} ({e.strerror or e}); choose a writable "
                                  "output folder (out_dir / --out, or LDM_LITE_OUTPUTS)") from e
    base_lr = {(name, i): g["lr"] for name, opt in optimizers.items() for i, g in enumerate(opt.param_groups)}
    ema_model = EMA(ema[0], ema[1]) if ema is not None else None
    dev = device or torch.device("cpu")
    sync = 1 if dev.type == "cpu" or step_callback is not None else max(1, sync_every or log_every)
    ctx = StepContext(0, dataset_size, batch_size, seed, optimizers, grad_clip, rank, world, deferred=sync > 1)
    logged: list[tuple[int, dict]] = []  # steps since the last sync, with their logs (tensors until read)

    def sync_now() -> None:
        ctx.flush()
        for s, logs in logged:
            values = {k: float(v) for k, v in logs.items()}
            if s % log_every == 0 or s == steps - 1:
                ctx.history.log(step=s, **values)
                if progress and rank == 0:
                    bar.set_postfix({k: f"{values[k]:.3g}" for k in show if k in values}, refresh=False)
            if step_callback is not None and rank == 0:
                step_callback(s, values.get("loss", math.nan))
        logged.clear()

    start, cpu_before = 0, 0.0  # CPU seconds of the training loop in earlier segments of this run
    ckpt_from = _resume_dir(resume, out)
    if ckpt_from is not None:
        meta = load_training_state(ckpt_from, model, optimizers=optimizers, modules=modules, ema=ema_model,
                                   generators=generators, schedulers=schedulers)
        start, ctx.history = meta["step"], History(meta["history"])
        cpu_before = float(meta.get("extra", {}).get("cpu_seconds", 0.0))
        ctx.last_checkpoint, ctx.last_checkpoint_step = ckpt_from, start
        log.info("resuming from %s at step %d of %d%s", ckpt_from, start, steps,
                 ": already trained, nothing to do (more steps continue it; --fresh / resume=False starts over)"
                 if start >= steps else " (--fresh / resume=False starts over)")
    else:
        torch.manual_seed(seed)  # whatever draws from the global RNG (posterior noise, VQ restarts) is seeded

    def checkpoint(step: int) -> None:
        sync_now()  # the NaN checks of every step so far pass before a checkpoint is written
        if out is not None and rank == 0:
            if not all(torch.isfinite(p).all() for p in model.parameters()):  # never overwrite a good one with NaN
                ctx.check(torch.tensor(float("nan")), what="weights")
            ctx.last_checkpoint = save_training_state(
                out / CHECKPOINT_DIR, model, step=step, optimizers=optimizers, modules=modules, ema=ema_model,
                generators=generators, schedulers=schedulers, history=ctx.history.data,
                extra={"seed": seed, "batch_size": batch_size, **(extra or {}), "cpu_seconds": round(cpu_spent(), 3)})
        ctx.last_checkpoint_step = step

    def cpu_spent() -> float:
        return cpu_before + CLOCKS["cpu"]() - cpu_start

    def spent() -> float:  # what the budget counts
        return cpu_spent() if budget_clock == "cpu" else CLOCKS["wall"]() - t_start

    model.train()
    if max_seconds is not None and start < steps and rank == 0:  # the bar counts to `steps`: say when it stops early
        log.info("training to step %d or for %.0f %s s, whichever comes first%s", steps, max_seconds,
                 "CPU" if budget_clock == "cpu" else "wall-clock",
                 f" (but at least to step {min_steps})" if min_steps > start else "")
    t_start, cpu_start = CLOCKS["wall"](), CLOCKS["cpu"]()
    end = steps
    if (max_seconds is not None and budget_clock == "cpu" and min_steps <= start < steps
            and cpu_before > max_seconds):  # a resumed run whose CPU budget is spent: nothing to do
        end = start
        log.warning("the CPU budget of %.0f s was spent by earlier segments (%.0f s, step %d); nothing to do (a "
                    "larger max_seconds continues it)", max_seconds, cpu_before, start)
    slow = False  # the time budget ran out before min_steps
    bar = tqdm(range(start, end), initial=start, total=steps, disable=not progress or rank != 0, desc=desc)
    try:
        for step in bar:
            ctx.step = step
            if warmup:
                for (name, i), lr in base_lr.items():  # a pure function of the step (exact resume)
                    optimizers[name].param_groups[i]["lr"] = lr * min(1.0, (step + 1) / warmup)
            logged.append((step, step_fn(ctx)))
            if ema_model is not None:
                ema_model.update(ema[0])
            if (step + 1) % sync == 0 or step == steps - 1:
                sync_now()
            if out is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                checkpoint(step + 1)
            if (max_seconds is not None and not slow and step + 1 < min_steps and world == 1
                    and _out_of_time(spent(), max_seconds, world, dev)):
                slow = True
                log.warning("time budget of %.0f s spent after %d steps, before the minimum of %d: this machine is "
                            "slower or busier than the budget assumes; training on to step %d", max_seconds, step + 1,
                            min_steps, min_steps)
            if (max_seconds is not None and min_steps <= step + 1 < steps and (world == 1 or (step + 1) % sync == 0)
                    and _out_of_time(spent(), max_seconds, world, dev)):
                end = step + 1
                log.warning("time budget of %.0f s spent after %d of %d steps; stopping (run the same command again "
                            "to continue: it resumes, resume=True)", max_seconds, end, steps)
                break
        sync_now()
    finally:
        bar.close()
    if start < end or ctx.last_checkpoint_step != end:
        checkpoint(end)
    if ema_model is not None:
        ema_model.copy_to(ema[0])
    if out is not None and rank == 0:
        model.save_pretrained(out / FINAL_DIR)
    model.eval()
    return ctx.history.data

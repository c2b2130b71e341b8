"""Training loops. Shared pieces (batch order, EMA, checkpoints with exact resume, NaN guard) live in
`ldm_lite.training`; this module holds the loops themselves.

`train_autoencoder` trains the first stage as LDM does (§3.1, App. G): each step updates the autoencoder on
the generator loss of `ldm_lite.losses.AutoencoderLoss`, then, once the GAN is on (`disc_start`), the PatchGAN
discriminator on the hinge loss.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .autoencoder import Autoencoder
from .losses import AutoencoderLossConfig, autoencoder_loss
from .training import (
    EMA,
    History,
    ImageSource,
    batch_indices,
    check_finite,
    load_training_state,
    resolve_device,
    save_training_state,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"  # <out_dir>/checkpoint: latest model + training state (resumable)
FINAL_DIR = "model"  # <out_dir>/model: the final model (EMA weights when ema is set)


def _resume_dir(resume: bool | str | os.PathLike | None, out_dir: Path | None) -> Path | None:
    if resume is None or resume is False:
        return None
    if resume is True:
        if out_dir is None:
            raise ValueError("resume=True needs out_dir (the checkpoint is read from <out_dir>/checkpoint)")
        path = out_dir / CHECKPOINT_DIR
        return path if path.exists() else None  # nothing to resume yet: start afresh
    return Path(resume)


def train_autoencoder(
    ae: Autoencoder,
    dataset: Any,
    steps: int = 2_000,
    batch_size: int = 16,
    lr: float = 2e-4,
    loss_config: AutoencoderLossConfig | None = None,
    ema: float | None = None,
    device: str | torch.device = "auto",
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool | str | os.PathLike | None = None,
    seed: int = 0,
    log_every: int = 1,
    progress: bool = True,
) -> dict[str, list]:
    """Train `ae` in place for `steps` steps in total; returns the history (dict of lists, one entry per logged
    step: rec, l1, nll, kl or vq/perplexity/usage, g, lam, d, logvar, loss).

    dataset: an image tensor (N, C, H, W) in [-1, 1] or a dataset of dicts with "image".
    ema: decay of an EMA of the weights (e.g. 0.999); the model ends with the EMA weights.
    out_dir: where `checkpoint/` (every `checkpoint_every` steps and at the end) and `model/` are written.
    resume: True (continue from <out_dir>/checkpoint if present) or a checkpoint folder. A resumed run ends with
    the same weights, bit for bit, as an uninterrupted one.
    """
    device = resolve_device(device)
    out = Path(out_dir) if out_dir is not None else None
    source = ImageSource(dataset)
    ae.to(device)
    loss_fn = autoencoder_loss(ae, loss_config)
    opt_ae = torch.optim.Adam(list(ae.parameters()) + loss_fn.generator_parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
    optimizers = {"ae": opt_ae, "d": opt_d}
    modules = {"loss": _TrainableLossState(loss_fn)}
    ema_model = EMA(ae, ema) if ema else None

    history = History({})
    start, last_ckpt, last_ckpt_step = 0, None, None
    ckpt_from = _resume_dir(resume, out)
    if ckpt_from is not None:
        meta = load_training_state(ckpt_from, ae, optimizers=optimizers, modules=modules, ema=ema_model)
        start, history, last_ckpt, last_ckpt_step = meta["step"], History(meta["history"]), ckpt_from, meta["step"]
        log.info("resumed from %s at step %d", ckpt_from, start)
    else:
        torch.manual_seed(seed)  # posterior noise, VQ restarts: the global RNG, saved with each checkpoint

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt, last_ckpt_step
        if out is None:
            return
        if not all(torch.isfinite(p).all() for p in ae.parameters()):  # never overwrite a good checkpoint with NaN
            check_finite(torch.tensor(float("nan")), step, history.data, last_ckpt, last_ckpt_step, what="weights")
        last_ckpt = save_training_state(out / CHECKPOINT_DIR, ae, step=step, optimizers=optimizers, modules=modules,
                                        ema=ema_model, history=history.data,
                                        extra={"seed": seed, "batch_size": batch_size, "lr": lr})
        last_ckpt_step = step

    ae.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="autoencoder")
    for step in bar:
        x = source.batch(batch_indices(len(source), batch_size, seed, step)).to(device)
        output = ae(x)
        loss, logs = loss_fn(x, output, step, ae.last_layer())
        check_finite(loss, step, history.data, last_ckpt, last_ckpt_step)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if loss_fn.gan_active(step):
            d_loss, d_logs = loss_fn.discriminator_loss(x, output.sample)
            check_finite(d_loss, step, history.data, last_ckpt, last_ckpt_step)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(d_logs)
        if ema_model is not None:
            ema_model.update(ae)
        if step % log_every == 0 or step == steps - 1:
            history.log(step=step, **logs)
        if progress and step % 10 == 0:
            bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("rec", "kl", "perplexity", "g", "d") if k in logs})
        if out is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1)
    bar.close()
    if start < steps or last_ckpt_step != steps:
        checkpoint(steps)
    if ema_model is not None:
        ema_model.copy_to(ae)
    if out is not None:
        ae.save_pretrained(out / FINAL_DIR)
    ae.eval()
    return history.data


class _TrainableLossState(torch.nn.Module):
    """The loss's trained state (discriminator, log-variance) without the frozen LPIPS network."""

    def __init__(self, loss_fn: torch.nn.Module):
        super().__init__()
        self.loss_fn = loss_fn

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return {k: v for k, v in self.loss_fn.state_dict().items() if not k.startswith("lpips.")}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = self.loss_fn.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("lpips.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"loss state mismatch: missing {missing}, unexpected {result.unexpected_keys}")
        return result


# ============================================================================================== latent diffusion
def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under `torchrun` (WORLD_SIZE > 1) joins the process group: NCCL on GPUs (one
    per LOCAL_RANK), gloo on CPUs."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _out_of_time(t_start: float, max_seconds: float, world: int, device: torch.device) -> bool:
    """Whether the time budget is spent; under torchrun rank 0 decides for all, so every rank stops together."""
    flag = torch.tensor([float(time.perf_counter() - t_start > max_seconds)], device=device)
    if world > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _collate(dataset: Any, idx: torch.Tensor) -> dict[str, Any]:
    from torch.utils.data import default_collate

    return default_collate([dataset[int(i)] for i in idx])


def train_ldm(
    ldm: Any,
    dataset: Any,
    steps: int = 5_000,
    batch_size: int = 64,
    lr: float = 2e-4,
    warmup: int = 200,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    ema: float | None = 0.999,
    precision: str = "auto",
    device: str | torch.device = "auto",
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1_000,
    resume: bool | str | os.PathLike | None = None,
    seed: int = 0,
    log_every: int = 10,
    progress: bool = True,
    step_callback: Any = None,
    max_seconds: float | None = None,
) -> dict[str, list]:
    """Train a `LatentDiffusion`'s UNet (and conditioner) on L_LDM (eq. 2) for `steps` steps in total; returns the
    history (step, loss, lr, grad_norm). The autoencoder stays frozen.

    AdamW (fused where the device supports it) with linear warm-up; gradient clipping; an EMA of the weights that
    the model ends with (sampling uses it); bf16 autocast when `precision="auto"` on a GPU (fp32 on the CPU, where
    bf16 is ~10x slower) or `"bf16"`/`"fp32"` explicitly. Checkpoints go to `<out_dir>/checkpoint` every
    `checkpoint_every` steps (atomic); `resume=True` continues from there and ends with the same weights as an
    uninterrupted run: batch order, t and ε are pure functions of (seed, step, rank). Under `torchrun` each process
    takes its share of every batch (DistributedDataParallel; rank 0 writes). `step_callback(step, loss)` is called
    after every step (live plots in notebooks). `max_seconds` stops early (after a checkpoint) once that much
    wall-clock time has passed: a time budget for the main job on slow machines; `resume=True` continues later.
    """
    from torch.nn.parallel import DistributedDataParallel

    from .training import TrainingDiverged

    device = resolve_device(device)
    rank, world, device = _distributed(device)
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is not divisible by the {world} processes; use a multiple of {world}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    out = Path(out_dir) if out_dir is not None else None
    ldm.to(device)
    trainable = torch.nn.ModuleDict({"unet": ldm.unet, **({"conditioner": ldm.conditioner} if ldm.conditioner else {})})
    fused = device.type in ("cuda", "cpu") and hasattr(torch.optim, "AdamW")
    opt = torch.optim.AdamW(trainable.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    ema_model = EMA(trainable, ema) if ema else None
    model = DistributedDataParallel(ldm) if world > 1 else ldm

    history = History({})
    start, last_ckpt, last_ckpt_step = 0, None, None
    ckpt_from = _resume_dir(resume, out)
    if ckpt_from is not None:
        meta = load_training_state(ckpt_from, ldm, optimizers={"unet": opt}, ema=ema_model)
        start, history, last_ckpt, last_ckpt_step = meta["step"], History(meta["history"]), ckpt_from, meta["step"]
        log.info("resumed from %s at step %d", ckpt_from, start)

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt, last_ckpt_step
        if out is not None and rank == 0:
            last_ckpt = save_training_state(out / CHECKPOINT_DIR, ldm, step=step, optimizers={"unet": opt},
                                            ema=ema_model, history=history.data,
                                            extra={"seed": seed, "batch_size": batch_size, "lr": lr})
        last_ckpt_step = step

    ldm.train()
    t_start = time.perf_counter()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress or rank != 0, desc="LDM")
    end = steps
    for step in bar:
        # the global batch, its t and ε are pure functions of (seed, step); each process takes every world-th item
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = batch_indices(len(dataset), batch_size, seed, step)
        t = torch.randint(0, ldm.schedule.T, (batch_size,), generator=g)
        noise = torch.randn((batch_size, *ldm.latent_shape), generator=g)
        batch = _collate(dataset, idx[rank::world])
        g.manual_seed(seed * 1_000_003 + step + 7_919 * (rank + 1))  # posterior sampling, condition dropout
        for group in opt.param_groups:  # linear warm-up: a pure function of the step (exact resume)
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(batch, g, t[rank::world], noise[rank::world])
        avg = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(avg)
            avg /= world
        try:
            check_finite(avg, step, history.data, last_ckpt, last_ckpt_step)
        except TrainingDiverged:
            bar.close()
            raise
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable.parameters(), grad_clip if grad_clip else float("inf"))
        opt.step()
        if ema_model is not None:
            ema_model.update(trainable)
        if step % log_every == 0 or step == steps - 1:
            history.log(step=step, loss=avg.item(), lr=opt.param_groups[0]["lr"], grad_norm=float(norm))
            if rank == 0 and progress:
                bar.set_postfix(loss=f"{avg.item():.4f}")
        if step_callback is not None and rank == 0:
            step_callback(step, avg.item())
        if out is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1)
        if max_seconds is not None and step + 1 < steps and _out_of_time(t_start, max_seconds, world, device):
            end = step + 1
            log.warning("time budget of %.0f s spent after %d of %d steps; stopping (resume=True continues)",
                        max_seconds, end, steps)
            break
    bar.close()
    if start < end or last_ckpt_step != end:
        checkpoint(end)
    if ema_model is not None:
        ema_model.copy_to(trainable)
    if out is not None and rank == 0:
        ldm.save_pretrained(out / FINAL_DIR)
    ldm.eval()
    return history.data

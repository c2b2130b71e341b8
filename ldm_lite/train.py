"""Training loops. Shared pieces (batch order, EMA, checkpoints with exact resume, NaN guard) live in
`ldm_lite.training`; this module holds the loops themselves.

`train_autoencoder` trains the first stage as LDM does (§3.1, App. G): each step updates the autoencoder on
the generator loss of `ldm_lite.losses.AutoencoderLoss`, then, once the GAN is on (`disc_start`), the PatchGAN
discriminator on the hinge loss.
"""

from __future__ import annotations

import logging
import os
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

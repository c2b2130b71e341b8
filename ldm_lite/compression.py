"""Perceptual compression experiments for notebook 01 (LDM paper §3.1, Table 8): get an autoencoder for a
(kind, f, dataset), shipped or trained here, and feed the f control of `widgets.f_panel`.

    ae, source = get_autoencoder("kl", 4, "shapes", train_data, steps=300)    # shipped when present
    models = {(f, "kl"): get_autoencoder("kl", f, "shapes", data, steps=300, prefer_shipped=False)[0] for f in fs}
    widgets.f_panel(recon_fn(models), images, fs=(1, 2, 4, 8, 16), kinds=("kl", "vq"))

Shipped checkpoints are named `ae-{kind}-f{f}-{dataset}32` under `data/pretrained/` (scripts/train_pretrained_ae.py).
A model trained here is cached under `<out>/{kind}-f{f}-{dataset}-{steps}steps-{loss}/model`, so re-running the
notebook loads it instead of training again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .autoencoder import Autoencoder, AutoencoderConfig, estimate_scale_factor, reconstruct
from .losses import AutoencoderLossConfig
from .metrics import lpips_distance, psnr
from .paths import OUTPUTS_DIR, PRETRAINED_DIR

log = logging.getLogger(__name__)

ReconFn = Callable[[int, str, Tensor], "dict | None"]


def shipped_name(kind: str, f: int, dataset: str, resolution: int = 32) -> str:
    """`("kl", 4, "shapes")` -> `"ae-kl-f4-shapes32"`, the name scripts/train_pretrained_ae.py ships under."""
    return f"ae-{kind}-f{f}-{dataset}{resolution}"


def short_loss() -> AutoencoderLossConfig:
    """The sweep's short schedule: L1 reconstruction (with the learned log-variance) + KL / VQ terms; no LPIPS,
    no GAN (a 32x32 step then costs ~0.1-0.3 s on a CPU instead of ~1 s)."""
    return AutoencoderLossConfig(perceptual_weight=0.0, disc_start=10**9)


def full_loss(steps: int) -> AutoencoderLossConfig:
    """The paper's first-stage loss: L1 + LPIPS + KL / VQ + PatchGAN, the GAN switched on after 80% of `steps`
    (the shipped f=4 models were trained like this)."""
    return AutoencoderLossConfig(perceptual_weight=1.0, disc_start=int(0.8 * steps))


def get_autoencoder(kind: str, f: int, dataset: str, train_data, *, steps: int, batch_size: int = 8,
                    lr: float = 4e-4, loss: AutoencoderLossConfig | None = None, prefer_shipped: bool = True,
                    out: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0,
                    progress: bool = True) -> tuple[Autoencoder, str]:
    """An autoencoder `AutoencoderConfig.preset(f"{kind}-f{f}")` for `dataset`, and where it came from.

    Order: the shipped `data/pretrained/ae-{kind}-f{f}-{dataset}32` (when `prefer_shipped`), else one trained here
    earlier with the same settings (cached under `out`), else a new one trained now for `steps` steps on
    `train_data` (images (N, C, H, W) in [-1, 1] or a dataset of dicts) with `loss` (default: `short_loss()`),
    whose scale factor 1/std(z) is then estimated on `train_data`. Returned in eval mode on `device`.
    """
    loss = loss or short_loss()
    shipped = PRETRAINED_DIR / shipped_name(kind, f, dataset)
    if prefer_shipped and shipped.is_dir():
        return Autoencoder.from_pretrained(shipped).to(device).eval(), f"shipped ({shipped.name})"
    tag = "full-loss" if loss.perceptual_weight > 0 or loss.disc_start < steps else "short-loss"
    run = Path(out or OUTPUTS_DIR / "nb01") / f"{kind}-f{f}-{dataset}-{steps}steps-b{batch_size}-{tag}"
    if (run / "model" / "config.json").is_file():
        return Autoencoder.from_pretrained(run / "model").to(device).eval(), f"trained here earlier ({run})"
    from .train import train_autoencoder

    ae = Autoencoder(AutoencoderConfig.preset(f"{kind}-f{f}"))
    log.info("training %s-f%d on %s here: %d steps, %s", kind, f, dataset, steps, tag)
    train_autoencoder(ae, train_data, steps=steps, batch_size=batch_size, lr=lr, loss_config=loss, device=device,
                      out_dir=run, checkpoint_every=0, seed=seed, progress=progress)
    estimate_scale_factor(ae, train_data, max_images=256)
    ae.save_pretrained(run / "model")
    return ae.eval(), f"trained now ({steps} steps, {tag})"


def recon_fn(models: dict[tuple[int, str], Autoencoder | None], lpips_net: str | None = "alex") -> ReconFn:
    """The `recon_fn(f, kind, images)` of `widgets.f_panel` over `{(f, kind): autoencoder}`: the deterministic
    reconstruction, the *scaled* latent (unit variance, as the diffusion model sees it; the panel draws channels
    on a fixed [-3, 3] range), mean PSNR and mean LPIPS (None when `lpips_net` is None or the images are not RGB);
    None for an (f, kind) without a model."""

    @torch.no_grad()
    def fn(f: int, kind: str, images: Tensor) -> dict | None:
        ae = models.get((f, kind))
        if ae is None:
            return None
        r = reconstruct(ae, images)
        x, x_hat = r.x.cpu(), r.x_hat.cpu()
        lp = None
        if lpips_net is not None and x.shape[1] == 3:
            lp = float(lpips_distance(x, x_hat, net=lpips_net).mean())
        return {"recon": x_hat, "latent": (r.z * ae.scale_factor).cpu(), "psnr": float(psnr(x, x_hat).mean()),
                "lpips": lp}

    return fn


def effective_log_snr(log_snr: Tensor, latent_std: float) -> Tensor:
    """log SNR of q(z_t | z_0) for data of std `latent_std` under a schedule designed for unit variance:
    SNR_eff(t) = std(z)^2 * alpha_bar_t / (1 - alpha_bar_t), so log SNR_eff = log SNR + 2 log std(z)."""
    return log_snr + 2 * torch.log(torch.as_tensor(latent_std, dtype=log_snr.dtype))


def zoo_rows(table: list[dict], dataset: str) -> list[dict]:
    """`metrics.reconstruction_table` rows in the column order of the paper's model-zoo table (Table 8):
    f, c, latent, compression, rFID, PSNR, SSIM, LPIPS, plus which model and data."""
    keys = ("f", "c", "latent", "compression", "rfid", "psnr", "ssim", "lpips")
    return [{**{k: r[k] for k in keys if k in r}, "model": r["model"], "data": dataset} for r in table]

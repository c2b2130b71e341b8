"""Perceptual compression experiments for notebook 01 (LDM paper §3.1, Table 8): feed the f control of
`widgets.f_panel`, compare SNR in pixel and latent space, and lay out the model-zoo table. The autoencoders
themselves come from their recipes (`ldm_lite.recipes.load_or_train`: shipped when present, else trained here);
`reconstruction_metrics` / `reconstruction_table` judge them on held-out images (PSNR, SSIM, LPIPS, rFID).

    models = {(f, "kl"): recipes.load_or_train(f"ae-kl-f{f}-shapes32")[0] for f in (2, 4, 8, 16)}
    widgets.f_panel(recon_fn(models), images, fs=(1, 2, 4, 8, 16), kinds=("kl", "vq"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .autoencoder import Autoencoder, reconstruct
from .metrics import Features, fid_from_images, lpips_distance, psnr, ssim

log = logging.getLogger(__name__)

ReconFn = Callable[[int, str, Tensor], "dict | None"]


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
    """`reconstruction_table` rows in the column order of the paper's model-zoo table (Table 8):
    f, c, latent, compression, rFID, PSNR, SSIM, LPIPS, plus which model and data."""
    keys = ("f", "c", "latent", "compression", "rfid", "psnr", "ssim", "lpips")
    return [{**{k: r[k] for k in keys if k in r}, "model": r["model"], "data": dataset} for r in table]


@torch.no_grad()
def reconstruction_metrics(ae, images: torch.Tensor, batch_size: int = 64, lpips_net: str | None = "alex",
                           features: Features | None = None) -> dict[str, float]:
    """PSNR / SSIM (/ LPIPS, / rFID with `features`) of ae's deterministic reconstructions of `images`."""
    rows: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "lpips": []}
    recons = []
    for x in images.split(batch_size):
        r = reconstruct(ae, x)
        x_hat, x = r.x_hat.cpu(), x.cpu()
        rows["psnr"].append(psnr(x, x_hat))
        rows["ssim"].append(ssim(x, x_hat))
        if lpips_net is not None and x.shape[1] == 3:
            rows["lpips"].append(lpips_distance(x, x_hat, net=lpips_net))
        recons.append(x_hat)
    out = {k: float(torch.cat(v).mean()) for k, v in rows.items() if v}
    if features is not None:
        out["rfid"] = fid_from_images(images, torch.cat(recons), features)
    return out


def reconstruction_table(models: dict, images: torch.Tensor, features: Features | None = None,
                         lpips_net: str | None = "alex") -> list[dict]:
    """One row per autoencoder, as the paper's model zoo: name, f, c, latent shape, compression, metrics."""
    h, w = images.shape[-2:]
    table = []
    for name, ae in models.items():
        c, lh, lw = ae.latent_shape(h, w)
        row = {"model": name, "f": ae.f, "c": c, "latent": f"{c}x{lh}x{lw}",
               "compression": images.shape[1] * h * w / (c * lh * lw)}
        row.update(reconstruction_metrics(ae, images, lpips_net=lpips_net, features=features))
        table.append(row)
    return table

"""The main job, end to end: autoencoder -> latent diffusion -> samples -> metrics, written under `outputs/`.

    ldm-lite main                      # LDM-4 on shapes 32x32, sized to finish in <= 10 min on 2 CPU cores
    ldm-lite main --train-ae           # also train the autoencoder (else the shipped one is used when present)

`MainConfig.for_device()` picks the sizes: the CPU defaults fit the 10-minute budget; on a GPU the UNet, the batch
and the number of steps grow. Every number it reports comes from the run itself (metrics.json).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import datasets
from .autoencoder import Autoencoder, AutoencoderConfig, estimate_scale_factor
from .checkpoint import write_json
from .evaluation import evaluate_samples
from .ldm import LatentDiffusion
from .paths import PRETRAINED_DIR
from .runtime import on_gpu, pick_device, smoke_mode
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)

SHIPPED_AE = "ae-kl-f4-shapes32"
SHIPPED_LDM = "ldm-kl-f4-shapes32"
SHIPPED_CLASSIFIER = "shapes-classifier-32"


@dataclass
class MainConfig:
    resolution: int = 32  # image side
    n_train: int = 20_000  # shapes items to train on (seed 0); held-out evaluation uses seed 1
    max_shapes: int = 1  # shapes per image (1: the shapes score judges every sample)
    ae_steps: int = 800  # autoencoder steps when it is trained here (reconstruction + KL only, no LPIPS/GAN)
    ae_batch_size: int = 32
    ldm_steps: int = 1_500  # LDM training steps
    max_train_seconds: float | None = 420  # time budget for LDM training (the main job must end in <= 10 min)
    batch_size: int = 64  # LDM batch
    lr: float = 5e-4  # AdamW learning rate (after warm-up)
    warmup: int = 100
    ema: float = 0.995  # EMA decay of the weights used for sampling
    model_channels: int = 64  # UNet width
    n_samples: int = 64  # images sampled for the grid and the shapes score
    sampler: str = "ddim"
    sample_steps: int = 50
    n_eval_real: int = 1_000  # held-out real images for FID on ShapesClassifier features
    seed: int = 0

    @classmethod
    def for_device(cls, device: torch.device, smoke: bool = False) -> MainConfig:
        if smoke:
            return cls(n_train=256, ae_steps=5, ae_batch_size=8, ldm_steps=6, batch_size=8, warmup=2,
                       model_channels=32, n_samples=8, sample_steps=4, n_eval_real=64, max_train_seconds=None)
        if on_gpu(device):
            return cls(n_train=50_000, ae_steps=4_000, ldm_steps=20_000, batch_size=128, lr=2e-4, warmup=500,
                       ema=0.999, model_channels=128, n_samples=256, n_eval_real=5_000, max_train_seconds=None)
        return cls()


def _images(ds, n: int) -> torch.Tensor:
    return torch.stack([ds[i]["image"] for i in range(n)])


def get_autoencoder(cfg: MainConfig, train: bool, out: Path, device: torch.device) -> tuple[Autoencoder, str]:
    """The shipped kl-f4 autoencoder, or one trained here (`train=True` or nothing shipped)."""
    from .losses import AutoencoderLossConfig
    from .train import train_autoencoder

    shipped = PRETRAINED_DIR / SHIPPED_AE
    if not train and shipped.is_dir():
        return Autoencoder.from_pretrained(shipped).to(device), f"shipped ({SHIPPED_AE})"
    log.info("training a kl-f4 autoencoder (%d steps, reconstruction + KL)", cfg.ae_steps)
    ds = datasets.shapes(cfg.resolution, n=cfg.n_train, seed=cfg.seed, max_shapes=cfg.max_shapes)
    ae = Autoencoder(AutoencoderConfig.kl(f=4))
    loss = AutoencoderLossConfig(perceptual_weight=0.0, disc_start=10**9)
    train_autoencoder(ae, ds, steps=cfg.ae_steps, batch_size=cfg.ae_batch_size, lr=4e-4, loss_config=loss,
                      device=device, out_dir=out / "ae", checkpoint_every=max(100, cfg.ae_steps // 4), resume=True,
                      seed=cfg.seed)
    estimate_scale_factor(ae, ds, max_images=512)
    ae.save_pretrained(out / "ae" / "model")
    return ae, f"trained here ({cfg.ae_steps} steps)"


def build_ldm(cfg: MainConfig, ae: Autoencoder) -> LatentDiffusion:
    c = ae.latent_channels
    unet = UNet(UNetConfig.small(in_channels=c, model_channels=cfg.model_channels))
    return LatentDiffusion(ae, unet, schedule="scaled_linear", image_size=cfg.resolution)


def load_classifier():
    from .classifier import ShapesClassifier

    path = PRETRAINED_DIR / SHIPPED_CLASSIFIER
    return ShapesClassifier.from_pretrained(path) if path.is_dir() else None


def run_main(out: Path, train_ae: bool = False, device: str = "auto", config: MainConfig | None = None) -> dict:
    """The README's main job. Writes samples.png, curves.png, metrics.json and the LDM (ldm/model) under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plotting
    from .train import train_ldm

    dev = pick_device(device)
    cfg = config or MainConfig.for_device(dev, smoke_mode())
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    ae, ae_source = get_autoencoder(cfg, train_ae, out, dev)
    ds = datasets.shapes(cfg.resolution, n=cfg.n_train, seed=cfg.seed, max_shapes=cfg.max_shapes)
    ldm = build_ldm(cfg, ae)
    t_train = time.perf_counter()
    hist = train_ldm(ldm, ds, steps=cfg.ldm_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                     ema=cfg.ema, device=dev, out_dir=out / "ldm", checkpoint_every=max(100, cfg.ldm_steps // 5),
                     resume=True, seed=cfg.seed, max_seconds=cfg.max_train_seconds)
    train_s = time.perf_counter() - t_train
    steps_done = int(hist["step"][-1]) + 1 if hist.get("step") else 0
    plotting.curves(hist, keys=["loss"], title="LDM training loss ||eps - eps_theta||^2 (eq. 2)").savefig(
        out / "curves.png", dpi=110)

    t_sample = time.perf_counter()
    samples = ldm.sample(cfg.n_samples, sampler=cfg.sampler, steps=cfg.sample_steps,
                         generator=torch.Generator().manual_seed(cfg.seed)).cpu()
    sample_s = time.perf_counter() - t_sample
    plotting.image_grid(samples[:64], ncols=8, title=f"LDM-4 samples ({cfg.sampler}, {cfg.sample_steps} steps)").savefig(
        out / "samples.png", dpi=110)

    real = _images(datasets.shapes(cfg.resolution, n=cfg.n_eval_real, seed=1, max_shapes=cfg.max_shapes),
                   cfg.n_eval_real)
    metrics = {
        "device": str(dev),
        "autoencoder": ae_source,
        "config": asdict(cfg),
        "final_loss_mean_last_100_steps": _tail_mean(hist["loss"], hist["step"], 100),
        "train_seconds": round(train_s, 1),
        "ldm_steps_done": steps_done,
        "train_steps_per_second": round(steps_done / max(train_s, 1e-9), 3),
        f"sample_seconds_{cfg.n_samples}_{cfg.sampler}{cfg.sample_steps}": round(sample_s, 2),
        **evaluate_samples(samples, real, load_classifier()),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(out / "metrics.json", metrics)
    log.info("main job done in %.0f s: %s", metrics["total_seconds"], {k: v for k, v in metrics.items()
                                                                     if k not in ("config",)})
    return metrics


def _tail_mean(values: list, steps: list, last: int) -> float:
    end = steps[-1]
    tail = [v for v, s in zip(values, steps) if s > end - last]
    return float(sum(tail) / max(1, len(tail)))


def load_or_train_ldm(cfg: MainConfig | None = None, device: str = "auto", out: Path | None = None,
                      prefer_shipped: bool = True) -> tuple[LatentDiffusion, str]:
    """The shipped LDM (`data/pretrained/ldm-kl-f4-shapes32`) when present, else one trained now with `cfg`
    (notebooks use this so they open on a trained model when there is one)."""
    from .paths import OUTPUTS_DIR
    from .train import train_ldm

    dev = pick_device(device)
    shipped = PRETRAINED_DIR / SHIPPED_LDM
    if prefer_shipped and shipped.is_dir():
        return LatentDiffusion.from_pretrained(shipped).to(dev).eval(), f"shipped ({shipped.name})"
    cfg = cfg or MainConfig.for_device(dev, smoke_mode())
    out = out or OUTPUTS_DIR / "notebook-ldm"
    ae, _ = get_autoencoder(cfg, train=False, out=out, device=dev)
    ldm = build_ldm(cfg, ae)
    ds = datasets.shapes(cfg.resolution, n=cfg.n_train, seed=cfg.seed, max_shapes=cfg.max_shapes)
    train_ldm(ldm, ds, steps=cfg.ldm_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup, ema=cfg.ema,
              device=dev, seed=cfg.seed)
    return ldm.eval(), f"trained now ({cfg.ldm_steps} steps; no shipped LDM found)"

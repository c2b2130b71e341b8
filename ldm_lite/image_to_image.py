"""Image-to-image recipes: one concat-conditioned LDM per task (super-resolution, inpainting, semantic synthesis)
on the shipped kl-f4 autoencoder, their training entry point and the shipped-model names (paper §4.3.2-4.5).

    ldm = build("sr")                                  # untrained LatentDiffusion with a SuperResolutionConditioner
    train("sr", degradation="realistic", steps=3000, out_dir="outputs/i2i/sr-realistic", resume=True)
    ldm = load("sr", degradation="bicubic")            # the shipped model (data/pretrained/ldm-sr4-bicubic-shapes32)

Command line (script form of `train`): `python -m ldm_lite.image_to_image sr --degradation realistic --steps 3000`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .autoencoder import Autoencoder
from .datasets import shapes
from .ldm import LatentDiffusion
from .paths import pretrained
from .spatial import (
    MASK_KINDS,
    InpaintingConditioner,
    InpaintingConfig,
    InpaintingMasks,
    SemanticConditioner,
    SuperResolutionConditioner,
    SuperResolutionConfig,
    SuperResolutionPairs,
)
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)

TASKS = ("sr", "inpaint", "semantic")
AUTOENCODER = "ae-kl-f4-shapes32"  # the shipped first stage every image-to-image model here uses


def shipped_name(task: str, degradation: str = "bicubic") -> str:
    """Name under data/pretrained/ of the shipped model for a task."""
    _check_task(task)
    return {"sr": f"ldm-sr4-{degradation}-shapes32", "inpaint": "ldm-inpaint-shapes32",
            "semantic": "ldm-semantic-shapes32"}[task]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown image-to-image task {task!r}; known: {TASKS}")


@dataclass
class ImageToImageConfig:
    task: str = "sr"  # "sr" (×4 super-resolution), "inpaint" or "semantic"
    degradation: str = "bicubic"  # sr only: "bicubic" or "realistic" low-res inputs for training
    resolution: int = 32  # training image side
    n_train: int = 20_000  # shapes items (seed 0; evaluation uses other seeds)
    steps: int = 3_000  # training steps
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 100
    ema: float = 0.995
    model_channels: int = 32  # UNet width (levels 8x8 and 4x4 of the f=4 latent)
    seed: int = 0


def build(task: str, autoencoder: Autoencoder | None = None, model_channels: int = 32,
          resolution: int = 32) -> LatentDiffusion:
    """An untrained concat-conditioned LatentDiffusion for `task` on `autoencoder` (default: the shipped kl-f4)."""
    _check_task(task)
    ae = autoencoder if autoencoder is not None else Autoencoder.from_pretrained(pretrained(AUTOENCODER))
    if task == "sr":
        cond = SuperResolutionConditioner(SuperResolutionConfig(factor=4, channels=ae.config.in_channels))
    elif task == "inpaint":
        cond = InpaintingConditioner(InpaintingConfig(latent_channels=ae.latent_channels))
    else:
        cond = SemanticConditioner()
    c = ae.latent_channels
    unet = UNetConfig.small(in_channels=c, model_channels=model_channels, concat_channels=cond.concat_channels,
                            attention_resolutions=(2,), norm_groups=16)
    # cond_drop_prob 0: these models are always given their condition (no classifier-free guidance needed)
    return LatentDiffusion(ae, UNet(unet), cond, "scaled_linear", image_size=resolution, cond_drop_prob=0.0)


def training_data(task: str, degradation: str = "bicubic", resolution: int = 32, n: int = 20_000,
                  seed: int = 0) -> Dataset:
    """The `shapes` items a task trains on, with its condition field added (lowres / inpaint_mask; semantic
    synthesis reads the dataset's own `mask`)."""
    _check_task(task)
    ds = shapes(resolution=resolution, n=n, seed=seed)
    if task == "sr":
        return SuperResolutionPairs(ds, degradation=degradation, factor=4, seed=seed)
    if task == "inpaint":
        return InpaintingMasks(ds, kinds=MASK_KINDS, seed=seed)
    return ds


def train(task: str, out_dir: str | os.PathLike, *, degradation: str = "bicubic", steps: int = 3_000,
          resume: bool = True, device: str = "auto", config: ImageToImageConfig | None = None,
          max_seconds: float | None = None, progress: bool = True) -> LatentDiffusion:
    """Train the model for `task` (resumable: `<out_dir>/checkpoint`), save it to `<out_dir>/model` with
    `train_config.json` and `history.json` beside it; returns the trained model (EMA weights, eval mode)."""
    from .train import train_ldm

    cfg = config or ImageToImageConfig(task=task, degradation=degradation, steps=steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ldm = build(cfg.task, model_channels=cfg.model_channels, resolution=cfg.resolution)
    data = training_data(cfg.task, cfg.degradation, cfg.resolution, cfg.n_train, cfg.seed)
    t0 = time.perf_counter()
    hist = train_ldm(ldm, data, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                     ema=cfg.ema, device=device, out_dir=out, checkpoint_every=max(100, cfg.steps // 10),
                     resume=resume, seed=cfg.seed, progress=progress, max_seconds=max_seconds)
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "wall_s_last_session":
                                                       round(time.perf_counter() - t0, 1)}, indent=2))
    (out / "history.json").write_text(json.dumps(hist))
    return ldm.eval()


def load(task: str, degradation: str = "bicubic", path: str | os.PathLike | None = None) -> LatentDiffusion:
    """The shipped model for `task` (or the one saved at `path`), in eval mode."""
    return LatentDiffusion.from_pretrained(path or pretrained(shipped_name(task, degradation)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="train an image-to-image LDM on shapes (super-resolution, "
                                "inpainting, semantic synthesis)")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--degradation", default="bicubic", choices=("bicubic", "realistic"))
    p.add_argument("--steps", type=int, default=3_000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="default: outputs/i2i/<task>[-<degradation>]")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--max-seconds", type=float, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if a.threads:
        torch.set_num_threads(a.threads)
    name = a.task + (f"-{a.degradation}" if a.task == "sr" else "")
    out = a.out or f"outputs/i2i/{name}"
    cfg = ImageToImageConfig(task=a.task, degradation=a.degradation, steps=a.steps, batch_size=a.batch_size)
    train(a.task, out, config=cfg, max_seconds=a.max_seconds, progress=True)


if __name__ == "__main__":
    main()

"""`ShapesSegmenter`: a small fully convolutional net that predicts the `shapes` class of every pixel.

It is the judge of *mask agreement* (semantic synthesis, layouts): segment a generated image and compare the map
with the one that was asked for.

    seg = ll.segmenter.load_segmenter()                 # the shipped one (data/pretrained/shapes-segmenter-32)
    seg, _ = ll.recipes.load_or_train("shapes-segmenter-32")   # ... or, when it is missing, one trained now
    pred = seg.predict(images)                          # images (B, 3, H, W) in [-1, 1] -> (B, H, W) long
    scores = ll.segmenter.iou_scores(pred, target_map)  # {"mean_iou", "pixel_accuracy", "iou": per class}

Classes are those of `Shapes.mask`: 0 = background, 1 + kind index (circle, square, triangle, diamond, cross,
star). Trained on `shapes` images (1..3 shapes, black background, the default dataset) with mild blur and noise so
that it also reads slightly soft generated images; validated on held-out seeds (`evaluate_segmenter`). Fully
convolutional: it segments any side divisible by 4 (e.g. a 64×64 canvas of shapes at the 32×32 training scale).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import Pretrained
from .datasets import HELDOUT_SEED, KINDS, shapes
from .fit import StepContext, fit
from .paths import pretrained
from .runtime import pick_device

log = logging.getLogger(__name__)

CLASSES = ("background", *KINDS)  # index = value of a shapes mask
SHIPPED = "shapes-segmenter-32"


@dataclass
class ShapesSegmenterConfig:
    num_classes: int = len(CLASSES)  # K: background + 6 kinds
    width: int = 16  # channels at full resolution (x2 per level, 3 levels)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU())


class ShapesSegmenter(Pretrained, nn.Module):
    """x (B, 3, H, W) in [-1, 1] -> logits (B, K, H, W): a three-level UNet (H, H/2, H/4) with skip connections;
    the H/4 level sees ~30 pixels, more than the largest shape of a 32×32 image."""

    config_class = ShapesSegmenterConfig

    def __init__(self, config: ShapesSegmenterConfig | None = None):
        super().__init__()
        self.config = c = config or ShapesSegmenterConfig()
        w = c.width
        self.down1, self.down2, self.mid = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.up2, self.up1 = _block(4 * w + 2 * w, 2 * w), _block(2 * w + w, w)
        self.head = nn.Conv2d(w, c.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"expected RGB images (B, 3, H, W) with H and W divisible by 4, got {tuple(x.shape)}")
        h1 = self.down1(x)  # (B, w, H, W)
        h2 = self.down2(F.max_pool2d(h1, 2))  # (B, 2w, H/2, W/2)
        h3 = self.mid(F.max_pool2d(h2, 2))  # (B, 4w, H/4, W/4)
        u2 = self.up2(torch.cat([F.interpolate(h3, scale_factor=2.0, mode="nearest"), h2], 1))
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0, mode="nearest"), h1], 1))
        return self.head(u1)  # (B, K, H, W)

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The most likely class per pixel: (B, 3, H, W) -> (B, H, W) long, on the CPU."""
        self.eval()
        dev = next(self.parameters()).device
        return torch.cat([self(b.to(dev)).argmax(1).cpu() for b in x.split(batch_size)])


def load_segmenter(path: str | None = None, map_location: str | torch.device = "cpu") -> ShapesSegmenter:
    """The shipped segmenter (data/pretrained/shapes-segmenter-32) or the one saved at `path`, in eval mode."""
    return ShapesSegmenter.from_pretrained(path or pretrained(SHIPPED), map_location).eval()


# --------------------------------------------------------------------------------------------- scores
def iou_scores(pred: Tensor, target: Tensor, num_classes: int = len(CLASSES)) -> dict:
    """Mask agreement of class maps pred, target (B, H, W): IoU_k = |pred=k ∧ target=k| / |pred=k ∨ target=k|
    summed over the whole batch; `mean_iou` averages the classes that occur in either map (the usual mIoU);
    `foreground_iou` counts every non-background class as one; `pixel_accuracy` is the share of equal pixels."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"expected two class maps (B, H, W) of the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    pred, target = pred.long().flatten(), target.long().flatten()
    conf = torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    fg_p, fg_t = pred > 0, target > 0
    return {
        "mean_iou": float(iou[present].mean()),
        "foreground_iou": float((fg_p & fg_t).sum() / (fg_p | fg_t).sum().clamp_min(1)),
        "pixel_accuracy": float((pred == target).double().mean()),
        "iou": {CLASSES[k] if num_classes == len(CLASSES) else str(k): (None if not present[k] else float(iou[k]))
                for k in range(num_classes)},
        "n_pixels": int(target.numel()),
    }


# --------------------------------------------------------------------------------------------- training
def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Half the batch softened like generated images: a 3x3 blur of random strength and Gaussian noise."""
    b = x.shape[0]
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    a = torch.rand(b, 1, 1, 1, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) < 0.5)
    noisy = (1 - a) * x + a * blurred + torch.randn(x.shape, generator=g) * 0.05 * (a > 0)
    return noisy.clamp(-1, 1)


def _images_and_maps(ds, start: int, n: int) -> tuple[Tensor, Tensor]:
    items = [ds[i] for i in range(start, start + n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items])


def train_segmenter(steps: int = 1200, batch_size: int = 32, resolution: int = 32, seed: int = 0, lr: float = 3e-3,
                    width: int = 16, device: str | torch.device = "auto", out_dir: str | os.PathLike | None = None,
                    resume: bool | str | os.PathLike | None = None,
                    progress: bool = True) -> tuple[ShapesSegmenter, dict[str, list]]:
    """Train on `shapes(resolution, seed)` (per-pixel cross-entropy, one-cycle LR); returns the model (eval mode)
    and its history; resumable from `out_dir` (the one training loop, `ldm_lite.fit`). Held-out scores:
    `evaluate_segmenter`."""
    device = pick_device(device)
    torch.manual_seed(seed)
    model = ShapesSegmenter(ShapesSegmenterConfig(width=width)).to(device)
    ds = shapes(resolution=resolution, n=steps * batch_size, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)

    def step_fn(ctx: StepContext) -> dict[str, float]:
        x, y = _images_and_maps(ds, ctx.step * batch_size, batch_size)  # one pass over fresh scenes
        loss = F.cross_entropy(model(_augment(x, g).to(device)), y.to(device))
        ctx.check(loss)
        ctx.optimize("model", loss)
        sched.step()
        return {"loss": loss.item()}

    history = fit(model, step_fn, steps=steps, optimizers={"model": opt}, dataset_size=len(ds), batch_size=batch_size,
                  seed=seed, generators={"augment": g}, schedulers={"lr": sched}, out_dir=out_dir, resume=resume,
                  log_every=10, progress=progress, desc="shapes segmenter")
    return model.eval(), history


@torch.no_grad()
def evaluate_segmenter(model: ShapesSegmenter, n: int = 1000, seed: int = HELDOUT_SEED,
                       resolution: int = 32) -> dict:
    """Pixel accuracy and mean IoU on `n` held-out `shapes` images (a seed training did not use)."""
    x, y = _images_and_maps(shapes(resolution=resolution, n=n, seed=seed), 0, n)
    out = iou_scores(model.predict(x), y)
    out.update({"n": n, "seed": seed, "resolution": resolution})
    return out


def validate(model: ShapesSegmenter, n_eval: int = 1000) -> dict:
    """Held-out mask agreement of a segmenter: 32×32 images and 64×64 canvases (a fifth as many)."""
    return {"held_out_32": evaluate_segmenter(model, n=n_eval, resolution=32),
            "held_out_64_canvas": evaluate_segmenter_canvas(model, n=max(1, n_eval // 5))}


@torch.no_grad()
def evaluate_segmenter_canvas(model: ShapesSegmenter, n: int = 200, seed: int = HELDOUT_SEED) -> dict:
    """Pixel accuracy and mean IoU on held-out 64×64 canvas scenes (shapes at the 32×32 scale, up to 12 of them)."""
    x, y = _images_and_maps(shapes(resolution=64, n=n, seed=seed, canvas=2), 0, n)
    out = iou_scores(model.predict(x), y)
    out.update({"n": n, "seed": seed, "resolution": 64, "canvas": 2})
    return out

"""`ShapesClassifier`: one small CNN that judges images of the `shapes` dataset.

It serves every shapes score in the kit (DESIGN: Metrics):
- *recognisable*: does a generated image show one valid single-colour shape of a known kind and colour?
  A `valid` head is trained against corrupted images (two shapes blended, blurred blobs, two-coloured shapes,
  smooth noise), and the kind and colour heads must be confident.
- *conditioning accuracy*: do the predicted kind / colour / size match what was asked for?
- *FID features*: its penultimate layer (`features(x)`, 128-d) replaces Inception offline (FID "on
  ShapesClassifier features").

Trained on single-shape images (`shapes(max_shapes=1)`), i.e. it reads the first shape's attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import Pretrained
from .datasets import COLOR_NAMES, HELDOUT_SEED, KINDS, SIZE_NAMES, shapes

log = logging.getLogger(__name__)

HEADS = {"kind": len(KINDS), "color": len(COLOR_NAMES), "size": len(SIZE_NAMES), "valid": 2}


@dataclass
class ShapesClassifierConfig:
    resolution: int = 32  # inputs are resized to this side before the CNN
    width: int = 32  # channels of the first conv level (x2 per level)
    feature_dim: int = 128  # penultimate features (used for FID)


class ShapesClassifier(Pretrained, nn.Module):
    """x (B, 3, H, W) in [-1, 1] -> logits per head {kind, color, size, valid}; `features(x)` (B, feature_dim)."""

    config_class = ShapesClassifierConfig

    def __init__(self, config: ShapesClassifierConfig | None = None):
        super().__init__()
        self.config = c = config or ShapesClassifierConfig()
        w = c.width

        def level(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(level(3, w), level(w, 2 * w), level(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * w, c.feature_dim), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(c.feature_dim, n) for k, n in HEADS.items()})

    def _prepare(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(x.shape)}")
        r = self.config.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return x

    def features(self, x: Tensor) -> Tensor:
        return self.body(self._prepare(x))  # (B, feature_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.features(x)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def judge(self, x: Tensor, threshold: float = 0.5, batch_size: int = 256) -> dict[str, Tensor]:
        """Predictions and confidences per image; `recognisable` = valid and confident about kind and colour."""
        self.eval()
        outs = [self(x[i:i + batch_size].to(next(self.parameters()).device)) for i in range(0, len(x), batch_size)]
        logits = {k: torch.cat([o[k] for o in outs]).float().cpu() for k in HEADS}
        probs = {k: v.softmax(-1) for k, v in logits.items()}
        res = {k: p.argmax(-1) for k, p in probs.items() if k != "valid"}
        res.update({f"{k}_conf": p.max(-1).values for k, p in probs.items() if k != "valid"})
        res["valid_prob"] = probs["valid"][:, 1]
        res["recognisable"] = (res["valid_prob"] > threshold) & (res["kind_conf"] > threshold) & (
            res["color_conf"] > threshold)
        return res


# --------------------------------------------------------------------------------------------- training data
def corrupt(x: Tensor, generator: torch.Generator) -> Tensor:
    """Invalid images for the `valid` head: each of x (B,3,H,W) becomes one of four corruptions."""
    b, _, h, w = x.shape
    kind = torch.randint(4, (b,), generator=generator)
    other = x[torch.randperm(b, generator=generator)]
    blend = 0.5 * (x + other)  # two shapes ghosted on top of each other
    blurred = F.interpolate(F.avg_pool2d(x, 4), size=(h, w), mode="bilinear", align_corners=False)  # a blob
    half = torch.zeros(1, 1, h, w)
    half[..., w // 2:] = 1
    recolour = other.mean(dim=(2, 3), keepdim=True).expand_as(x) * (x > -0.9).float() + x * (x <= -0.9).float()
    two_colour = x * (1 - half) + recolour * half  # a shape in two colours
    noise = F.interpolate(torch.rand(b, 3, 4, 4, generator=generator) * 2 - 1, size=(h, w), mode="bicubic",
                          align_corners=False).clamp(-1, 1)
    options = torch.stack([blend, blurred, two_colour, noise])  # (4, B, 3, H, W)
    return options[kind, torch.arange(b)]


def labelled_batch(ds, idx: Tensor) -> tuple[Tensor, Tensor]:
    items = [ds[int(i)] for i in idx]
    return torch.stack([it["image"] for it in items]), torch.stack([it["attrs"][0] for it in items])


@torch.no_grad()
def evaluate_classifier(model: ShapesClassifier, n: int = 2000, seed: int = HELDOUT_SEED,
                        resolution: int = 32) -> dict:
    """Accuracy per head on held-out seeds, and the rate at which real and corrupted images are `recognisable`."""
    ds = shapes(resolution=resolution, n=n, seed=seed, max_shapes=1)
    x, attrs = labelled_batch(ds, torch.arange(n))
    j = model.judge(x)
    bad = model.judge(corrupt(x, torch.Generator().manual_seed(seed)))
    return {
        "kind_acc": float((j["kind"] == attrs[:, 0]).float().mean()),
        "color_acc": float((j["color"] == attrs[:, 1]).float().mean()),
        "size_acc": float((j["size"] == attrs[:, 2]).float().mean()),
        "recognisable_real": float(j["recognisable"].float().mean()),
        "recognisable_corrupted": float(bad["recognisable"].float().mean()),
        "n": n,
        "seed": seed,
    }


@torch.no_grad()
def shapes_score(images: Tensor, classifier: ShapesClassifier, threshold: float = 0.5) -> dict:
    """The shapes score of generated images (B, 3, H, W): the share the classifier finds recognisable (one valid
    single-colour shape of a known kind and colour), and how the predicted kinds and colours are spread."""
    j = classifier.judge(images, threshold)
    ok = j["recognisable"]
    kinds = torch.bincount(j["kind"][ok], minlength=len(KINDS)).tolist()
    colors = torch.bincount(j["color"][ok], minlength=len(COLOR_NAMES)).tolist()
    return {
        "recognisable": float(ok.float().mean()),
        "n": len(images),
        "kinds": dict(zip(KINDS, kinds)),
        "colors": dict(zip(COLOR_NAMES, colors)),
    }


# --------------------------------------------------------------------------------------------- MNIST judge
@dataclass
class MNISTClassifierConfig:
    resolution: int = 32  # inputs are resized to this side before the CNN
    width: int = 32  # channels of the first conv level (x2 per level)
    feature_dim: int = 128  # penultimate features (FID on MNIST samples)


class MNISTClassifier(Pretrained, nn.Module):
    """Judges class-conditional MNIST samples: x (B, C, H, W) in [-1, 1] (C = 1 or 3, channels averaged) ->
    digit logits (B, 10); `features(x)` (B, feature_dim) for FID. Validated on held-out digits before use."""

    config_class = MNISTClassifierConfig

    def __init__(self, config: MNISTClassifierConfig | None = None):
        super().__init__()
        self.config = c = config or MNISTClassifierConfig()
        w = c.width

        def level(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(level(1, w), level(w, 2 * w), level(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * w, c.feature_dim), nn.SiLU())
        self.head = nn.Linear(c.feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected digit images (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.mean(1, keepdim=True)
        r = self.config.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Predicted digit per image (B,)."""
        self.eval()
        dev = next(self.parameters()).device
        return torch.cat([self(x[i:i + batch_size].to(dev)).argmax(-1).cpu() for i in range(0, len(x), batch_size)])

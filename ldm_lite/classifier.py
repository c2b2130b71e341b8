"""`ShapesClassifier`: one small CNN that judges images of the `shapes` dataset.

It serves every shapes score in the kit (DESIGN: Metrics):
- *recognisable*: is a generated image a clean sample of the training data (one shape on a plain black background,
  `shapes(max_shapes=1)`) showing a known kind and colour? A `valid` head is trained against corrupted images (two
  shapes blended, blurred blobs, two-coloured shapes, smooth noise), and the kind and colour heads must be confident.
  The *judge* (`data/pretrained/shapes-judge-32`, `recipes.get_classifier()`) adds a `CleanImageGate`: a separate
  small CNN on the pixels, trained against what that data cannot contain (`unclean`: pure noise of several kinds,
  blank images, shapes on a noisy background, several or overlapping shapes), so noise cannot pass as a 'cross'.
  The shapes-with-`background="gradient"|"noise"` variants are out of its scope: it rejects them too.
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
    gate_width: int = 0  # channels of the CleanImageGate's first level (0: no gate, the judge before issue 24)


class CleanImageGate(nn.Module):
    """x (B, 3, r, r) -> logits (B, 2) of "a clean sample of `shapes(max_shapes=1)`" (class 1) against anything
    else. Separate from the classifier's body, whose features (FID) stay frozen. Four conv levels (r -> r/8: at
    r = 32 a receptive field wider than the image, to see a second shape), then average- and max-pooled features,
    so one noisy patch is enough to reject an image."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width

        def level(cin: int, cout: int, pool: bool = True) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
                      nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU()]
            return [*layers, nn.MaxPool2d(2)] if pool else layers

        self.body = nn.Sequential(*level(3, w), *level(w, 2 * w), *level(2 * w, 4 * w), *level(4 * w, 4 * w, False))
        self.head = nn.Linear(8 * w, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)  # (B, 4w, r/8, r/8)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))  # (B, 2)


class ShapesClassifier(Pretrained, nn.Module):
    """x (B, 3, H, W) in [-1, 1] -> logits per head {kind, color, size, valid} (+ `clean` from the gate, when the
    config has one); `features(x)` (B, feature_dim), which the gate never changes."""

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
        self.gate = CleanImageGate(c.gate_width) if c.gate_width else None

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
        x = self._prepare(x)
        h = self.body(x)
        out = {k: head(h) for k, head in self.heads.items()}
        if self.gate is not None:
            out["clean"] = self.gate(x)
        return out

    @torch.no_grad()
    def judge(self, x: Tensor, threshold: float = 0.5, batch_size: int = 256) -> dict[str, Tensor]:
        """Predictions and confidences per image; `recognisable` = valid, clean (with a gate) and confident about
        kind and colour."""
        self.eval()
        outs = [self(x[i:i + batch_size].to(next(self.parameters()).device)) for i in range(0, len(x), batch_size)]
        logits = {k: torch.cat([o[k] for o in outs]).float().cpu() for k in outs[0]}
        probs = {k: v.softmax(-1) for k, v in logits.items()}
        res = {k: probs[k].argmax(-1) for k in ("kind", "color", "size")}
        res.update({f"{k}_conf": probs[k].max(-1).values for k in ("kind", "color", "size")})
        res["valid_prob"] = probs["valid"][:, 1]
        res["recognisable"] = (res["valid_prob"] > threshold) & (res["kind_conf"] > threshold) & (
            res["color_conf"] > threshold)
        if "clean" in probs:
            res["clean_prob"] = probs["clean"][:, 1]
            res["recognisable"] &= res["clean_prob"] > threshold
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


UNCLEAN = ("saturated_noise", "gaussian_noise", "uniform_noise", "blank", "noisy_background", "overlapping",
           "several_shapes", "corrupted")  # what `unclean` makes: one share of its output each


def shape_alpha(x: Tensor) -> Tensor:
    """Coverage (B, 1, H, W) in [0, 1] of the shape(s) of images (B, 3, H, W) on the black background."""
    m = ((x + 1) / 2).amax(1, keepdim=True)
    return m / m.amax((2, 3), keepdim=True).clamp(min=1e-3)


def unclean(x: Tensor, several: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """What `shapes(max_shapes=1)` cannot contain, made from its images x (B, 3, H, W) and images `several`
    (B', 3, H, W) of 2-3 shapes: one batch (B, 3, H, W) per kind of `UNCLEAN` (`several_shapes` is `several`),
    strengths drawn per image. The `CleanImageGate` trains on these."""
    b, _, h, w = x.shape

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator)

    def grey_sometimes(n: Tensor) -> Tensor:  # 30% the same noise in every channel
        return torch.where(u(b, 1, 1, 1) < 0.3, n[:, :1].expand_as(n), n)

    n = grey_sometimes(torch.randn(b, 3, h, w, generator=generator))
    out = {"saturated_noise": (n * (1 + 2 * u(b, 1, 1, 1))).clamp(-1, 1),  # std 1-3, clamped to [-1, 1]
           "gaussian_noise": ((u(b, 1, 1, 1) * 1.6 - 0.8) + (0.15 + 0.85 * u(b, 1, 1, 1)) * n).clamp(-1, 1)}
    lo = u(b, 1, 1, 1) * 1.5 - 1
    hi = (lo + 0.3 + 1.7 * u(b, 1, 1, 1)).clamp(max=1)
    out["uniform_noise"] = lo + (hi - lo) * grey_sometimes(u(b, 3, h, w))
    out["blank"] = grey_sometimes(u(b, 3, 1, 1) * 2 - 1).expand(b, 3, h, w).clone()
    sigma = 0.12 + 0.88 * u(b, 1, 1, 1)  # visible noise; half on the background only, half on the whole image
    noisy = (x + sigma * torch.randn(b, 3, h, w, generator=generator)).clamp(-1, 1)
    a = shape_alpha(x)
    out["noisy_background"] = torch.where(u(b, 1, 1, 1) < 0.5, x * a + noisy * (1 - a), noisy)
    other = x[torch.randperm(b, generator=generator)]
    out["overlapping"] = overlapping(x, other, 0.4 + 0.6 * u(b), u(b) * 2 * torch.pi)  # both shapes partly visible
    out["several_shapes"] = several
    out["corrupted"] = corrupt(x, generator)
    return out


def judge_probes(resolution: int = 32, n: int = 300, seed: int = HELDOUT_SEED) -> dict[str, Tensor]:
    """Held-out images (n, 3, r, r) per probe that validate a judge: `real` single shapes (must pass) and what the
    default data cannot contain (must fail), including kinds `unclean` never makes (salt-and-pepper, Laplace and
    blocky noise). `noisy_background_0.35`: a real shape on black plus Gaussian noise of std 0.35 on the
    background; `noisy_image_0.35`: on every pixel."""
    real = _images(shapes(resolution=resolution, n=n, seed=seed, max_shapes=1))
    several = several_shapes(resolution, n, seed)
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, resolution, resolution)
    a = shape_alpha(real)
    noisy = (real + 0.35 * torch.randn(shape, generator=g)).clamp(-1, 1)
    angle = torch.rand(n, generator=g) * 2 * torch.pi
    u = torch.rand(shape, generator=g) - 0.5
    return {
        "real": real,
        "saturated_noise": (2 * torch.randn(shape, generator=g)).clamp(-1, 1),
        "clamped_gaussian_noise": torch.randn(shape, generator=g).clamp(-1, 1),
        "uniform_noise": torch.rand(shape, generator=g) * 2 - 1,
        "salt_and_pepper": torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0),
        "laplace_noise": (-0.5 * u.sign() * torch.log1p(-2 * u.abs())).clamp(-1, 1),  # Laplace(0, 0.5)
        "blocky_noise": F.interpolate(torch.rand(n, 3, resolution // 4, resolution // 4, generator=g) * 2 - 1,
                                      size=(resolution, resolution), mode="nearest"),
        "blank_black": -torch.ones(shape),
        "blank_grey": torch.zeros(shape),
        "blank_white": torch.ones(shape),
        "blank_colour": (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1).expand(shape).clone(),
        "noisy_background_0.35": real * a + noisy * (1 - a),
        "noisy_image_0.35": noisy,
        "overlapping_shapes": overlapping(real, real.flip(0), torch.full((n,), 0.7), angle),
        "several_shapes": several,
    }


def _images(ds) -> Tensor:
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def several_shapes(resolution: int, n: int, seed: int) -> Tensor:
    """n images (n, 3, r, r) of `shapes` holding 2 or 3 shapes (a crowded draw that kept only one is skipped)."""
    ds = shapes(resolution=resolution, n=2 * n, seed=seed, min_shapes=2, max_shapes=3)
    keep = [i for i in range(len(ds)) if int((ds[i]["attrs"][:, 0] >= 0).sum()) >= 2][:n]
    return torch.stack([ds[i]["image"] for i in keep])


def overlapping(x: Tensor, other: Tensor, distance: Tensor, angle: Tensor) -> Tensor:
    """x (B, 3, H, W) with `other`'s shape drawn over it, centred `distance` (B,) x (r_x + r_other) away from the
    centre of x's shape in direction `angle` (B,) (radians), r from each shape's area: a partly hidden shape."""
    a = shape_alpha(torch.cat([x, other]))[:, 0]  # (2B, H, W)
    rows, cols = torch.arange(x.shape[-2]).float(), torch.arange(x.shape[-1]).float()
    area = a.sum((1, 2)).clamp(min=1e-6)
    centre = torch.stack([(a.sum(2) * rows).sum(1) / area, (a.sum(1) * cols).sum(1) / area], 1)  # (2B, 2) row, col
    radius = (area / torch.pi).sqrt()
    b = len(x)
    d = distance * (radius[:b] + radius[b:])
    target = centre[:b] + torch.stack([d * torch.sin(angle), d * torch.cos(angle)], 1)
    shift = (target - centre[b:]).round().long()
    moved = torch.stack([torch.roll(o, shifts=(int(dy), int(dx)), dims=(1, 2)) for o, (dy, dx) in zip(other, shift)])
    ao = shape_alpha(moved)
    return x * (1 - ao) + moved * ao


@torch.no_grad()
def evaluate_judge(model: ShapesClassifier, n: int = 300, seed: int = HELDOUT_SEED,
                   resolutions: tuple[int, ...] = (32, 64)) -> dict[str, float]:
    """The share of each `judge_probes` set that `model` finds recognisable, per resolution ("real_32", ...)."""
    out: dict[str, float] = {}
    for r in resolutions:
        for name, images in judge_probes(r, n, seed).items():
            out[f"{name}_{r}"] = float(model.judge(images)["recognisable"].float().mean())
    return out


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

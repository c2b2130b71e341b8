"""Judging and showing the image-to-image models (paper §4.3.2-4.5): super-resolution, inpainting and semantic
synthesis, each a concat-conditioned LDM on the shipped kl-f4 autoencoder. They are built and trained by their
recipes (`ldm_lite.recipes`; `SHIPPED` maps a task to its recipe):

    ldm, _ = recipes.load_or_train("ldm-sr4-realistic-shapes32")   # shipped, else trained here
    ldm-lite train ldm-sr4-realistic-shapes32 --steps 3000            # the same from a shell (resumable)

Evaluation (the issue's studies; `benchmarks/bench_image_to_image.py` runs them and writes the tables):
- `sr_study`: the paper's degradation finding, PSNR / SSIM / LPIPS / FID (ShapesClassifier features) of each SR
  model on bicubic and on realistic low-res inputs, beside bicubic up-sampling;
- `inpainting_study`: PSNR outside the mask (decoded output vs the input; the autoencoder's reconstruction as the
  reference) and how often the filled region is a valid shape or clean background, per mask kind;
- `semantic_study`: mask agreement (mIoU of `ShapesSegmenter` on the samples vs the requested map) at 32×32 and
  on larger canvases (sampling beyond the training size).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import recipes
from .datasets import DEGRADATIONS, HELDOUT_SEED, KINDS, MASK_KINDS, SIZE_NAMES, fixed_degradation, inpaint_mask, shapes
from .errors import UsageError
from .evaluation import classifier_features, sample_many
from .ldm import LatentDiffusion
from .metrics import fid, lpips_distance, psnr, ssim
from .segmenter import iou_scores
from .spatial import sdedit

log = logging.getLogger(__name__)

SHIPPED = {"sr": "ldm-sr4-bicubic-shapes32", "sr-realistic": "ldm-sr4-realistic-shapes32",
           "inpaint": "ldm-inpaint-shapes32", "semantic": "ldm-semantic-shapes32"}  # recipes (and shipped names)


# ============================================================================================== demos (notebook 06)
SR_CONTROLS = ("bicubic", "blur", "noise", "jpeg", "realistic")  # degradation kinds of the notebook's control


def sr_degrade(hr: Tensor, kind: str, strength: float = 0.5, seed: int = 0) -> Tensor:
    """A ×4 low-res version of hr (B, 3, H, W) for a degradation control: "bicubic" (strength unused), "blur"
    (σ = 0.3 + 2.2·strength before down-sampling), "noise" (std 0.2·strength), "jpeg" (quality 95 - 75·strength)
    or "realistic" (the random training pipeline, drawn from seed)."""
    if kind not in SR_CONTROLS:
        raise UsageError(f"unknown degradation {kind!r}; known: {SR_CONTROLS}")
    if kind == "realistic":
        return degrade(hr, "realistic", seed)
    opts = {"bicubic": {}, "blur": {"blur": 0.3 + 2.2 * strength}, "noise": {"noise": 0.2 * strength},
            "jpeg": {"jpeg": int(round(95 - 75 * strength))}}[kind]
    return fixed_degradation(hr, 4, generator=torch.Generator().manual_seed(seed), **opts)


@torch.no_grad()
def sr_pictures(hr: Tensor, lowres: Tensor, models: dict[str, LatentDiffusion], steps: int = 25,
                seed: int = 0) -> tuple[dict[str, Tensor], str]:
    """For one image: the pictures of a super-resolution panel (high-res, low-res, bicubic, each model) and a
    readout of PSNR / LPIPS against the high-res image. hr (1, 3, H, W), lowres (1, 3, H/4, W/4)."""

    outs = {"bicubic x4": F.interpolate(lowres, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)}
    for name, ldm in models.items():
        outs[name] = _sample(ldm, {"lowres": lowres}, steps, seed)
    text = " &nbsp; ".join(f"{k}: PSNR {float(psnr(v, hr)):.1f} dB, LPIPS {float(lpips_distance(v, hr)):.3f}"
                           for k, v in outs.items())
    pics = {"high-res (target)": hr[0], "low-res input": F.interpolate(lowres, scale_factor=4, mode="nearest")[0]}
    return {**pics, **{k: v[0] for k, v in outs.items()}}, text


@torch.no_grad()
def inpaint_pictures(ldm: LatentDiffusion, image: Tensor, mask: Tensor, steps: int = 25,
                     seed: int = 0) -> tuple[dict[str, Tensor], str]:
    """Pictures of an inpainting panel for image (1, 3, H, W) and mask (1, H, W) (1 = fill): the masked input,
    the decoded output, the output of replacement sampling (known latent cells kept at every step), the output with
    the known pixels pasted back; readout: PSNR outside the mask."""
    m = mask.float()
    batch = {"image": image, "inpaint_mask": m}
    out = _sample(ldm, batch, steps, seed)
    kept = _sample(ldm, batch, steps, seed, keep_known=True)
    rec = ldm.decode(ldm.autoencoder.to_latent(image.to(ldm.device), sample=False)).cpu()
    pasted = out * m[:, None] + image * (1 - m[:, None])
    text = (f"PSNR outside the mask: output {float(_psnr_where(out, image, 1 - m)):.1f} dB, known latents kept "
            f"{float(_psnr_where(kept, image, 1 - m)):.1f} dB, autoencoder reconstruction "
            f"{float(_psnr_where(rec, image, 1 - m)):.1f} dB, pasted: exact &nbsp; hole {float(m.mean()):.0%} of the image")
    masked = image * (1 - m[:, None]) + m[:, None] * 0.0
    return {"input": image[0], "masked input (grey = fill)": masked[0], "output D(z_0)": out[0],
            "known latents kept": kept[0], "known pixels pasted back": pasted[0]}, text


def scene_map(layout: list[tuple[str, float, float, str]], side: int = 32, canvas: int = 1) -> Tensor:
    """A `shapes` class map (side, side) from a layout [(kind, x, y, size), ...]: kind in KINDS, centre x, y in
    [0, 1] of the image, size "small" or "large" (at the scale of a `shapes(side // canvas)` image); later shapes
    are drawn on top. What a learner edits in the semantic-synthesis panel."""
    ds = shapes(resolution=side, n=1, canvas=canvas)
    rows = []
    for kind, x, y, size in layout:
        if kind not in KINDS or size not in SIZE_NAMES:
            raise UsageError(f"a layout entry is (kind, x, y, size) with kind in {KINDS} and size in {SIZE_NAMES}; "
                             f"got {(kind, x, y, size)}")
        rows.append((KINDS.index(kind), 0, SIZE_NAMES.index(size), int(x * 1000), int(y * 1000)))
    _, seg = ds.render(np.array(rows, dtype=np.int64).reshape(-1, 5), np.random.default_rng(0))
    return torch.from_numpy(seg)


@torch.no_grad()
def semantic_pictures(ldm: LatentDiffusion, seg: Tensor, segmenter: Any = None, steps: int = 25,
                      seed: int = 0) -> tuple[dict[str, Tensor], str]:
    """Pictures of a semantic-synthesis panel for a map (H, W): the map, the sample of that size and (with a
    segmenter) its segmentation; readout: mIoU between requested and generated shapes."""

    out = _sample(ldm, {"mask": seg[None]}, steps, seed)
    pics = {f"requested map {seg.shape[-1]}x{seg.shape[-2]}": seg, "sample": out[0]}
    text = f"sampled {out.shape[-1]}x{out.shape[-2]} from a model trained at {ldm.config.image_size}"
    if segmenter is not None:
        pred = segmenter.predict(out)
        pics["segmenter's map of the sample"] = pred[0]
        s = iou_scores(pred, seg[None])
        text += f" &nbsp; mIoU {s['mean_iou']:.2f}, foreground IoU {s['foreground_iou']:.2f}"
    return pics, text


@torch.no_grad()
def sdedit_pictures(ldm: LatentDiffusion, image: Tensor, strength: float, steps: int = 50, seed: int = 0,
                    batch: dict[str, Any] | None = None, classifier: Any = None) -> tuple[dict[str, Tensor], str]:
    """Pictures of an SDEdit panel: the input (1, 3, H, W) and the result at `strength`; readout: t_0, PSNR to the
    input (faithfulness) and, with a classifier, whether the result is a recognisable shape (realism)."""

    out = sdedit(ldm, image, strength, batch=batch, steps=steps, generator=torch.Generator().manual_seed(seed)).cpu()
    t0 = round(strength * (ldm.schedule.T - 1))
    text = f"strength {strength:.2f} → t_0 = {t0} &nbsp; PSNR to the input {float(psnr(out, image)):.1f} dB"
    if classifier is not None:
        j = classifier.judge(out)
        text += f" &nbsp; recognisable shape: {'yes' if bool(j['recognisable'][0]) else 'no'}"
    return {"input": image[0], f"SDEdit, strength {strength:.2f}": out[0]}, text


# ============================================================================================== evaluation
def _held_out(n: int, resolution: int = 32, start: int = 0, **kw: Any) -> tuple[Tensor, Tensor]:
    """Images and masks of held-out `shapes` items start .. start + n - 1 (seed `datasets.HELDOUT_SEED`)."""
    ds = shapes(resolution=resolution, n=start + n, seed=HELDOUT_SEED, **kw)
    items = [ds[i] for i in range(start, start + n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items])


def inpainting_batch(n: int, kind: str = "box") -> dict[str, Tensor]:
    """`n` held-out single-shape images with their inpainting masks of one kind, both drawn from
    `datasets.HELDOUT_SEED` (as `inpainting_study` draws them): {"image": (n, 3, 32, 32), "inpaint_mask": (n, 32, 32),
    1 = missing}."""
    x, seg = _held_out(n, max_shapes=1)
    m = torch.stack([torch.from_numpy(inpaint_mask(kind, x.shape[-1], np.random.default_rng([HELDOUT_SEED, 7, i]),
                                                   seg[i].numpy())) for i in range(n)])
    return {"image": x, "inpaint_mask": m}


def _sample(ldm: LatentDiffusion, batch: dict[str, Tensor], steps: int, seed: int, batch_size: int = 128,
            return_latents: bool = False, keep_known: bool = False) -> Tensor:
    """DDIM samples for a batch of conditions (`evaluation.sample_many`); keep_known: replacement sampling too."""
    return sample_many(ldm, batch=batch, batch_size=batch_size, seed=seed, keep_known=keep_known, sampler="ddim",
                       steps=steps, return_latents=return_latents)


def degrade(images: Tensor, degradation: str, seed: int = 0, factor: int = 4) -> Tensor:
    """Low-res test inputs (B, C, H/s, W/s): every image degraded as `SuperResolutionPairs` does (item i drawn
    from (seed, i)), so a test set is the same on every run."""
    return torch.stack([DEGRADATIONS[degradation](x[None], factor, torch.Generator().manual_seed(seed * 1_000_003 + i))[0]
                        for i, x in enumerate(images)])


def image_scores(out: Tensor, target: Tensor, real_features: Tensor | None, classifier: Any) -> dict[str, float]:
    """Mean PSNR, SSIM, LPIPS of out vs target (B, 3, H, W), and FID on classifier features vs real features."""

    row = {"psnr": float(psnr(out, target).mean()), "ssim": float(ssim(out, target).mean()),
           "lpips": float(lpips_distance(out, target).mean())}
    if classifier is not None and real_features is not None:
        row["fid"] = fid(real_features, classifier_features(out, classifier))
    return row


@torch.no_grad()
def sr_study(models: dict[str, LatentDiffusion], n: int = 256, seed: int = 0, steps: int = 25,
             classifier: Any = None, n_real: int = 1000) -> list[dict]:
    """The 2×2 degradation study (+ baselines): every model and bicubic up-sampling, on bicubic and on realistic
    ×4 low-res versions of `n` held-out images; FID against `n_real` other held-out images (the first `n_real` of
    the held-out stream, the inputs the `n` after them; the degradations drawn from the same seed). `seed`: the
    sampling noise."""

    real_f = classifier_features(_held_out(n_real)[0], classifier) if classifier is not None else None
    hr, _ = _held_out(n, start=n_real)
    rows = []
    for test in ("bicubic", "realistic"):
        low = degrade(hr, test, HELDOUT_SEED)
        up = F.interpolate(low, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
        rows.append({"method": "bicubic up-sampling", "test": test, **image_scores(up, hr, real_f, classifier)})
        for name, ldm in models.items():
            out = _sample(ldm, {"lowres": low}, steps, seed)
            rows.append({"method": name, "test": test, **image_scores(out, hr, real_f, classifier)})
    return rows


def _psnr_where(x: Tensor, y: Tensor, keep: Tensor) -> Tensor:
    """PSNR per image (B,) over the pixels where keep (B, H, W) is 1, images in [-1, 1] mapped to [0, 1]."""
    se = ((x - y) / 2).pow(2).mean(1)  # (B, H, W)
    mse = (se * keep).sum((1, 2)) / keep.sum((1, 2)).clamp_min(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


@torch.no_grad()
def inpainting_study(ldm: LatentDiffusion, classifier: Any, segmenter: Any, n: int = 128, seed: int = 0,
                     steps: int = 25, kinds: tuple[str, ...] = MASK_KINDS) -> list[dict]:
    """Per mask kind, on `n` held-out single-shape images: PSNR outside the mask of the decoded output, of the
    output of replacement sampling (`known_latents`: ẑ_0 = the masked image's latent on cells with no missing
    pixel) and of the autoencoder's reconstruction of the image and of the masked image (the grey hole bleeds
    through encoder and decoder: the ceiling of any output that keeps the masked image's latent); `rim_share`, the
    share of known pixels whose latent cell also holds missing pixels (generated, so they cannot keep the input);
    the share of pasted results (known pixels put back) that are *valid*: a recognisable shape (ShapesClassifier)
    or clean background (the segmenter finds at most 2 shape pixels); `fid_pasted`, FID on ShapesClassifier
    features between the pasted results and the original images (the paper's Table 6 / 7 measure, n >= 256).
    `seed`: the sampling noise (images and masks are held out, `datasets.HELDOUT_SEED`)."""
    x = _held_out(n, max_shapes=1)[0]
    rec = ldm.decode(ldm.autoencoder.to_latent(x.to(ldm.device), sample=False)).cpu()
    rows = []
    for kind in kinds:
        batch = inpainting_batch(n, kind)
        m = batch["inpaint_mask"]
        out = _sample(ldm, batch, steps, seed)
        kept = _sample(ldm, batch, steps, seed, keep_known=True)
        pasted = out * m[:, None] + x * (1 - m[:, None])
        masked_rec = ldm.decode(ldm.autoencoder.to_latent((x * (1 - m[:, None])).to(ldm.device), sample=False)).cpu()
        f = ldm.autoencoder.f
        cells = F.interpolate(F.max_pool2d(m[:, None], f), scale_factor=f, mode="nearest")[:, 0]
        recognisable = classifier.judge(pasted)["recognisable"]
        empty = (segmenter.predict(pasted) > 0).sum((1, 2)) <= 2
        rows.append({"mask": kind, "n": n, "hole_share": float(m.mean()),
                     "psnr_outside_output": float(_psnr_where(out, x, 1 - m).mean()),
                     "psnr_outside_keep_known": float(_psnr_where(kept, x, 1 - m).mean()),
                     "psnr_outside_ae_reconstruction": float(_psnr_where(rec, x, 1 - m).mean()),
                     "psnr_outside_ae_masked": float(_psnr_where(masked_rec, x, 1 - m).mean()),
                     "rim_share": float((cells * (1 - m)).sum() / (1 - m).sum()),
                     "psnr_hole_pasted": float(_psnr_where(pasted, x, m).mean()),
                     "valid": float((recognisable | empty).float().mean()),
                     "valid_shape": float(recognisable.float().mean()), "valid_empty": float(empty.float().mean()),
                     "fid_pasted": fid(classifier_features(x, classifier), classifier_features(pasted, classifier))})
    return rows


@torch.no_grad()
def semantic_study(ldm: LatentDiffusion, segmenter: Any, sizes: tuple[tuple[int, int, int], ...] = (
        (32, 1, 128), (64, 2, 48), (64, 1, 48), (128, 4, 8)), seed: int = 0, steps: int = 25) -> list[dict]:
    """Mask agreement at each (side, canvas, n): maps of `shapes(side, canvas=canvas)`; the model samples an image
    of that side from each map; the segmenter's map of the sample is compared with the requested one (mIoU).
    The segmenter's score on the real images of the same maps is the ceiling of the judge. `seed`: the sampling
    noise (the maps are held-out items, `datasets.HELDOUT_SEED`)."""

    rows = []
    for side, canvas, n in sizes:
        real, maps = _held_out(n, resolution=side, canvas=canvas)
        out = _sample(ldm, {"mask": maps}, steps, seed, batch_size=max(1, 65536 // side**2))
        got, ceiling = iou_scores(segmenter.predict(out), maps), iou_scores(segmenter.predict(real), maps)
        rows.append({"size": f"{side}x{side}", "scene": "canvas" if canvas > 1 else
                     ("training scale" if side == ldm.config.image_size else "scaled up"), "n": n,
                     "mean_iou": got["mean_iou"], "foreground_iou": got["foreground_iou"],
                     "pixel_accuracy": got["pixel_accuracy"], "judge_ceiling_mean_iou": ceiling["mean_iou"]})
    return rows


# ============================================================================================== files (CLI)
def read_png(path: str | os.PathLike, what: str, channels: int | None = 3) -> Tensor:
    """A PNG as it is (no resizing): channels=3 -> (3, H, W) in [-1, 1]; channels=None -> (H, W) integer values."""
    img = Image.open(path)
    arr = np.asarray(img)
    if channels is None:
        if arr.ndim != 2:
            raise UsageError(f"{what} {path} must be a one-channel (greyscale / palette) PNG of integer values, "
                             f"got shape {arr.shape}")
        return torch.from_numpy(arr.astype(np.int64))
    got = 1 if arr.ndim == 2 else arr.shape[2]
    if got != channels:
        raise UsageError(f"{what} {path} has {got} channel(s) but the model expects {channels} (RGB); "
                         f"convert it, e.g. Image.open(p).convert('RGB')")
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1


def sample_to_file(task: str, out: str | os.PathLike, *, lowres: str | None = None, image: str | None = None,
                   mask: str | None = None, seg_map: str | None = None, degradation: str = "bicubic",
                   model: str | os.PathLike | None = None, steps: int = 50, seed: int = 0) -> Path:
    """One image-to-image sample from files, written as a PNG (what `ldm-lite sample --lowres/--mask/--map` does).

    sr: `lowres` an RGB PNG (h, w) -> a (4h, 4w) image; inpaint: `image` an RGB PNG and `mask` a PNG of 0 / 255
    (or 0 / 1; white = fill) of the same size; semantic: `seg_map` a greyscale PNG of class indices 0..6
    (0 background, 1 + kind in KINDS), any side divisible by 4."""
    ldm = recipes.load(model or SHIPPED[task if task != "sr" or degradation == "bicubic" else "sr-realistic"])
    if task == "sr":
        if lowres is None:
            raise UsageError("super-resolution needs --lowres <low-res RGB PNG>")
        batch = {"lowres": read_png(lowres, "the low-res image")[None]}
    elif task == "inpaint":
        if image is None or mask is None:
            raise UsageError("inpainting needs --image <RGB PNG> and --mask <PNG, white = fill>")
        x, m = read_png(image, "the image")[None], read_png(mask, "the mask", channels=None)
        batch = {"image": x, "inpaint_mask": (m / 255 if int(m.max()) == 255 else m)[None]}
    else:
        if seg_map is None:
            raise UsageError("semantic synthesis needs --map <greyscale PNG of class indices>")
        batch = {"mask": read_png(seg_map, "the map", channels=None)[None]}
    x = _sample(ldm, batch, steps, seed)[0]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()).save(path)
    return path

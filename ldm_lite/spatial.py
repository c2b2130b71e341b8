"""Spatial conditioning by concatenation (LDM §3.3 "concatenation", §4.3.2, §4.4, §4.5).

A spatially aligned condition y is mapped to a tensor c_concat at the latent's resolution and concatenated to z_t:

    ε_θ([z_t, c_concat], t)        z_t (B, c, h, w), c_concat (B, c_cond, h, w), h = H / f

| task                       | conditioner                     | c_concat                                          |
|----------------------------|---------------------------------|---------------------------------------------------|
| super-resolution ×s (§4.4) | `SuperResolutionConditioner`    | the low-res image y (B, 3, H/s, W/s) resized to h |
|                            |                                 | (a no-op when s = f, as in LDM-SR: ×4 on f=4)     |
| inpainting (§4.5)          | `InpaintingConditioner`         | [s·E(x ⊙ (1-m)), m↓] : masked image's latent + mask|
| semantic synthesis (§4.3.2)| `SemanticConditioner`           | one-hot segmentation map, area-pooled to h        |

Because the UNet is convolutional, a concat model trained on 32×32 samples a larger image from a larger condition
(`LatentDiffusion.sample` takes the latent size from c_concat).

Batch fields the conditioners read (names are config fields): `lowres` (B, 3, H/s, W/s) in [-1, 1]; `image`
(B, 3, H, W) and `inpaint_mask` (B, H, W) with 1 = missing (to fill), 0 = known; `mask` (B, H, W) long, the
`shapes` segmentation map (0 = background, 1 + kind index; see `ldm_lite.datasets.Shapes`).

Training data (`ldm_lite.datasets`): `SuperResolutionPairs` adds `lowres` (bicubic or realistic degradation) and
`InpaintingMasks` adds `inpaint_mask` (box, strokes or "remove one shape") to a dataset's items.
`sdedit` is image-to-image by partial noising (Meng et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import samplers as _samplers
from .checkpoint import Pretrained
from .conditioning import CONDITIONERS, Condition, Conditioner
from .errors import UsageError, UsageTypeError
from .schedule import Schedule
from .validation import (
    as_tensor,
    check_callable,
    check_choice,
    check_finite,
    check_generator,
    check_images,
    check_int,
    check_number,
)


def _field(batch: dict[str, Any], key: str, what: str) -> Tensor:
    if batch is None or key not in batch:
        raise UsageError(f"this model is conditioned on {what}: pass batch={{{key!r}: ...}}")
    return as_tensor(key, batch[key])


def _float_images(name: str, x: Tensor) -> Tensor:
    """The cheap part of `check_images` (no host sync), for every forward: a float tensor, never uint8 0..255."""
    if not x.is_floating_point():
        raise UsageTypeError(f"{name} must be a float image tensor in [-1, 1], got {x.dtype}"
                             + (f"; convert with {name}.float() / 127.5 - 1" if x.dtype == torch.uint8 else ""))
    return x.float()




class _SpatialConditioner(Pretrained, Conditioner):
    """Keeps the first stage's f (and the autoencoder itself, unregistered: LatentDiffusion owns its weights).
    Its ∅ is no condition: `null_like` gives zeros of c_concat's shape for classifier-free guidance."""

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = config or self.config_class()
        self._first_stage: tuple[nn.Module, ...] = ()  # a tuple, so the autoencoder is not a submodule

    def null(self, batch_size: int) -> Condition:
        return Condition()

    def attach_autoencoder(self, autoencoder: nn.Module) -> None:
        self._first_stage = (autoencoder,)

    @property
    def autoencoder(self) -> nn.Module:
        if not self._first_stage:
            raise RuntimeError(f"{type(self).__name__} needs the autoencoder: use it inside a LatentDiffusion "
                               "(which calls attach_autoencoder) or call attach_autoencoder(ae)")
        return self._first_stage[0]

    @property
    def f(self) -> int:
        return int(self.autoencoder.f)

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.buffers()).device

    def latent_side(self, side: int, what: str) -> int:
        if side % self.f:
            raise UsageError(f"{what} side {side} is not divisible by the autoencoder's f={self.f}; "
                             f"use {max(self.f, side // self.f * self.f)} or pad")
        return side // self.f


# ----------------------------------------------------------------------------------------------- super-resolution
@dataclass
class SuperResolutionConfig:
    factor: int = 4  # s: the low-res image is (H/s, W/s)
    channels: int = 3  # channels of the low-res image (= of the images)
    lowres_key: str = "lowres"  # batch field holding the low-res images (B, channels, H/s, W/s) in [-1, 1]


class SuperResolutionConditioner(_SpatialConditioner):
    """y (B, 3, H/s, W/s) -> c_concat (B, 3, H/f, W/f): the low-res image resized (bicubic) to the latent's size
    (identity when s = f, the LDM-SR setting)."""

    config_class = SuperResolutionConfig
    usage = "low_res=(B, 3, H/s, W/s) images in [-1, 1]"
    sample_inputs = ("low_res",)

    def batch_from(self, low_res: Any) -> dict[str, Any]:
        return {self.config.lowres_key: low_res}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        key = self.config.lowres_key
        y = _field(batch, key, f"a low-resolution image: pass {self.usage}")
        return {**batch, key: check_images("low_res", y, channels=self.config.channels)}

    @property
    def concat_channels(self) -> int:
        return self.config.channels

    def forward(self, batch: dict[str, Any]) -> Condition:
        c = self.config
        y = _float_images("low_res", _field(batch, c.lowres_key, f"a low-resolution image (×{c.factor} super-resolution)"))
        if y.ndim != 4 or y.shape[1] != c.channels:
            raise UsageError(f"low-res images must be (B, {c.channels}, H/{c.factor}, W/{c.factor}), "
                             f"got {tuple(y.shape)}")
        lh, lw = y.shape[-2:]
        if "image" in batch:  # training: the pair must match the factor
            h, w = torch.as_tensor(batch["image"]).shape[-2:]
            if (lh * c.factor, lw * c.factor) != (h, w):
                raise UsageError(f"low-res images are {lh}x{lw} but the images are {h}x{w}: with factor={c.factor} "
                                 f"the low-res side must be {h // c.factor}; degrade with "
                                 f"ll.datasets.bicubic_degradation(x, {c.factor})")
        size = (self.latent_side(lh * c.factor, "output image"), self.latent_side(lw * c.factor, "output image"))
        y = y.to(self.device)
        if size != (lh, lw):
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=size[0] < lh)
        return Condition(concat=y)  # (B, 3, H/f, W/f)


# ----------------------------------------------------------------------------------------------- inpainting
@dataclass
class InpaintingConfig:
    latent_channels: int = 3  # c of the autoencoder the masked image is encoded with
    image_key: str = "image"  # batch field: images (B, 3, H, W) in [-1, 1] (the known pixels are read)
    mask_key: str = "inpaint_mask"  # batch field: (B, H, W) with 1 = missing (to fill), 0 = known
    # the reference's encoding (CompVis scripts/inpaint.py): hole filled with -1 (black) and the mask nearest-
    # downsampled in {-1, +1}; False (the kit's): hole 0 (grey), mask area-pooled to the share missing in [0, 1]
    reference_encoding: bool = False


class InpaintingConditioner(_SpatialConditioner):
    """(x, m) -> c_concat = [s·E(x ⊙ (1 - m)), m↓] (B, c + 1, H/f, W/f), as LDM's inpainting model (§4.5): the
    masked image's latent (posterior mean) and the mask area-pooled to the latent size (share of missing pixels)."""

    config_class = InpaintingConfig
    usage = "image=(B, 3, H, W) in [-1, 1] and mask=(B, H, W) with 1 = fill, 0 = keep"
    sample_inputs = ("image", "mask")

    def batch_from(self, image: Any = None, mask: Any = None) -> dict[str, Any]:
        if image is None or mask is None:
            raise UsageError(f"inpainting needs both the image and the mask: pass {self.usage}")
        return {self.config.image_key: image, self.config.mask_key: mask}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        x = check_images("image", _field(batch, c.image_key, "an image to inpaint"))
        m = _field(batch, c.mask_key, "an inpainting mask (1 = fill)")
        return {**batch, c.image_key: x, c.mask_key: check_inpaint_mask(m, x, "mask")}

    @property
    def concat_channels(self) -> int:
        return self.config.latent_channels + 1

    def attach_autoencoder(self, autoencoder: nn.Module) -> None:
        if autoencoder.latent_channels != self.config.latent_channels:
            raise UsageError(f"the autoencoder has {autoencoder.latent_channels} latent channels but the inpainting "
                             f"conditioner was built for {self.config.latent_channels}; set "
                             f"InpaintingConfig(latent_channels={autoencoder.latent_channels})")
        super().attach_autoencoder(autoencoder)

    def forward(self, batch: dict[str, Any]) -> Condition:
        c = self.config
        x = _float_images("image", _field(batch, c.image_key, "an image to inpaint"))
        m = check_inpaint_mask(_field(batch, c.mask_key, "an inpainting mask (1 = fill)"), x)
        x, m = x.to(self.device), m.to(self.device)[:, None]  # m (B, 1, H, W)
        h = self.latent_side(x.shape[-2], "image")
        w = self.latent_side(x.shape[-1], "image")
        if c.reference_encoding:  # masked_image = (1 - m) x in [0, 1], then × 2 - 1: the hole is -1
            with torch.no_grad():
                z = self.autoencoder.to_latent(x * (1 - m) - m, sample=False)  # (B, c, h, w)
            return Condition(concat=torch.cat([z, F.interpolate(m * 2 - 1, size=(h, w), mode="nearest")], dim=1))
        with torch.no_grad():
            z = self.autoencoder.to_latent(x * (1 - m), sample=False)  # (B, c, h, w); 0 = grey in the hole
        return Condition(concat=torch.cat([z, F.adaptive_avg_pool2d(m, (h, w))], dim=1))


def known_latents(cond: Condition) -> tuple[Tensor, Tensor]:
    """(z_known, keep) for replacement sampling (`LatentDiffusion.sample(known=...)`, `samplers.keep_known`) from an
    `InpaintingConditioner`'s condition: the masked image's latent, and keep = 1 on latent cells with no missing
    pixel ((B, 1, h, w)). Sampling with it ends with exactly that latent on those cells, so away from the hole the
    decoded output is the autoencoder's reconstruction of the masked image (its encoder still sees the grey hole).
    With `reference_encoding` (mask channel in {-1, +1}, nearest-downsampled) a cell is kept when the one pixel
    the downsampling read is known."""
    z_known, m = cond.concat[:, :-1], cond.concat[:, -1:]
    return z_known, (m <= 0).to(z_known.dtype)  # 0: no missing pixel (kit); -1: known (reference encoding)


def check_inpaint_mask(mask: Any, images: Tensor, name: str = "mask") -> Tensor:
    """A mask (B, H, W) or (B, 1, H, W) of 0/1 (bool or numbers) matching images (B, C, H, W) -> float (B, H, W)."""
    m = as_tensor(name, mask)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3 or m.shape[0] != images.shape[0] or m.shape[-2:] != images.shape[-2:]:
        raise UsageError(f"the inpainting {name} must be (B, H, W) = ({images.shape[0]}, {images.shape[-2]}, "
                         f"{images.shape[-1]}) like the images, got {tuple(m.shape)}")
    m = check_finite(name, m.float())
    if not bool(((m == 0) | (m == 1)).all()):
        raise UsageError(f"the inpainting {name} must be binary (1 = fill, 0 = keep), got values in "
                         f"[{float(m.min()):.3g}, {float(m.max()):.3g}]; threshold it, e.g. (mask > 0.5)")
    return m


# ----------------------------------------------------------------------------------------------- semantic synthesis
@dataclass
class SemanticConfig:
    num_classes: int = 7  # K: classes of the map (shapes: background + 6 kinds, `datasets.SEMANTIC_CLASSES`)
    map_key: str = "mask"  # batch field: class map (B, H, W) of integers in 0..K-1


class SemanticConditioner(_SpatialConditioner):
    """A class map (B, H, W) -> c_concat (B, K, H/f, W/f): the one-hot map, area-pooled to the latent size (each
    latent cell gets the share of its f×f pixels in each class, so sub-cell edges survive)."""

    config_class = SemanticConfig
    usage = "semantic_map=(B, H, W) class indices 0..K-1"
    sample_inputs = ("semantic_map",)

    def batch_from(self, semantic_map: Any) -> dict[str, Any]:
        return {self.config.map_key: semantic_map}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        key = self.config.map_key
        y = _field(batch, key, f"a segmentation map: pass {self.usage}")
        return {**batch, key: check_semantic_map(y, self.config.num_classes, "semantic_map")}

    @property
    def concat_channels(self) -> int:
        return self.config.num_classes

    def forward(self, batch: dict[str, Any]) -> Condition:
        k = self.config.num_classes
        y = check_semantic_map(_field(batch, self.config.map_key, "a segmentation map"), k)
        h, w = self.latent_side(y.shape[-2], "map"), self.latent_side(y.shape[-1], "map")
        onehot = F.one_hot(y.to(self.device), k).permute(0, 3, 1, 2).float()  # (B, K, H, W)
        return Condition(concat=F.adaptive_avg_pool2d(onehot, (h, w)))  # (B, K, H/f, W/f)


def check_semantic_map(seg: Any, num_classes: int = 7, name: str = "semantic_map") -> Tensor:
    """A class map (B, H, W) of integers in 0..K-1 -> LongTensor; clear errors otherwise."""
    y = as_tensor(name, seg)
    if y.ndim != 3:
        raise UsageError(f"{name} must be a segmentation map (B, H, W) of class indices, got shape {tuple(y.shape)}")
    if y.dtype == torch.bool:
        raise UsageTypeError(f"{name} must hold class indices 0..{num_classes - 1}, got a bool tensor")
    if y.is_floating_point():
        check_finite(name, y)
        if not bool((y == y.round()).all()):
            raise UsageError(f"{name} holds class indices (integers), got fractional values")
    y = y.long()
    bad = torch.unique(y[(y < 0) | (y >= num_classes)])
    if len(bad):
        raise UsageError(f"{name} holds unknown classes {bad[:5].tolist()}; this model knows 0..{num_classes - 1} "
                         "(shapes: 0=background, 1 + kind index, `datasets.SEMANTIC_CLASSES`)")
    return y


CONDITIONERS.update({cls.__name__: cls for cls in (SuperResolutionConditioner, InpaintingConditioner,
                                                   SemanticConditioner)})


# ----------------------------------------------------------------------------------------------- SDEdit
@torch.no_grad()
def sdedit(ldm: Any, images: Tensor, strength: float, *, batch: dict[str, Any] | None = None,
           sampler: str = "ddim", steps: int = 50, guidance_scale: float = 1.0,
           generator: torch.Generator | None = None, noise: Tensor | None = None, callback=None,
           **sampler_options: Any) -> Tensor:
    """Image-to-image by partial noising (SDEdit, Meng et al. 2022) with any trained LatentDiffusion.

    z_0 = s·E(x) (posterior mean); t_0 = round(strength · (T - 1)); z_{t_0} = √ᾱ_{t_0} z_0 + √(1-ᾱ_{t_0}) ε
    (DDPM eq. 4); then the sampler runs on the schedule cut at t_0 (β_1..β_{t_0}: the same ᾱ_t), visiting
    max(1, ceil(strength · steps)) timesteps from t_0 down ("trailing" spacing, so it starts exactly at t_0).
    strength 0 returns D(z_0), the autoencoder's reconstruction; strength 1 starts from (almost) pure noise.
    images (B, C, H, W) in [-1, 1] -> (B, C, H, W) in [-1, 1]. `batch` is the condition of a conditional model.
    """
    strength = check_number("strength", strength, min=0.0, max=1.0)  # 0 = the input, 1 = a new sample
    check_choice("sampler", sampler, _samplers.SAMPLERS)
    steps = check_int("steps", steps, min=1, max=ldm.schedule.T)
    images = check_images("images", images, channels=ldm.autoencoder.config.in_channels)
    generator, callback = check_generator("generator", generator), check_callable("callback", callback)
    guidance_scale = ldm.check_guidance(guidance_scale)
    batch, _ = ldm._condition_batches({}, batch, None, None, guidance_scale)  # checked; refused by an unconditional model
    was_training = ldm.training
    ldm.eval()
    try:
        z0 = ldm.autoencoder.to_latent(images.to(ldm.device), sample=False)  # (B, c, h, w)
        if noise is not None:
            noise = check_finite("noise", as_tensor("noise", noise))
            if noise.shape != z0.shape:
                raise UsageError(f"noise must have the latents' shape {tuple(z0.shape)}, got {tuple(noise.shape)}")
        t0 = round(strength * (ldm.schedule.T - 1))
        if t0 == 0:
            return ldm.decode(z0)
        if noise is None:
            dev = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(z0.shape, generator=generator, device=dev)
        b = z0.shape[0]
        z_t = ldm.schedule.q_sample(z0, torch.full((b,), t0, dtype=torch.long, device=z0.device),
                                    noise.to(z0.device, z0.dtype))
        cut = Schedule(ldm.schedule.betas[: t0 + 1], name=f"{ldm.schedule.name}[:{t0 + 1}]")
        cond = ldm.condition(batch, b)
        denoiser = ldm.denoiser
        if cond is not None and guidance_scale != 1.0:
            denoiser = _samplers.guided(denoiser, guidance_scale, ldm.conditioner.null_like(cond))
        n = max(1, min(t0 + 1, math.ceil(strength * steps)))
        sampler_options.setdefault("spacing", "trailing")
        z = _samplers.SAMPLERS[sampler](denoiser, cut, z_t, n, cond=cond, generator=generator, callback=callback,
                                        prediction=ldm.config.prediction, **sampler_options)
        return ldm.decode(z)
    finally:
        ldm.train(was_training)

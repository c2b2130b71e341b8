"""`LatentDiffusion`: a frozen autoencoder + an ε-prediction UNet + an optional conditioner + a schedule (LDM §3.2-3.3).

    z_0 = s · E(x)                                   the autoencoder's latent, scaled to unit variance (App. D.1)
    z_t = √ᾱ_t z_0 + √(1-ᾱ_t) ε                       forward process (DDPM eq. 4)
    L_LDM = E_{z_0, ε~N(0,I), t} ‖ε - ε_θ(z_t, t, τ_θ(y))‖²      (LDM eq. 2 / eq. 3 with conditioning)
    x̂ = D(ẑ_0 / s)                                   ẑ_0 from any sampler in `ldm_lite.samplers`

With `IdentityAutoencoder` (f = 1, s = 1) the same code is the pixel-space baseline LDM-1.
`prediction="v"` trains the UNet on v = √ᾱ ε - √(1-ᾱ) z_0 instead (Salimans & Ho 2022); samplers convert it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import samplers as _samplers
from . import spatial as _spatial  # noqa: F401  (registers the concat conditioners for from_pretrained)
from . import text as _text  # noqa: F401  (registers the text conditioners)
from .autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder, IdentityAutoencoderConfig
from .checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    Pretrained,
    config_from_dict,
    load_state_into,
    read_config,
    read_json,
    save_model,
)
from .conditioning import CONDITIONERS, Condition
from .errors import NonFiniteError, UsageError, UsageTypeError
from .schedule import Schedule
from .unet import UNet, UNetConfig
from .validation import (
    as_tensor,
    check_callable,
    check_choice,
    check_finite,
    check_generator,
    check_int,
    check_number,
    check_strings,
    describe,
)

AUTOENCODERS: dict[str, tuple[type[nn.Module], type]] = {
    "Autoencoder": (Autoencoder, AutoencoderConfig),
    "IdentityAutoencoder": (IdentityAutoencoder, IdentityAutoencoderConfig),
}
SCHEDULES = {"linear": Schedule.linear, "scaled_linear": Schedule.scaled_linear, "cosine": Schedule.cosine}
# what a config.json written before `schedule_params` existed means: the presets' defaults at that time
# (scaled_linear was 0.00085 -> 0.012 then; the shipped ldm-kl-f4-shapes32 was trained with it)
LEGACY_SCHEDULE_PARAMS = {"linear": {"beta_start": 1e-4, "beta_end": 0.02},
                          "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
                          "cosine": {"s": 0.008, "max_beta": 0.999}}


@dataclass
class LDMConfig:
    """What `save_pretrained` needs to rebuild a LatentDiffusion; the parts' own configs are nested as dicts."""

    image_size: int = 32  # pixel side of generated images (latent side = image_size / f)
    schedule: str = "scaled_linear"  # "linear", "scaled_linear" (LDM) or "cosine"
    T: int = 1000  # number of diffusion steps
    schedule_params: dict = field(default_factory=lambda: {"beta_start": 0.00085, "beta_end": 0.012})  # its arguments
    prediction: str = "eps"  # what the UNet predicts: "eps" (LDM eq. 2) or "v"
    cond_drop_prob: float = 0.1  # training: probability of replacing the condition by ∅ (for guidance)
    autoencoder_kind: str = "Autoencoder"  # class of the first stage
    autoencoder: dict = field(default_factory=dict)  # its config
    unet: dict = field(default_factory=dict)  # UNetConfig fields
    conditioner_kind: str | None = None  # class of the conditioner, None = unconditional
    conditioner: dict | None = None  # its config


class ScaleFactorWarning(UserWarning):
    """An autoencoder whose scale factor was never estimated (still 1.0) was given to LatentDiffusion."""


def _warn_if_unscaled(autoencoder: nn.Module) -> None:
    if isinstance(autoencoder, Autoencoder) and float(autoencoder.scale_factor) == 1.0:
        warnings.warn("the autoencoder's scale_factor is 1.0, i.e. never estimated, so the diffusion model will not see "
                      "unit-variance latents (paper §4.3.2, App. D.1); call "
                      "ll.autoencoder.estimate_scale_factor(ae, dataset) before building LatentDiffusion",
                      ScaleFactorWarning, stacklevel=3)


def _check_conditioner(conditioner: nn.Module | None, unet: UNet) -> None:
    """The conditioner's context width and spatial channels must be what the UNet was built for."""
    ctx_dim = None if conditioner is None else conditioner.context_dim
    if ctx_dim != unet.config.context_dim:
        raise UsageError(f"the conditioner gives context_dim={ctx_dim} but the UNet expects "
                         f"{unet.config.context_dim}; set UNetConfig(context_dim={ctx_dim})")
    concat = 0 if conditioner is None else conditioner.concat_channels
    if concat != unet.config.concat_channels:
        raise UsageError(f"the conditioner concatenates {concat} channels to z_t but the UNet expects "
                         f"{unet.config.concat_channels}; set UNetConfig(concat_channels={concat})")


def _as_json(config: Any) -> dict:
    return json.loads(json.dumps(asdict(config)))  # tuples -> lists, exactly as config.json stores them


class LatentDiffusion(Pretrained, nn.Module):
    """Generate images by denoising in an autoencoder's latent space; see the module docstring."""

    config_class = LDMConfig

    def __init__(self, autoencoder: nn.Module, unet: UNet, conditioner: nn.Module | None = None,
                 schedule: Schedule | str = "scaled_linear", *, image_size: int = 32, prediction: str = "eps",
                 cond_drop_prob: float = 0.1, T: int = 1000):
        super().__init__()
        image_size, T = check_int("image_size", image_size, min=1), check_int("T", T, min=1)
        cond_drop_prob = check_number("cond_drop_prob", cond_drop_prob, min=0.0, max=1.0)
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise UsageError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}")
            schedule = SCHEDULES[schedule](T=T)
        elif not isinstance(schedule, Schedule):
            raise UsageTypeError(f"schedule must be a Schedule or one of {sorted(SCHEDULES)}, got {describe(schedule)}")
        if schedule.name not in SCHEDULES:
            raise UsageError(f"schedule {schedule.name!r} cannot be saved; use one of {sorted(SCHEDULES)}")
        if prediction not in ("eps", "v"):
            raise UsageError(f"prediction must be 'eps' or 'v', got {prediction!r}")
        f = autoencoder.f
        if image_size % f:
            raise UsageError(f"image size {image_size} is not divisible by the autoencoder's f={f}")
        c = autoencoder.latent_channels
        if unet.config.in_channels != c or unet.config.out_channels != c:
            default = (" (UNetConfig() defaults to 4, the c of Stable Diffusion's autoencoder)"
                       if unet.config.in_channels == UNetConfig.in_channels else "")
            raise UsageError(f"the UNet maps {unet.config.in_channels} -> {unet.config.out_channels} channels{default} "
                             f"but the autoencoder's latents have latent_channels={c}; build it for them: "
                             f"UNetConfig.small(in_channels=ae.latent_channels) or UNetConfig(in_channels={c}, "
                             f"out_channels={c})")
        _check_conditioner(conditioner, unet)
        _warn_if_unscaled(autoencoder)
        self.autoencoder = autoencoder.eval().requires_grad_(False)  # frozen first stage
        self.unet, self.conditioner = unet, conditioner
        if conditioner is not None:
            conditioner.attach_autoencoder(self.autoencoder)
        self.schedule = schedule  # kept as given: every parameter is saved in the config
        self.config = LDMConfig(
            image_size=image_size, schedule=schedule.name, T=schedule.T, schedule_params=dict(schedule.params),
            prediction=prediction, cond_drop_prob=cond_drop_prob,
            autoencoder_kind=type(autoencoder).__name__, autoencoder=_as_json(autoencoder.config),
            unet=_as_json(unet.config), conditioner_kind=type(conditioner).__name__ if conditioner else None,
            conditioner=_as_json(conditioner.config) if conditioner is not None else None)

    def train(self, mode: bool = True) -> LatentDiffusion:
        super().train(mode)
        self.autoencoder.eval()  # the first stage stays in eval mode (frozen)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.autoencoder.latent_shape(self.config.image_size, self.config.image_size))

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.unet.parameters())
        if self.conditioner is not None:
            params += list(self.conditioner.parameters())
        return params

    # ------------------------------------------------------------------------------------------------ training
    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x (B, C, H, W) in [-1, 1] -> z_0 = s · E(x) (B, c, H/f, W/f)."""
        return self.autoencoder.to_latent(images, sample=True, generator=generator)

    @torch.no_grad()
    def decode(self, z0: Tensor) -> Tensor:
        """ẑ_0 (B, c, h, w) -> x̂ (B, C, h·f, w·f) in [-1, 1]."""
        return self.autoencoder.from_latent(z0).clamp(-1, 1)

    def first_stage_latent(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """z_0 = s · E(x) (B, c, h, w) of a training batch: encoded from batch["image"], or, from a
        `ldm_lite.latents.LatentCache`, the cached posterior's mean + std·ε (KL) or its deterministic latent."""
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"].to(self.device), batch["latent_std"].to(self.device)
            # drawn where the generator lives (as t and ε below), so a GPU run resumes exactly too
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                              device=generator.device if generator is not None else mean.device).to(mean.device)
            return (mean + std * eps) * self.autoencoder.scale_factor  # the operations of to_latent, eq. (App. D.1)
        if "latent" in batch:
            return batch["latent"].to(self.device) * self.autoencoder.scale_factor
        x = batch["image"].to(self.device)
        if x.shape[-1] != self.config.image_size or x.shape[-2] != self.config.image_size:
            raise UsageError(f"images are {tuple(x.shape[-2:])} but this model was built for image_size="
                             f"{self.config.image_size}; resize the dataset (resolution={self.config.image_size})")
        return self.encode(x, generator=generator if generator is None or generator.device == x.device else None)

    def condition(self, batch: dict[str, Any] | None, batch_size: int, drop_prob: float = 0.0,
                  generator: torch.Generator | None = None) -> Condition | None:
        """τ_θ(y) for a batch (a `Condition`); each row replaced by ∅ with probability `drop_prob` (guidance
        training). None for an unconditional model."""
        if self.conditioner is None:
            return None
        cond = self.conditioner(batch)
        if drop_prob > 0:
            drop = torch.rand(batch_size, generator=generator, device=generator.device if generator else None)
            cond = cond.where(drop < drop_prob, self.conditioner.null_like(cond))
        return cond

    def loss(self, batch: dict[str, Any], generator: torch.Generator | None = None, t: Tensor | None = None,
             noise: Tensor | None = None) -> Tensor:
        """L_LDM (eq. 2; eq. 3 with a condition τ_θ(y)): the mean squared error between ε (or v) and the UNet's
        prediction at a random t.

        t (B,) and noise (B, c, h, w) are drawn from `generator` unless given (training draws them for the whole
        global batch, so a multi-process run sees the same t and ε as a single process)."""
        z0 = self.first_stage_latent(batch, generator)
        b = z0.shape[0]
        dev = generator.device if generator is not None else None
        if t is None:
            t = torch.randint(0, self.schedule.T, (b,), generator=generator, device=dev)
        if noise is None:
            noise = torch.randn(z0.shape, generator=generator, device=dev)
        t, noise = t.to(self.device), noise.to(self.device, z0.dtype)
        z_t = self.schedule.q_sample(z0, t, noise)  # DDPM eq. 4
        cond = self.condition(batch, b, self.config.cond_drop_prob if self.training else 0.0, generator)
        pred = self.denoiser(z_t, t, cond)
        target = noise if self.config.prediction == "eps" else self.schedule.v_target(z0, t, noise)
        return F.mse_loss(pred.float(), target.float())

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None, t: Tensor | None = None,
                noise: Tensor | None = None) -> Tensor:
        """The training loss (so DistributedDataParallel can wrap the whole model)."""
        return self.loss(batch, generator, t, noise)

    # ------------------------------------------------------------------------------------------------ sampling
    def denoiser(self, z_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        """The UNet as a sampler sees it: ε_θ([z_t, c_concat], t, c_context) -> ε̂ (or v̂ with prediction="v")."""
        if cond is None:
            return self.unet(z_t, t, None)
        x = z_t if cond.concat is None else torch.cat([z_t, cond.concat.to(z_t.dtype)], dim=1)  # §3.3 concat
        return self.unet(x, t, cond.context)

    def check_guidance(self, guidance_scale: float) -> float:
        """Classifier-free guidance needs ε̂(z_t, ∅): refuse it on a model trained without condition dropout."""
        guidance_scale = check_number("guidance_scale", guidance_scale)
        if guidance_scale < 0:
            raise UsageError(f"guidance_scale={guidance_scale} must be >= 0 (0: unconditional, 1: no guidance, > 1: "
                             "stronger); to steer away from a prompt use negative_prompts")
        if guidance_scale != 1.0 and self.conditioner is not None and self.config.cond_drop_prob == 0:
            raise UsageError(f"guidance_scale={guidance_scale} needs ε̂(z_t, ∅), but this model was trained with "
                             "cond_drop_prob=0 and never saw ∅; sample with guidance_scale=1.0, or train with "
                             "cond_drop_prob > 0 (the default 0.1) for classifier-free guidance")
        return guidance_scale

    @torch.no_grad()
    def sample(self, n: int | None = None, *, prompts: Sequence[str] | None = None, labels: Any = None,
               layout: Any = None, low_res: Tensor | None = None, image: Tensor | None = None,
               mask: Tensor | None = None, semantic_map: Tensor | None = None, batch: dict[str, Any] | None = None,
               negative_prompts: Sequence[str] | None = None, negative_batch: dict[str, Any] | None = None,
               sampler: str = "ddim", steps: int = 50, guidance_scale: float = 1.0,
               generator: torch.Generator | int | None = None, noise: Tensor | None = None, callback=None,
               return_latents: bool = False, size: int | None = None, known: tuple[Tensor, Tensor] | None = None,
               **sampler_options: Any) -> Tensor:
        """Generate images (B, C, H, W) in [-1, 1].

        n: number of images (unconditional). The condition, by name (each model takes the ones its conditioner
        lists in `sample_inputs`; any other is an error):
            prompts        list of B strings (text models)          labels        B class indices 0..K-1
            layout         (boxes (B, N, 4) in [0, 1] as (x0, y0, x1, y1), classes (B, N), -1 = no object)
            low_res        (B, 3, H/s, W/s) in [-1, 1] (super-resolution)
            image + mask   (B, 3, H, W) in [-1, 1] and (B, H, W) with 1 = fill (inpainting)
            semantic_map   (B, H, W) class indices (semantic synthesis)
        or `batch`, a dict of the fields the conditioner reads (e.g. a dataset batch); named conditions are
        added to it. Every condition is checked (type, range, finiteness, count) before any work.
        guidance_scale s > 1 applies classifier-free guidance ε̃ = ε̂(u) + s(ε̂(c) - ε̂(u)) with u = ∅, or u = the
        condition of `negative_prompts` / `negative_batch` (guidance away from it; one per image, s != 1);
        sampler: one of `ldm_lite.samplers.SAMPLERS` ("ddpm", "ddim", "plms", "dpm_solver_pp"); steps: an int in
        1..T; generator: a torch.Generator, or an int seed (`generator=0` is `torch.Generator().manual_seed(0)`);
        callback(step, t, z_t, z0_hat) is called at every reverse step (latents, before decoding).
        size: the image side to sample (default: `config.image_size`; the UNet is convolutional, so a model trained
        at 32 can sample 64). A spatial condition (c_concat) sets the latent size itself: larger maps give larger
        images.
        known: (z_known, keep), latents (B, c, h, w) in the diffusion's scale and a 0/1 mask (B, 1, h, w):
        replacement sampling, ẑ_0 = z_known wherever keep = 1 at every step (`samplers.keep_known`); inpainting
        with any model, e.g. `spatial.known_latents(...)` for an inpainting model's condition.
        A latent that becomes NaN/inf stops the sampler with the step and t (`ldm_lite.errors.NonFiniteError`).
        """
        check_choice("sampler", sampler, _samplers.SAMPLERS)
        _samplers.check_options(sampler, sampler_options)
        steps = check_int("steps", steps, min=1, max=self.schedule.T)
        guidance_scale = self.check_guidance(guidance_scale)
        generator, callback = check_generator("generator", generator), check_callable("callback", callback)
        n = None if n is None else check_int("n", n, min=1)
        size = None if size is None else check_int("size", size, min=1)
        named = {k: v for k, v in {"prompts": prompts, "labels": labels, "layout": layout, "low_res": low_res,
                                   "image": image, "mask": mask, "semantic_map": semantic_map}.items() if v is not None}
        batch, negative_batch = self._condition_batches(named, batch, negative_prompts, negative_batch, guidance_scale)
        if batch is None and n is None:
            raise UsageError("pass n (the number of images) for an unconditional model, e.g. sample(8)")
        was_training = self.training
        self.eval()
        try:
            cond = self.condition(batch, 0)  # τ_θ(y)
            b = n if cond is None else cond.batch_size
            if n is not None and n != b:
                raise UsageError(f"n={n} but the condition holds {b} items; leave n out or pass {n} conditions")
            shape = (b, *self._sampling_shape(size, cond))
            if noise is None:  # z_T ~ N(0, I)
                dev = generator.device if generator is not None else torch.device("cpu")
                noise = torch.randn(shape, generator=generator, device=dev)
            else:
                noise = self._check_noise(noise, shape, fixed=size is not None or (cond is not None and cond.concat is not None))
            denoiser = self.denoiser
            if cond is not None and guidance_scale != 1.0:  # ε̃ = ε̂(u) + s (ε̂(c) - ε̂(u))
                uncond = self.conditioner.null_like(cond) if negative_batch is None else self.condition(negative_batch, 0)
                if uncond.batch_size != b:
                    raise UsageError(f"{uncond.batch_size} negative conditions for {b} images; pass one per image")
                denoiser = _samplers.guided(denoiser, guidance_scale, uncond)
            if known is not None:
                z_known, keep = self._check_known(known, noise.shape)
                denoiser = _samplers.keep_known(denoiser, self.schedule, z_known.to(self.device), keep.to(self.device))
            z0 = _samplers.SAMPLERS[sampler](denoiser, self.schedule, noise.to(self.device), steps, cond=cond,
                                             generator=generator, callback=callback,
                                             prediction=self.config.prediction, **sampler_options)
            if return_latents:
                return z0
            x = self.decode(z0)  # x̂ = D(ẑ_0 / s)
            if not bool(torch.isfinite(x).all()):  # one sync at the end: no image with NaN leaves sample()
                raise NonFiniteError("the autoencoder's decoder returned NaN/inf from a finite latent: its weights are "
                                     "broken; reload the model with from_pretrained (which checks every tensor)")
            return x
        finally:
            self.train(was_training)

    def _condition_batches(self, named: dict[str, Any], batch: dict[str, Any] | None, negative_prompts: Any,
                           negative_batch: dict[str, Any] | None, guidance_scale: float):
        """The checked condition batch (named conditions folded in) and the negative one; errors for a condition
        the model does not take, a missing one, or negatives that would be ignored."""
        c = self.conditioner
        for name, value in (("batch", batch), ("negative_batch", negative_batch)):
            if value is not None and not isinstance(value, dict):
                raise UsageTypeError(f"{name} must be a dict of the fields the conditioner reads, got "
                                     f"{type(value).__name__}")
        if c is None:
            given = sorted(named) + [k for k, v in (("batch", batch), ("negative_prompts", negative_prompts),
                                                    ("negative_batch", negative_batch)) if v is not None]
            if given:
                raise UsageError(f"this model is unconditional: it cannot follow {', '.join(given)}; call "
                                 "sample(n=...) or load a conditional model")
            return None, None
        wrong = sorted(set(named) - set(c.sample_inputs))
        if wrong:
            raise UsageError(f"this model ({type(c).__name__}) takes {c.usage}, not {', '.join(wrong)}")
        if named:
            batch = {**(batch or {}), **c.batch_from(**named)}
        if batch is None:
            raise UsageError(f"this model is conditional ({type(c).__name__}): pass {c.usage}")
        batch = c.check_batch(batch)
        if negative_prompts is not None:
            if "prompts" not in c.sample_inputs:
                raise UsageError(f"negative_prompts need a text-conditional model; this one ({type(c).__name__}) "
                                 f"takes {c.usage} (use negative_batch for another kind of condition)")
            negative = check_strings("negative_prompts", negative_prompts)
            negative_batch = {**(negative_batch or {}), **c.batch_from(prompts=negative)}
        if negative_batch is not None:
            if guidance_scale == 1.0:
                raise UsageError("negative_prompts / negative_batch act only through guidance and would be ignored at "
                                 "guidance_scale=1; pass guidance_scale > 1 (e.g. 3)")
            negative_batch = c.check_batch(negative_batch)
        return batch, negative_batch

    def _check_noise(self, noise: Any, shape: tuple[int, ...], fixed: bool) -> Tensor:
        """z_T given by the caller: finite, (B, c, h, w) with the batch and channels sampled (and h, w when a size
        or a spatial condition fixes them)."""
        noise = check_finite("noise", as_tensor("noise", noise))
        if not noise.is_floating_point():
            raise UsageTypeError(f"noise must be a float tensor, got {noise.dtype}")
        want = shape if fixed else shape[:2]
        if noise.ndim != 4 or tuple(noise.shape[: len(want)]) != want:
            raise UsageError(f"noise must be latents of shape {shape}" + ("" if fixed else " (any h, w)")
                             + f", got {tuple(noise.shape)}")
        return noise

    @staticmethod
    def _check_known(known: Any, shape: torch.Size) -> tuple[Tensor, Tensor]:
        if not isinstance(known, tuple | list) or len(known) != 2:
            raise UsageTypeError(f"known must be a pair (z_known, keep), got {type(known).__name__}")
        z_known, keep = (check_finite(name, as_tensor(name, v)) for name, v in zip(("known[0]", "known[1]"), known))
        if z_known.shape != shape or keep.shape[0] != shape[0] or keep.shape[-2:] != shape[-2:]:
            raise UsageError(f"known=(z_known, keep) must be latents {tuple(shape)} and a mask "
                             f"({shape[0]}, 1, {shape[-2]}, {shape[-1]}); got {tuple(z_known.shape)} and "
                             f"{tuple(keep.shape)}")
        return z_known, keep

    def _sampling_shape(self, size: int | None, cond: Condition | None) -> tuple[int, int, int]:
        """The latent shape (c, h, w) to sample: `size` / f, or the spatial condition's own size (c_concat)."""
        f = self.autoencoder.f
        if size is not None and size % f:
            raise UsageError(f"sampling size {size} is not divisible by the autoencoder's f={f}; "
                             f"use {max(f, size // f * f)} or {size // f * f + f}")
        shape = self.latent_shape if size is None else (self.latent_shape[0], size // f, size // f)
        if cond is not None and cond.concat is not None:  # a spatial condition fixes the latent size
            if size is not None and tuple(cond.concat.shape[-2:]) != shape[1:]:
                raise UsageError(f"size={size} but the spatial condition is for images of "
                                 f"{cond.concat.shape[-2] * f}x{cond.concat.shape[-1] * f}; leave size out")
            shape = (shape[0], *cond.concat.shape[-2:])
        return shape

    # ------------------------------------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | os.PathLike, half: bool = False) -> Path:
        """config.json + model.safetensors (`half`: parameters stored in float16, `checkpoint.save_model`)."""
        return save_model(self, self.config, directory, half=half)

    @classmethod
    def from_config(cls, config: LDMConfig) -> LatentDiffusion:
        """Build an untrained LatentDiffusion from its config (the parts get fresh weights)."""
        if config.autoencoder_kind not in AUTOENCODERS:
            raise CheckpointError(f"unknown autoencoder kind {config.autoencoder_kind!r}; known: {sorted(AUTOENCODERS)}")
        ae_cls, ae_cfg = AUTOENCODERS[config.autoencoder_kind]
        ae = ae_cls(config_from_dict(ae_cfg, config.autoencoder))
        unet = UNet(config_from_dict(UNetConfig, config.unet))
        cond = None
        if config.conditioner_kind is not None:
            if config.conditioner_kind not in CONDITIONERS:
                raise CheckpointError(f"unknown conditioner {config.conditioner_kind!r}; known: {sorted(CONDITIONERS)}")
            cond_cls = CONDITIONERS[config.conditioner_kind]
            cond = cond_cls(config_from_dict(cond_cls.config_class, config.conditioner))
        if config.schedule not in SCHEDULES:
            raise CheckpointError(f"unknown schedule {config.schedule!r}; known: {sorted(SCHEDULES)}")
        schedule = SCHEDULES[config.schedule](T=config.T, **config.schedule_params)
        with warnings.catch_warnings():  # fresh parts: from_pretrained checks the loaded scale factor
            warnings.simplefilter("ignore", ScaleFactorWarning)
            return cls(ae, unet, cond, schedule, image_size=config.image_size, prediction=config.prediction,
                       cond_drop_prob=config.cond_drop_prob)

    @classmethod
    def read_pretrained_config(cls, directory: str | os.PathLike) -> LDMConfig:
        """The config a saved folder means today: a config.json written before `schedule_params` existed keeps its
        schedule's old endpoints, and the parts' configs get the fields added since (with their defaults)."""
        config = read_config(directory, cls.__name__, LDMConfig)
        if "schedule_params" not in read_json(Path(directory) / CONFIG_FILE)["config"]:  # written before they were stored
            config.schedule_params = dict(LEGACY_SCHEDULE_PARAMS.get(config.schedule, {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScaleFactorWarning)
            return cls.from_config(config).config  # nested part configs completed with today's defaults

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> LatentDiffusion:
        """Load a saved model (config.json + model.safetensors), in eval mode."""
        model = cls.from_config(cls.read_pretrained_config(directory))
        load_state_into(model, directory)
        _warn_if_unscaled(model.autoencoder)
        return model.to(map_location).eval()

"""Reverse-process samplers: DDPM, DDIM, PLMS, DPM-Solver++(2M), and classifier-free guidance.

Every sampler is a plain function with one signature:

    z0 = sampler(denoiser, schedule, noise, steps, *, cond=None, generator=None, callback=None, **options)

    denoiser(z_t, t, cond) -> ε̂       z_t (B, C, H, W); t LongTensor (B,); ε̂ like z_t
    schedule                          a `ldm_lite.schedule.Schedule`
    noise                             z_T ~ N(0, I), (B, C, H, W): the starting point
    steps                             number of denoiser steps (PLMS calls the denoiser steps + 1 times; with
                                      spacing="ldm_uniform" it can be more, see below)
    generator                         torch.Generator for the noise DDPM (and DDIM with eta > 0) inject
    callback(step, t, z_t, z0_hat)    called once per step with the step index, the timestep (int), the sample the
                                      denoiser saw at that step and its prediction ẑ_0 (DDPM eq. 15)

The samplers never import the UNet; they see only the denoiser. Wrap a model that predicts something else:
`prediction="v"` (an option of every sampler) converts v̂ to ε̂ with `eps_from_v`; `guided(...)` turns a
conditional denoiser into a classifier-free-guided one.

Timestep spacing (option `spacing`, default "leading", and `offset`, default 0): the sampler visits
`schedule.timesteps(steps, spacing, offset)` = t_0 > t_1 > ... > t_{N-1}, and step i moves z from t_i to
t_{i+1}; the last step moves to "t = -1", i.e. ᾱ = 1 (or ᾱ_0 when `final_alpha_one=False`, as in the original
LDM code, which uses spacing="ldm_uniform", offset=1). With T=1000 and 50 steps:
    leading   980, 960, ..., 20, 0     (diffusers' default for DDPM/DDIM/PNDM)
    trailing  999, 979, ..., 39, 19    (starts at pure noise; Lin et al. 2023)
    linspace  999, 979, ..., 20, 0
Two conventions, both tested step by step:
    default        spacing="leading", offset=0, final_alpha_one=True: diffusers' `DDIMScheduler`/`PNDMScheduler`
                   defaults (steps_offset=0, set_alpha_to_one=True). Chosen because diffusers is the oracle every
                   sampler test compares with, and the last step lands on ᾱ = 1, i.e. returns ẑ_0 itself.
    LDM reference  `**LDM_REFERENCE` = spacing="ldm_uniform", offset=1, final_alpha_one=False: CompVis `DDIMSampler`
                   / `PLMSSampler` (`make_ddim_timesteps` takes range(0, T, T // steps) and adds 1: 981, 961, ..., 1
                   for 50 steps; the last step goes to ᾱ_0, i.e. stops at noise level σ = √(1-ᾱ_0), 0.039 with
                   β_1 = 0.0015). Use it to reproduce the reference's samples:
                   `ldm.sample(..., sampler="ddim", **ll.samplers.LDM_REFERENCE)`. When `steps` does not divide T
                   the reference visits more timesteps than asked (30 steps: 31, from 991) and so does this: the
                   sampler then makes len(timesteps) steps (PLMS one denoiser call more), the callback's step index
                   runs 0 .. len - 1 (notebook 04's scrubber shows "step i of 31"), and the return is still the
                   final z. Step counts for which the reference would index t = T (e.g. 300) raise a ValueError
                   naming the nearest counts that work. With steps dividing T, "ldm_uniform" = "leading".
    The two differ by one timestep of 1000 and by the last step's target; on a trained model the samples agree
    closely. (DDPM visits every t by default, as the reference; DPM-Solver++ has no final_alpha_one.)
Tests configure diffusers' schedulers to the same spacing and check every step to 1e-5. Two differences to know:
diffusers' DDIM/PNDM step from t to t - T // steps (not to the next visited t), which agrees with ours only when
`steps` divides T; diffusers' DPMSolverMultistep defines "leading"/"linspace" over steps + 1 points (its
"trailing" is the same as ours).

Randomness: DDPM draws `torch.randn` once per step except the last (where its variance is 0); DDIM with eta > 0
draws once per step. Noise is drawn on the generator's device with z's shape and dtype, in step order, the same
stream diffusers' schedulers draw, so one seed gives the same samples in both.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ldm_lite.errors import NonFiniteError, UsageError, UsageTypeError
from ldm_lite.schedule import Schedule
from ldm_lite.validation import check_callable, check_finite, check_generator, check_int, check_number

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]  # (z_t (B,C,H,W), t (B,) long, cond) -> ε̂ (B,C,H,W)
Callback = Callable[[int, int, Tensor, Tensor], None]  # (step, t, z_t, z0_hat)

__all__ = ["ddpm", "ddim", "plms", "dpm_solver_pp", "guided", "from_v", "keep_known", "check_options", "SAMPLERS",
           "LDM_REFERENCE"]

# the timestep convention of CompVis latent-diffusion's DDIMSampler / PLMSSampler (options of `ddim` and `plms`)
LDM_REFERENCE: dict[str, Any] = {"spacing": "ldm_uniform", "offset": 1, "final_alpha_one": False}


# ---------------------------------------------------------------------------------------------- denoiser wrappers
def guided(denoiser: Denoiser, scale: float, uncond: Any) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): ε̃ = ε̂(z, ∅) + s · (ε̂(z, c) - ε̂(z, ∅)).

    One batched forward of [uncond; cond] (2B samples). `uncond` is the "empty" conditioning in the same form as
    `cond` (a tensor (B, ...) or (1, ...), which is expanded, or a dict of such tensors). scale = 1 is the plain
    conditional model, scale = 0 the unconditional one.
    """

    scale = check_number("guidance_scale", scale)
    if scale < 0:
        raise UsageError(f"guidance scale {scale} must be >= 0 (0: unconditional, 1: plain conditional, > 1: "
                         "stronger guidance); to steer away from a prompt, pass it as a negative prompt")

    def eps(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        if cond is None:
            return denoiser(z_t, t, None)
        both = denoiser(torch.cat([z_t, z_t]), torch.cat([t, t]), _cat_cond(uncond, cond, z_t.shape[0]))
        eps_uncond, eps_cond = both.chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return eps


def _cat_cond(uncond: Any, cond: Any, batch: int) -> Any:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: _cat_cond(uncond[k], v, batch) for k, v in cond.items()}
    if dataclasses.is_dataclass(cond):  # e.g. conditioning.Condition(context, concat): field by field
        parts = {f.name: _cat_cond(getattr(uncond, f.name), getattr(cond, f.name), batch)
                 for f in dataclasses.fields(cond)}
        return dataclasses.replace(cond, **parts)
    if not isinstance(cond, Tensor):
        raise TypeError(f"guided() needs tensor (or dict of tensor) conditioning, got {type(cond).__name__}")
    u = uncond.to(cond.device, cond.dtype)
    if u.shape[0] == 1 and batch != 1:
        u = u.expand(batch, *u.shape[1:])
    if u.shape != cond.shape:
        raise ValueError(f"uncond shape {tuple(u.shape)} does not match cond shape {tuple(cond.shape)}")
    return torch.cat([u, cond])


def from_v(denoiser: Denoiser, schedule: Schedule) -> Denoiser:
    """Wrap a v-prediction model as an ε-prediction one: ε̂ = √ᾱ_t v̂ + σ_t z_t (Salimans & Ho 2022)."""

    def eps(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return schedule.eps_from_v(z_t, t, denoiser(z_t, t, cond))

    return eps


def keep_known(denoiser: Denoiser, schedule: Schedule, z_known: Tensor, keep: Tensor) -> Denoiser:
    """Replacement sampling for inpainting (RePaint, Lugmayr et al. 2022; Blended Latent Diffusion, Avrahami et al.
    2023), written on ε so that every sampler keeps its own update: where keep = 1 the prediction ẑ_0 is the known
    latent, i.e. ε̂ is replaced by ε = (z_t - √ᾱ_t z_known) / √(1 - ᾱ_t); elsewhere the model's ε̂ is used.
    A deterministic sampler then ends with z_0 = z_known exactly on the kept cells, and the generated cells are
    denoised beside the known ones at every step. z_known (B, C, H, W); keep (B, 1 or C, H, W) of 0/1.
    """
    for name, x in (("z_known", z_known), ("keep", keep)):
        if not isinstance(x, Tensor):
            raise UsageTypeError(f"{name} must be a tensor, got {type(x).__name__}")
        check_finite(name, x)
    if keep.ndim != z_known.ndim or keep.shape[0] != z_known.shape[0] or keep.shape[2:] != z_known.shape[2:]:
        raise UsageError(f"keep must be a 0/1 mask (B, 1, H, W) matching z_known {tuple(z_known.shape)}, got "
                         f"{tuple(keep.shape)}")

    def eps(z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        e = denoiser(z_t, t, cond)
        return torch.where(keep.to(e) > 0, schedule.eps_from_x0(z_t, t, z_known.to(e)), e)

    return eps


# ---------------------------------------------------------------------------------------------- shared helpers
def check_options(name: str, options: dict[str, Any]) -> None:
    """The extra keyword arguments given for sampler `name` must be options it has (e.g. eta for ddim)."""
    fn = SAMPLERS[name]
    known = [p for p in inspect.signature(fn).parameters
             if p not in ("denoiser", "schedule", "noise", "steps", "cond", "generator", "callback", "prediction")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageTypeError(f"sampler {name!r} has no option {', '.join(unknown)}; its options: {', '.join(known)}")


def _prepare(name: str, denoiser: Denoiser, schedule: Schedule, noise: Tensor, steps: int, spacing: str,
             offset: int, prediction: str, generator: Any = None, callback: Any = None):
    """The checked arguments every sampler shares -> (ε-denoiser, visited t's, next t's, generator, guard)."""
    if not callable(denoiser):
        raise UsageTypeError(f"denoiser must be a function (z_t, t, cond) -> ε̂, got {type(denoiser).__name__}")
    if not isinstance(schedule, Schedule):
        raise UsageTypeError(f"schedule must be a ldm_lite.schedule.Schedule, got {type(schedule).__name__}")
    if not isinstance(noise, Tensor) or not noise.is_floating_point() or noise.ndim < 2:
        got = f"{noise.dtype} {tuple(noise.shape)}" if isinstance(noise, Tensor) else type(noise).__name__
        raise UsageTypeError(f"noise must be a float tensor z_T (B, C, H, W), got {got}")
    check_finite("noise", noise)
    steps = check_int("steps", steps, min=1, max=schedule.T)
    offset = check_int("offset", offset)
    if prediction == "v":
        denoiser = from_v(denoiser, schedule)
    elif prediction != "eps":
        raise UsageError(f"prediction={prediction!r}: use 'eps' for an ε-prediction model or 'v' for v-prediction")
    check_callable("callback", callback)
    ts = schedule.timesteps(steps, spacing, offset).tolist()
    return denoiser, ts, ts[1:] + [-1], check_generator("generator", generator), _FiniteGuard(name, ts, noise.device)


class _FiniteGuard:
    """Stops a sampler whose latent became NaN/inf, naming the step and t. On a CPU every step is checked; on
    another device the first bad step is recorded on the device (no host sync) and read every `every` steps and
    after the last one."""

    def __init__(self, sampler: str, ts: list[int], device: torch.device, every: int = 10):
        self.sampler, self.ts, self.every = sampler, ts, every
        self.first = None if device.type == "cpu" else torch.full((), -1, dtype=torch.long, device=device)

    def __call__(self, i: int, z: Tensor) -> None:
        last = i == len(self.ts) - 1
        if self.first is None:
            if not bool(torch.isfinite(z).all()):
                self._stop(i)
            return
        self.first.masked_fill_(~torch.isfinite(z).all() & (self.first < 0), i)
        if last or (i + 1) % self.every == 0:
            k = int(self.first)
            if k >= 0:
                self._stop(k)

    def _stop(self, i: int) -> None:
        raise NonFiniteError(f"{self.sampler}: the latent became NaN/inf at step {i} of {len(self.ts)} "
                             f"(t={self.ts[i]}); the denoiser returned non-finite values there. Lower guidance_scale, "
                             "check the conditions, or check the model's weights (from_pretrained refuses NaN/inf)")


def _t(t: int, z: Tensor) -> Tensor:
    return torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)  # (B,)


def _randn(z: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else z.device
    return torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)


def _final_alpha_bar(schedule: Schedule, final_alpha_one: bool) -> float:
    return 1.0 if final_alpha_one else float(schedule.alpha_bar[0])


def _x0(z: Tensor, eps: Tensor, ab: float, clip_x0: float | None) -> Tensor:
    x0 = Schedule.x0_at(z, eps, ab)  # DDPM eq. 15
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


# ---------------------------------------------------------------------------------------------- samplers
@torch.no_grad()
def ddpm(
    denoiser: Denoiser,
    schedule: Schedule,
    noise: Tensor,
    steps: int | None = None,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    spacing: str = "leading",
    offset: int = 0,
    clip_x0: float | None = None,
    prediction: str = "eps",
) -> Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), posterior mean eq. 7, variance β̃_t ("fixed small").

    With steps < T the chain is respaced (Nichol & Dhariwal 2021 §4): β_t = 1 - ᾱ_t / ᾱ_prev between visited steps.
    steps=None uses all T steps. `clip_x0` clamps ẑ_0 to [-c, c] (useful in pixel space; off for latents).
    noise (B, C, H, W) -> z0 (B, C, H, W).
    """
    denoiser, ts, prevs, generator, guard = _prepare("ddpm", denoiser, schedule, noise,
                                                     schedule.T if steps is None else steps, spacing, offset,
                                                     prediction, generator, callback)
    z = noise
    for i, (t, t_prev) in enumerate(zip(ts, prevs)):
        ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
        beta = 1 - ab / ab_prev  # β_t of the (respaced) chain
        eps = denoiser(z, _t(t, z), cond)
        x0 = _x0(z, eps, ab, clip_x0)
        if callback is not None:
            callback(i, t, z, x0)
        # μ̃_t(z_t, ẑ_0) = √ᾱ_prev β_t / (1-ᾱ_t) ẑ_0 + √α_t (1-ᾱ_prev) / (1-ᾱ_t) z_t        (DDPM eq. 7)
        z = (ab_prev**0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)) * z
        if i < len(ts) - 1:
            var = (1 - ab_prev) / (1 - ab) * beta  # β̃_t (DDPM eq. 7), σ_t² of Algorithm 2
            z = z + var**0.5 * _randn(z, generator)
        guard(i, z)
    return z


@torch.no_grad()
def ddim(
    denoiser: Denoiser,
    schedule: Schedule,
    noise: Tensor,
    steps: int = 50,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    spacing: str = "leading",
    offset: int = 0,
    final_alpha_one: bool = True,
    clip_x0: float | None = None,
    prediction: str = "eps",
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12), σ_t(η) from eq. 16: η=0 deterministic, η=1 matches DDPM's variance.

    z_prev = √ᾱ_prev ẑ_0 + √(1 - ᾱ_prev - σ_t²) ε̂ + σ_t ε,  σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)
    noise (B, C, H, W) -> z0 (B, C, H, W).
    """
    eta = check_number("eta", eta)
    if not 0.0 <= eta <= 1.0:
        raise UsageError(f"eta={eta} must lie in [0, 1] (0: deterministic DDIM, 1: DDPM's variance)")
    denoiser, ts, prevs, generator, guard = _prepare("ddim", denoiser, schedule, noise, steps, spacing, offset,
                                                     prediction, generator, callback)
    final = _final_alpha_bar(schedule, final_alpha_one)
    z = noise
    for i, (t, t_prev) in enumerate(zip(ts, prevs)):
        ab = schedule.alpha_bar_at(t)
        ab_prev = schedule.alpha_bar_at(t_prev) if t_prev >= 0 else final
        eps = denoiser(z, _t(t, z), cond)
        x0 = _x0(z, eps, ab, clip_x0)
        if callback is not None:
            callback(i, t, z, x0)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5  # eq. 16
        z = ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps  # eq. 12
        if eta > 0:
            z = z + sigma * _randn(z, generator)
        guard(i, z)
    return z


def _ddim_transfer(z: Tensor, eps: Tensor, ab: float, ab_prev: float) -> Tensor:
    """φ(z_t, ε, t -> t_prev) of PNDM (Liu et al. 2022, eq. 11), i.e. a deterministic DDIM step written directly."""
    denom = ab * (1 - ab_prev) ** 0.5 + (ab * (1 - ab) * ab_prev) ** 0.5
    return (ab_prev / ab) ** 0.5 * z - (ab_prev - ab) / denom * eps


@torch.no_grad()
def plms(
    denoiser: Denoiser,
    schedule: Schedule,
    noise: Tensor,
    steps: int = 50,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    spacing: str = "leading",
    offset: int = 0,
    final_alpha_one: bool = True,
    prediction: str = "eps",
) -> Tensor:
    """PLMS, the pseudo linear multi-step sampler of PNDM (Liu et al. 2022, eq. 12) that the LDM paper uses.

    ε' is an Adams-Bashforth combination of the last ε̂'s (orders 2, 3, 4 as history builds up); the first step
    is a pseudo improved-Euler step (one extra denoiser call), as in LDM's `PLMSSampler` and diffusers'
    `PNDMScheduler(skip_prk_steps=True)`; each step then applies the transfer φ (eq. 11). `generator` is unused.
    noise (B, C, H, W) -> z0 (B, C, H, W).
    """
    denoiser, ts, prevs, generator, guard = _prepare("plms", denoiser, schedule, noise, steps, spacing, offset,
                                                     prediction, generator, callback)
    final = _final_alpha_bar(schedule, final_alpha_one)
    z = noise
    history: list[Tensor] = []  # ε̂ at the visited steps, newest last
    for i, (t, t_prev) in enumerate(zip(ts, prevs)):
        ab = schedule.alpha_bar_at(t)
        ab_prev = schedule.alpha_bar_at(t_prev) if t_prev >= 0 else final
        eps = denoiser(z, _t(t, z), cond)
        if callback is not None:
            callback(i, t, z, _x0(z, eps, ab, None))
        e = history = (history + [eps])[-4:]
        if len(e) == 1:  # pseudo improved Euler: average ε̂ at both ends of the step (one extra call at t_prev)
            z_next = _ddim_transfer(z, eps, ab, ab_prev)
            eps_prime = (eps + denoiser(z_next, _t(t_prev, z), cond)) / 2 if t_prev >= 0 else eps
        elif len(e) == 2:  # Adams-Bashforth, orders 2, 3, 4 (PNDM eq. 12)
            eps_prime = (3 * e[-1] - e[-2]) / 2
        elif len(e) == 3:
            eps_prime = (23 * e[-1] - 16 * e[-2] + 5 * e[-3]) / 12
        else:
            eps_prime = (55 * e[-1] - 59 * e[-2] + 37 * e[-3] - 9 * e[-4]) / 24
        z = _ddim_transfer(z, eps_prime, ab, ab_prev)
        guard(i, z)
    return z


@torch.no_grad()
def dpm_solver_pp(
    denoiser: Denoiser,
    schedule: Schedule,
    noise: Tensor,
    steps: int = 20,
    *,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    spacing: str = "leading",
    offset: int = 0,
    prediction: str = "eps",
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a second-order multistep solver of the diffusion ODE in the
    data-prediction form, in the time variable λ_t = log(√ᾱ_t / σ_t).

    With h = λ_prev - λ_t, r = h_last / h, D = (1 + 1/(2r)) ẑ_0(t) - 1/(2r) ẑ_0(t_last):
        z_prev = (σ_prev / σ_t) z_t - √ᾱ_prev (e^{-h} - 1) D
    The first step is first order (DDIM); the last step goes to σ = 0 and returns ẑ_0 (diffusers'
    `final_sigmas_type="zero"`). `generator` is unused. noise (B, C, H, W) -> z0 (B, C, H, W).
    """
    denoiser, ts, prevs, generator, guard = _prepare("dpm_solver_pp", denoiser, schedule, noise, steps, spacing,
                                                     offset, prediction, generator, callback)
    z = noise
    x0_last: Tensor | None = None
    lam_last = 0.0
    for i, (t, t_prev) in enumerate(zip(ts, prevs)):
        ab = schedule.alpha_bar_at(t)
        eps = denoiser(z, _t(t, z), cond)
        x0 = _x0(z, eps, ab, None)
        if callback is not None:
            callback(i, t, z, x0)
        lam = Schedule.half_log_snr_at(ab)
        if t_prev < 0:
            z = x0  # σ_prev = 0: the ODE solution at t = 0 is the data prediction itself
        else:
            ab_prev = schedule.alpha_bar_at(t_prev)
            a_prev, s_prev, s = ab_prev**0.5, (1 - ab_prev) ** 0.5, (1 - ab) ** 0.5
            h = Schedule.half_log_snr_at(ab_prev) - lam
            if x0_last is None:
                d = x0  # first order (= DDIM)
            else:
                r = (lam - lam_last) / h
                d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_last
            z = (s_prev / s) * z - a_prev * math.expm1(-h) * d
        x0_last, lam_last = x0, lam
        guard(i, z)
    return z


SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": ddpm, "ddim": ddim, "plms": plms, "dpm_solver_pp": dpm_solver_pp}

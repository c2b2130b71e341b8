"""The forward process q(z_t | z_0) and its noise schedule (DDPM, Ho et al. 2020; LDM §3.2).

Notation (paper symbol -> name here; all tensors have shape (T,), index t = 0 .. T-1):

    β_t                         betas       variance added at step t
    α_t = 1 - β_t               alphas
    ᾱ_t = ∏_{s<=t} α_s          alpha_bar   signal fraction kept after t steps
    √ᾱ_t                        sqrt_alpha_bar   (scales z_0; "alpha_t" in DPM-Solver's notation)
    σ_t = √(1 - ᾱ_t)            sigma       noise std of z_t (DPM-Solver's σ_t; NOT k-diffusion's σ)
    SNR(t) = ᾱ_t / (1 - ᾱ_t)    snr         signal-to-noise ratio (Kingma et al. 2021)
    λ_t = log(√ᾱ_t / σ_t)       log_snr / 2 (half log-SNR, the DPM-Solver time variable)

    z_t = √ᾱ_t z_0 + σ_t ε,  ε ~ N(0, I)                           (DDPM eq. 4)
    ẑ_0 = (z_t - σ_t ε̂) / √ᾱ_t                                      (DDPM eq. 15)
    v   = √ᾱ_t ε - σ_t z_0                                           (Salimans & Ho 2022, §4)

Schedules (values match diffusers' `DDPMScheduler` with the same `beta_schedule` to 1e-6, see tests):
    linear          β linear from 1e-4 to 0.02 (DDPM)
    scaled_linear   √β linear from √β_start to √β_end; default 0.00085 -> 0.012 (measured better here; `ldm(...)`
                    gives the paper's models' endpoints)
                    (CompVis calls it "linear"; diffusers calls it "scaled_linear")
    cosine          ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), β capped at 0.999 (Nichol & Dhariwal
                    2021; diffusers' "squaredcos_cap_v2")

The paper's β endpoints (CompVis/latent-diffusion, `linear_start` / `linear_end` in each model's config.yaml):
    0.0015 -> 0.0195   unconditional (celeba256, ffhq256, lsun_beds256), class-conditional (cin256) and the
                       256² text-to-image model (text2img256)                         `Schedule.ldm()`
    0.0015 -> 0.0155   super-resolution (bsr_sr) and LSUN churches (lsun_churches256)   `Schedule.ldm(0.0155)`
    0.0015 -> 0.0205   layout (layout2img-openimages256), inpainting (inpainting_big), semantic synthesis
                       (semantic_synthesis256/512)                                     `Schedule.ldm(0.0205)`
    0.00085 -> 0.012   only the 1.4B text-to-image model (configs/latent-diffusion/txt2img-1p4B-eval.yaml) and
                       Stable Diffusion                                                `Schedule.stable_diffusion()`
The larger end leaves less signal at t = T (ᾱ_T ≈ 1.4e-4 for 0.0015 -> 0.0195 vs 4.7e-3 for 0.00085 -> 0.012), so
z_T is closer to the pure noise a sampler starts from. The kit's default (`scaled_linear()`, `LatentDiffusion`) is
nevertheless 0.00085 -> 0.012, on purpose: on the main job's model and budget (800 steps) it gave 86.3% recognisable (old judge)
samples and FID 59.3 against 75.4% and 85.0 with the paper's 0.0015 -> 0.0195 (one seed, 256 DDIM-50 samples;
`python scripts/compare_beta_schedules.py --steps 800`), and the shipped `ldm-kl-f4-shapes32` uses it. Use
`Schedule.ldm(...)` to train with the paper's endpoints.

Values are computed and kept in float64 on the CPU; every method gathers them at `t`, casts them to the dtype of
the tensor it scales and moves them to its device (float64 never reaches MPS, which lacks it).

Timestep spacing for samplers with fewer steps than T (`timesteps(steps, spacing)`; Lin et al. 2023, Table 2;
the same definitions as diffusers' `DDPMScheduler`/`DDIMScheduler`/`PNDMScheduler`):
    "leading"   t = (steps-1-i) · (T // steps) + offset      e.g. T=1000, 50 steps: 980, 960, ..., 20, 0
    "trailing"  t = round(T - i · T/steps) - 1               e.g. 999, 979, ..., 39, 19  (starts at pure noise)
    "linspace"  t = round(linspace(0, T-1, steps))[::-1]     e.g. 999, 979, ..., 20, 0
    "ldm_uniform"  t = range(0, T, T // steps)[::-1] + offset  CompVis `make_ddim_timesteps("uniform")` (with offset 1:
                "leading" + 1). The same as "leading" when steps divides T; otherwise it visits ⌈T / (T // steps)⌉
                timesteps, more than `steps` (30 steps: 31 timesteps from 990, 991 with offset 1). With offset 1
                some step counts reach t = T (steps = 3, 9, 27, 36, 37, 101-111, 251-333 and 501-1000 at T = 1000),
                where the reference fails with an IndexError; here that is a ValueError naming the nearest counts
                that work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .errors import UsageError
from .validation import check_int

SPACINGS = ("leading", "trailing", "linspace", "ldm_uniform")
LDM_BETA_START = 0.0015  # β_1 of every reference LDM except the 1.4B text-to-image model
LDM_BETA_ENDS = (0.0195, 0.0155, 0.0205)  # the reference configs' β_T values (see the module docstring)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance schedule β_1..β_T and the quantities derived from it (all (T,), float64, CPU)."""

    betas: Tensor  # (T,)
    name: str = "custom"  # the preset that made it ("linear", "scaled_linear", "cosine") or "custom"
    params: dict = field(default_factory=dict)  # the preset's arguments besides T, e.g. {"beta_start": ..., "beta_end": ...}

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise UsageError(f"betas must be a 1-D tensor of length T >= 1, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise UsageError("every beta must lie in (0, 1); check beta_start/beta_end")
        object.__setattr__(self, "betas", betas)

    # ------------------------------------------------------------------ presets
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        """β linear in t (DDPM, Ho et al. 2020 §4)."""
        check_int("T", T, min=1)
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear",
                   params={"beta_start": beta_start, "beta_end": beta_end})

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
        """√β linear in t, the form of LDM's schedules (Rombach et al. 2022); the defaults are the kit's (see the
        module docstring), `ldm(...)` gives the paper's."""
        check_int("T", T, min=1)
        root = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64)
        return cls(root**2, name="scaled_linear", params={"beta_start": beta_start, "beta_end": beta_end})

    @classmethod
    def ldm(cls, beta_end: float = 0.0195, T: int = 1000) -> Schedule:
        """The paper's schedule: √β linear from 0.0015 to `beta_end`, one of the reference configs' 0.0195
        (unconditional, class-conditional, 256² text-to-image), 0.0155 (super-resolution, LSUN churches) or 0.0205
        (layout, inpainting, semantic synthesis); see the module docstring for the config files."""
        if beta_end not in LDM_BETA_ENDS:
            raise UsageError(f"beta_end={beta_end} is not one of the reference LDM values {LDM_BETA_ENDS}; "
                             "use Schedule.scaled_linear(beta_start=..., beta_end=...) for other endpoints")
        return cls.scaled_linear(T, LDM_BETA_START, beta_end)

    @classmethod
    def stable_diffusion(cls, T: int = 1000) -> Schedule:
        """√β linear from 0.00085 to 0.012: LDM's 1.4B text-to-image model and Stable Diffusion (not the paper's
        other models)."""
        return cls.scaled_linear(T, 0.00085, 0.012)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
        """ᾱ_t = cos²(((t/T)+s)/(1+s) · π/2) (Nichol & Dhariwal 2021, eq. 17), β_t = 1 - ᾱ_t/ᾱ_{t-1} capped."""
        check_int("T", T, min=1)

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
        return cls(torch.tensor(betas, dtype=torch.float64), name="cosine", params={"s": s, "max_beta": max_beta})

    # ------------------------------------------------------------------ derived tensors (T,)
    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> Tensor:
        return torch.cumprod(self.alphas, dim=0)

    @property
    def sqrt_alpha_bar(self) -> Tensor:
        return self.alpha_bar.sqrt()

    @property
    def sigma(self) -> Tensor:
        """σ_t = √(1 - ᾱ_t), the standard deviation of the noise in z_t."""
        return (1.0 - self.alpha_bar).sqrt()

    @property
    def snr(self) -> Tensor:
        """SNR(t) = ᾱ_t / (1 - ᾱ_t)."""
        ab = self.alpha_bar
        return ab / (1.0 - ab)

    @property
    def log_snr(self) -> Tensor:
        return self.snr.log()

    # ------------------------------------------------------------------ gathering at t
    def at(self, values: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        """`values[t]` (values: (T,)) shaped (B, 1, ..., 1) to broadcast against `like` (B, ...), in its dtype/device."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        if t.ndim == 0:
            t = t.expand(like.shape[0])
        if bool((t >= self.T).any()) or bool((t < 0).any()):
            raise UsageError(f"timesteps must lie in [0, {self.T - 1}] for this schedule, got {t.tolist()[:8]}")
        out = values[t].to(like.dtype).to(like.device)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def alpha_bar_at(self, t: int) -> float:
        """ᾱ_t as a Python float, with ᾱ_{-1} = 1 (the clean sample; the target of a sampler's last step)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    # ------------------------------------------------------------------ forward process and parameterisations
    def q_sample(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = √ᾱ_t z_0 + √(1-ᾱ_t) ε  (DDPM eq. 4).  z0, noise: (B, ...); t: (B,) long -> (B, ...)."""
        return self.at(self.sqrt_alpha_bar, t, z0) * z0 + self.at(self.sigma, t, z0) * noise

    def x0_from_eps(self, z_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """ẑ_0 = (z_t - σ_t ε̂) / √ᾱ_t  (DDPM eq. 15).  (B, ...) -> (B, ...)."""
        return (z_t - self.at(self.sigma, t, z_t) * eps) / self.at(self.sqrt_alpha_bar, t, z_t)

    def eps_from_x0(self, z_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε̂ = (z_t - √ᾱ_t ẑ_0) / σ_t.  (B, ...) -> (B, ...)."""
        return (z_t - self.at(self.sqrt_alpha_bar, t, z_t) * x0) / self.at(self.sigma, t, z_t)

    # the same conversions at a value of ᾱ rather than a table index: what a sampler has at a respaced step or at
    # its final ᾱ = 1 (Python floats, so a sampler's arithmetic is the same on every device)
    @staticmethod
    def x0_at(z_t: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
        """ẑ_0 = (z_t - √(1-ᾱ) ε̂) / √ᾱ  (DDPM eq. 15) at ᾱ = alpha_bar.  (B, ...) -> (B, ...)."""
        return (z_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5

    @staticmethod
    def half_log_snr_at(alpha_bar: float) -> float:
        """λ = log(√ᾱ / σ) = ½ log(ᾱ / (1 - ᾱ)), DPM-Solver's time variable, at ᾱ = alpha_bar."""
        return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))

    def v_target(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = √ᾱ_t ε - σ_t z_0, the v-prediction target (Salimans & Ho 2022, §4).  (B, ...) -> (B, ...)."""
        return self.at(self.sqrt_alpha_bar, t, z0) * noise - self.at(self.sigma, t, z0) * z0

    def eps_from_v(self, z_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """ε = √ᾱ_t v + σ_t z_t (since z_t = √ᾱ_t z_0 + σ_t ε and √ᾱ_t² + σ_t² = 1).  (B, ...) -> (B, ...)."""
        return self.at(self.sqrt_alpha_bar, t, z_t) * v + self.at(self.sigma, t, z_t) * z_t

    def x0_from_v(self, z_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """z_0 = √ᾱ_t z_t - σ_t v.  (B, ...) -> (B, ...)."""
        return self.at(self.sqrt_alpha_bar, t, z_t) * z_t - self.at(self.sigma, t, z_t) * v

    # ------------------------------------------------------------------ sampling timesteps
    def timesteps(self, steps: int, spacing: str = "leading", offset: int = 0) -> Tensor:
        """The timesteps a sampler visits, in decreasing order: LongTensor (steps,), or (⌈T / (T // steps)⌉,) for
        "ldm_uniform" (the reference's count; see the module doc)."""
        T = self.T
        if not 1 <= steps <= T:
            raise UsageError(f"steps={steps} must be between 1 and T={T}")
        if spacing == "leading":
            ts = np.arange(steps)[::-1] * (T // steps) + offset
        elif spacing == "trailing":
            ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1 + offset
        elif spacing == "linspace":
            ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64) + offset
        elif spacing == "ldm_uniform":
            ts = np.arange(0, T, T // steps)[::-1] + offset
            if int(ts.max()) >= T:
                ok = [s for s in range(1, T + 1) if (T - 1) // (T // s) * (T // s) + offset < T]
                near = [max([s for s in ok if s < steps], default=None), min([s for s in ok if s > steps], default=None)]
                raise ValueError(f"steps={steps} with spacing='ldm_uniform', offset={offset} would visit "
                                 f"t={int(ts.max())}, outside [0, {T - 1}] (CompVis' make_ddim_timesteps fails there "
                                 f"too, with an IndexError); use steps=" + " or ".join(str(s) for s in near if s))
        else:
            raise UsageError(f"spacing={spacing!r} is not one of {SPACINGS}")
        ts = torch.from_numpy(np.ascontiguousarray(ts, dtype=np.int64))
        if int(ts.max()) >= T or int(ts.min()) < 0:
            raise UsageError(f"offset={offset} moves the timesteps outside [0, {T - 1}]; use a smaller offset")
        return ts

    def __repr__(self) -> str:
        return f"Schedule({self.name}, T={self.T}, beta=[{float(self.betas[0]):.3g}, {float(self.betas[-1]):.3g}])"

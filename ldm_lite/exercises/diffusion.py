"""Checked exercises of notebooks 02 and 04: the forward process, SNR, ẑ_0, the DDIM step and classifier-free
guidance. See `ldm_lite.exercises`."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import runtime, samplers
from ..classifier import MNISTClassifier
from ..metrics import psnr
from ..paths import PRETRAINED_DIR
from ..samplers import guided
from ..schedule import Schedule
from .checking import (
    SCHEDULES,
    Case,
    Fn,
    Verdict,
    check,
    gen,
    learner_alpha_bar,
    missing,
    patched,
    rand,
    real_autoencoder,
    real_images,
    real_ldm,
    schedule_of,
    shipped,
)


# ============================================================================================== 02 the forward process
def check_q_sample(fn: Fn, demo: bool = True) -> Verdict:
    """`q_sample(alpha_bar, z0, t, noise) -> z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε` (DDPM eq. 4). alpha_bar (T,) float32,
    z0 and noise (B, c, h, w), t (B,) long in [0, T−1]. Cases: random t, t = 0, t = T−1, the cosine schedule, real
    latents of the shipped autoencoder."""
    def ref(alpha_bar, z0, t, noise):
        return schedule_of(alpha_bar).q_sample(z0, t, noise)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z_real = ae.to_latent(real_images(), sample=False)
    t_mixed = torch.tensor([3, 250, 600, 999])
    cases = [Case("random z0, t = 3, 250, 600, 999", (learner_alpha_bar(), rand(4, 3, 8, 8), t_mixed, rand(4, 3, 8, 8, seed=1))),
             Case("t = 0 (almost clean)", (learner_alpha_bar(), rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999 (almost pure noise)", (learner_alpha_bar(), rand(2, 3, 8, 8), torch.full((2,), 999), rand(2, 3, 8, 8, seed=1))),
             Case("cosine schedule", (learner_alpha_bar("cosine"), rand(4, 3, 8, 8), t_mixed, rand(4, 3, 8, 8, seed=1))),
             Case(f"real latents ({source})", (learner_alpha_bar(), z_real, torch.tensor([0, 100, 500, 900]), rand(*z_real.shape)))]

    def at(ab, t):
        return ab[t.clamp(0, len(ab) - 1)].view(-1, 1, 1, 1)

    mistakes = [
        ("missing square roots: z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε, not ᾱ_t·z_0 + (1 − ᾱ_t)·ε",
         lambda ab, z, t, n: at(ab, t) * z + (1 - at(ab, t)) * n),
        ("missing square root on the noise term: its standard deviation is √(1 − ᾱ_t)",
         lambda ab, z, t, n: at(ab, t).sqrt() * z + (1 - at(ab, t)) * n),
        ("missing square root on the signal term: z_0 is scaled by √ᾱ_t",
         lambda ab, z, t, n: at(ab, t) * z + (1 - at(ab, t)).sqrt() * n),
        ("off-by-one in t: use alpha_bar[t], not alpha_bar[t - 1] (t runs from 0 to T−1 here)",
         lambda ab, z, t, n: at(ab, t - 1).sqrt() * z + (1 - at(ab, t - 1)).sqrt() * n),
        ("off-by-one in t: use alpha_bar[t], not alpha_bar[t + 1]",
         lambda ab, z, t, n: at(ab, t + 1).sqrt() * z + (1 - at(ab, t + 1)).sqrt() * n),
        ("the weights are swapped: √ᾱ_t multiplies z_0 and √(1 − ᾱ_t) multiplies ε",
         lambda ab, z, t, n: (1 - at(ab, t)).sqrt() * z + at(ab, t).sqrt() * n),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        z0 = ae.to_latent(real_images(16), sample=False)
        ts = [0, 250, 500, 750, 999]
        corr = []
        for t in ts:
            z_t = f(learner_alpha_bar(), z0, torch.full((len(z0),), t), rand(*z0.shape, seed=t))
            corr.append(float(torch.corrcoef(torch.stack([z_t.flatten(), z0.flatten()]))[0, 1]))
        root = [float(learner_alpha_bar()[t].sqrt()) for t in ts]
        return {"t": ts, "corr": corr, "summary": f"your z_t of {source}'s latents (16 shapes): corr(z_t, z_0) at "
                f"t = {'/'.join(map(str, ts))} = {'/'.join(f'{c:.2f}' for c in corr)}; √ᾱ_t = "
                f"{'/'.join(f'{r:.2f}' for r in root)} (equal for unit-variance latents)."}

    return check("q_sample", fn, ref, cases, mistakes, "Schedule.q_sample", run, demo)


def check_snr(fn: Fn, demo: bool = True) -> Verdict:
    """`snr(alpha_bar) -> SNR(t) = ᾱ_t / (1 − ᾱ_t)`, (T,) → (T,) float64. Cases: the scaled-linear, linear and
    cosine schedules (whose ᾱ_{T−1} ≈ 0), and a 10-step schedule."""
    def ref(alpha_bar):
        return Schedule(1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])).snr

    cases = [Case(f"{name} schedule", (s.alpha_bar.clone(),)) for name, s in SCHEDULES.items()]
    cases.append(Case("T = 10", (Schedule.linear(T=10, beta_end=0.2).alpha_bar,)))
    mistakes = [
        ("√ᾱ/√(1 − ᾱ) is a ratio of amplitudes; the SNR is a ratio of powers: ᾱ / (1 − ᾱ) (square it)",
         lambda ab: ab.sqrt() / (1 - ab).sqrt()),
        ("inverted: (1 − ᾱ)/ᾱ is the noise-to-signal ratio", lambda ab: (1 - ab) / ab),
        ("this is log SNR; return the SNR itself", lambda ab: (ab / (1 - ab)).log()),
        ("ᾱ alone is the signal fraction; the SNR divides it by the noise variance 1 − ᾱ", lambda ab: ab),
    ]

    def run(f: Fn) -> dict:
        where = {name: int((f(s.alpha_bar) < 1).nonzero()[0]) for name, s in SCHEDULES.items()}
        return {"t_snr_below_1": where, "summary": "with your SNR the signal drops below the noise (SNR < 1) at "
                + ", ".join(f"t = {t} ({name})" for name, t in where.items()) + "."}

    return check("snr", fn, ref, cases, mistakes, "Schedule.snr", run, demo)


def check_scaled_linear_alpha_bar(fn: Fn, demo: bool = True) -> Verdict:
    """`scaled_linear_alpha_bar(T, beta_start, beta_end) -> ᾱ (T,) float64`: LDM's noise schedule (its configs'
    `linear` schedule, `Schedule.scaled_linear`): √β_t linear in t from √beta_start to √beta_end over t = 0 .. T−1,
    and ᾱ_t = ∏_{s ≤ t} (1 − β_s) (DDPM §2). Cases: the kit's 0.00085 → 0.012, the paper's 0.0015 → 0.0195, T = 10,
    T = 1. Demo: the shipped LDM samples with the schedule made from your ᾱ."""
    def ref(T, beta_start, beta_end):
        return Schedule.scaled_linear(T, beta_start, beta_end).alpha_bar

    cases = [Case("T = 1000, 0.00085 -> 0.012 (the kit's)", (1000, 0.00085, 0.012)),
             Case("T = 1000, 0.0015 -> 0.0195 (the paper's)", (1000, 0.0015, 0.0195)),
             Case("T = 10, 0.01 -> 0.2", (10, 0.01, 0.2)),
             Case("T = 1", (1, 0.02, 0.02))]

    def ab(T, b0, b1, roots=True, prod=True, start_at_one=False):
        betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2 if roots else \
            torch.linspace(b0, b1, T, dtype=torch.float64)
        out = torch.cumprod(1 - betas, 0) if prod else 1 - torch.cumsum(betas, 0)
        return torch.cat([out.new_ones(1), out[:-1]]) if start_at_one else out

    mistakes = [
        ("β itself is linear there (DDPM's schedule); LDM's is linear in √β: linspace(√beta_start, √beta_end, T) ** 2",
         lambda T, b0, b1: ab(T, b0, b1, roots=False)),
        ("ᾱ is a product, not a sum: ᾱ_t = ∏ (1 − β_s) (torch.cumprod), not 1 − Σ β_s",
         lambda T, b0, b1: ab(T, b0, b1, prod=False)),
        ("off by one: ᾱ_0 = 1 − β_0 already includes the first step (cumprod, no leading 1)",
         lambda T, b0, b1: ab(T, b0, b1, start_at_one=True)),
        ("the product of the β's is not ᾱ: multiply the α_t = 1 − β_t",
         lambda T, b0, b1: torch.cumprod(torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2, 0)),
        ("√ᾱ is not ᾱ: ᾱ_t is the product itself", lambda T, b0, b1: ab(T, b0, b1).sqrt()),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model, source = real_ldm()
        sched = model.schedule
        mine = torch.as_tensor(f(sched.T, sched.params["beta_start"], sched.params["beta_end"]), dtype=torch.float64)
        yours = Schedule(1 - mine / torch.cat([mine.new_ones(1), mine[:-1]]))  # β_t = 1 − ᾱ_t / ᾱ_{t−1}
        n_img, steps = (2, 3) if runtime.smoke_mode() else (8, 25)
        noise = torch.randn(n_img, *model.latent_shape, generator=gen(0))
        want = model.sample(n_img, noise=noise, steps=steps, return_latents=True)
        original = model.schedule
        model.schedule = yours
        try:
            got = model.sample(n_img, noise=noise, steps=steps, return_latents=True)
        finally:
            model.schedule = original
        diff = float((got - want).abs().max())
        return {"images": model.decode(got), "max_diff": diff, "summary": (
            f"{source} sampled {n_img} images (DDIM, {steps} steps) with the schedule made from your ᾱ "
            f"(β_t = 1 − ᾱ_t/ᾱ_(t−1)): the same latents as with its own (max difference {diff:.1e}); its SNR falls "
            f"below 1 at t = {int((mine / (1 - mine) < 1).nonzero()[0])} of {sched.T}.")}

    return check("scaled_linear_alpha_bar", fn, ref, cases, mistakes, "Schedule.scaled_linear", run, demo, atol=1e-6)


# ============================================================================================== 04 the samplers
def check_predict_x0(fn: Fn, demo: bool = True) -> Verdict:
    """`predict_x0(alpha_bar, z_t, t, eps) -> ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t` (DDPM eq. 15), the inverse of
    q_sample for a given ε̂. alpha_bar (T,) float32, z_t and eps (B, c, h, w), t (B,) long. Cases: random t, t = 0,
    t = T−1, round trip on real latents."""
    def ref(alpha_bar, z_t, t, eps):
        return schedule_of(alpha_bar).x0_from_eps(z_t, t, eps)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z0 = ae.to_latent(real_images(), sample=False)
    t4, n = torch.tensor([10, 400, 800, 999]), rand(*z0.shape, seed=1)
    cases = [Case("random z_t, t = 3, 250, 600, 999", (learner_alpha_bar(), rand(4, 3, 8, 8), torch.tensor([3, 250, 600, 999]), rand(4, 3, 8, 8, seed=1))),
             Case("t = 0", (learner_alpha_bar(), rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999", (learner_alpha_bar(), rand(2, 3, 8, 8), torch.full((2,), 999), rand(2, 3, 8, 8, seed=1))),
             Case(f"real latents of {source} noised with the true ε", (learner_alpha_bar(), SCHEDULES["scaled_linear"].q_sample(z0, t4, n), t4, n))]

    def at(ab, t):
        return ab[t.clamp(0, len(ab) - 1)].view(-1, 1, 1, 1)

    mistakes = [
        ("missing square roots: ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t", lambda ab, z, t, e: (z - (1 - at(ab, t)) * e) / at(ab, t)),
        ("divide by √ᾱ_t (the signal's scale), not by ᾱ_t", lambda ab, z, t, e: (z - (1 - at(ab, t)).sqrt() * e) / at(ab, t)),
        ("the division by √ᾱ_t is missing", lambda ab, z, t, e: z - (1 - at(ab, t)).sqrt() * e),
        ("the noise is subtracted, not added: ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t",
         lambda ab, z, t, e: (z + (1 - at(ab, t)).sqrt() * e) / at(ab, t).sqrt()),
        ("off-by-one in t: use alpha_bar[t]", lambda ab, z, t, e: (z - (1 - at(ab, t - 1)).sqrt() * e) / at(ab, t - 1).sqrt()),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model, src = real_ldm()
        z0 = model.encode(real_images(8)[:, :, : model.config.image_size, : model.config.image_size])
        t = torch.full((8,), 500)
        z_t = model.schedule.q_sample(z0, t, rand(*z0.shape, seed=2))
        x0_hat = f(model.schedule.alpha_bar.float(), z_t, t, model.unet(z_t, t))
        p = float(psnr(model.decode(x0_hat), model.decode(z0)).mean())
        return {"images": model.decode(x0_hat), "psnr": p, "summary": f"{src} denoised 8 latents from t = 500 in one "
                f"step with your ẑ_0: PSNR {p:.1f} dB against the clean images' decoding."}

    return check("predict_x0", fn, ref, cases, mistakes, "Schedule.x0_from_eps", run, demo)


def ddim_step_reference(z_t: Tensor, eps: Tensor, ab: float, ab_prev: float, eta: float, noise: Tensor) -> Tensor:
    """One step of `ll.samplers.ddim` (DDIM eq. 12, σ of eq. 16); tests/test_exercises.py ties the two."""
    x0 = (z_t - (1 - ab) ** 0.5 * eps) / ab**0.5  # DDPM eq. 15
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5  # eq. 16
    return ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps + sigma * noise  # eq. 12


def check_ddim_step(fn: Fn, demo: bool = True) -> Verdict:
    """`ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise) -> z_prev` (DDIM eq. 12): with
    ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t and σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev) (eq. 16),
    z_prev = √ᾱ_prev·ẑ_0 + √(1 − ᾱ_prev − σ_t²)·ε̂ + σ_t·noise. ᾱ's are floats; tensors (B, c, h, w).
    Cases: η = 0, η = 1, η = 0.5, the last step (ᾱ_prev = 1), the first step from t = T−1, the shipped model's ε̂."""
    ab = SCHEDULES["scaled_linear"].alpha_bar_at
    z, e, n = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1), rand(2, 3, 8, 8, seed=2)
    model, source = real_ldm()
    with torch.no_grad():
        z_real = rand(2, *model.latent_shape, seed=3)
        e_real = model.unet(z_real, torch.full((2,), 979))
    cases = [Case("η = 0, t = 500 -> 480", (z, e, ab(500), ab(480), 0.0, n)),
             Case("η = 1, t = 500 -> 480", (z, e, ab(500), ab(480), 1.0, n)),
             Case("η = 0.5, t = 200 -> 100", (z, e, ab(200), ab(100), 0.5, n)),
             Case("last step, t = 20 -> ᾱ_prev = 1", (z, e, ab(20), 1.0, 1.0, n)),
             Case("first step, t = T-1 = 999 -> 979", (z, e, ab(999), ab(979), 1.0, n)),
             Case(f"{source}'s ε̂ at t = 979", (z_real, e_real, ab(979), ab(959), 0.0, torch.zeros_like(z_real)))]

    def step(z, e, a, ap, eta, n, root_prev=True, sig2=True, sig_root=True, add_noise=True):
        x0 = (z - (1 - a) ** 0.5 * e) / a**0.5
        s2 = eta**2 * ((1 - ap) / (1 - a) * (1 - a / ap)) if sig_root else (eta * (1 - ap) / (1 - a) * (1 - a / ap)) ** 2
        s = s2**0.5
        return ((ap**0.5 if root_prev else ap) * x0 + (1 - ap - (s2 if sig2 else 0)) ** 0.5 * e
                + (s * n if add_noise else 0))

    mistakes = [
        ("missing square root: ẑ_0 is scaled by √ᾱ_prev", lambda *a: step(*a, root_prev=False)),
        ("the direction term is √(1 − ᾱ_prev − σ_t²)·ε̂: σ_t² is missing (it matters only for η > 0)",
         lambda *a: step(*a, sig2=False)),
        ("σ_t of eq. 16 has square roots: σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)",
         lambda *a: step(*a, sig_root=False)),
        ("no fresh noise: add σ_t·noise (zero at η = 0, not at η > 0)", lambda *a: step(*a, add_noise=False)),
        ("this returns z_t unchanged: the step must move to ᾱ_prev (ᾱ_t used twice? an off-by-one in t?)",
         lambda z, e, a, ap, eta, n: z),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        n_img, steps = (4, 4) if runtime.smoke_mode() else (8, 25)
        noise = torch.randn(n_img, *model.latent_shape, generator=gen(0))
        sched = model.schedule
        ts = sched.timesteps(steps).tolist()
        z = noise
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            eps = model.denoiser(z, torch.full((n_img,), t), None)
            z = f(z, eps, sched.alpha_bar_at(t), sched.alpha_bar_at(t_prev), 0.0, torch.zeros_like(z))
        lib = samplers.ddim(model.denoiser, sched, noise, steps)
        diff = float((z - lib).abs().max())
        return {"images": model.decode(z), "max_diff": diff, "summary": f"sampled {n_img} images from {source} with "
                f"your DDIM step ({steps} steps, η = 0): the same latents as ll.samplers.ddim from this noise "
                f"(max difference {diff:.1e}); demo.images holds them."}

    return check("ddim_step", fn, ddim_step_reference, cases, mistakes, "DDIM step (ll.samplers.ddim)", run, demo, atol=1e-4)


def check_ddpm_step(fn: Fn, demo: bool = True) -> Verdict:
    """`ddpm_step(z_t, eps, alpha_bar_t, alpha_bar_prev, noise) -> z_prev`: one ancestral DDPM step (DDPM
    Algorithm 2 with the posterior q(z_prev | z_t, ẑ_0) of eq. 6-7), as `ll.samplers.ddpm` takes it:
    β_t = 1 − ᾱ_t/ᾱ_prev (the step's own β, so respaced chains work), ẑ_0 from ε̂ (eq. 15), z_prev = μ̃_t(z_t, ẑ_0)
    + σ_t·noise with σ_t² = β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t. ᾱ's are floats; tensors (B, c, h, w). Cases: a
    one-step chain (t → t − 1), a respaced step, the last step (ᾱ_prev = 1: no noise), the first step, the shipped
    model's ε̂. Demo: the shipped LDM samples with your step, the same draws as `ll.samplers.ddpm`."""
    from .. import samplers

    def ref(z_t, eps, ab, ab_prev, noise):
        # the library's sampler on a chain whose last two steps are (ab, ab_prev), its noise draw replaced by `noise`
        betas = [1 - ab] if ab_prev == 1.0 else [1 - ab_prev, 1 - ab / ab_prev]
        chain, seen = Schedule(torch.tensor(betas, dtype=torch.float64)), []
        with patched(samplers, "_randn", lambda z, g: noise):
            out = samplers.ddpm(lambda z, t, c: eps, chain, z_t, len(betas),
                                callback=lambda i, t, z, x0: seen.append(z))
        return out if ab_prev == 1.0 else seen[1]

    ab = SCHEDULES["scaled_linear"].alpha_bar_at
    z, e, n = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1), rand(2, 3, 8, 8, seed=2)
    model, source = real_ldm()
    with torch.no_grad():
        z_real = rand(2, *model.latent_shape, seed=3)
        e_real = model.unet(z_real, torch.full((2,), 979))
    cases = [Case("one step of the full chain, t = 500 -> 499", (z, e, ab(500), ab(499), n)),
             Case("a respaced step, t = 500 -> 480", (z, e, ab(500), ab(480), n)),
             Case("last step, t = 20 -> ᾱ_prev = 1 (no noise)", (z, e, ab(20), 1.0, n)),
             Case("first step, t = T-1 = 999 -> 959", (z, e, ab(999), ab(959), n)),
             Case(f"{source}'s ε̂ at t = 979", (z_real, e_real, ab(979), ab(939), n))]

    def step(z, e, a, ap, n, var="tilde", noise=True, beta=None):
        beta = 1 - a / ap if beta is None else beta
        x0 = (z - (1 - a) ** 0.5 * e) / a**0.5
        mean = ap**0.5 * beta / (1 - a) * x0 + (1 - beta) ** 0.5 * (1 - ap) / (1 - a) * z  # μ̃_t, eq. 7
        v = {"tilde": (1 - ap) / (1 - a) * beta, "beta": beta, "no_root": ((1 - ap) / (1 - a) * beta) ** 2}[var]
        return mean + (v**0.5 * n if noise else 0)

    mistakes = [
        ("σ_t² = β_t is DDPM's other choice; this sampler uses β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t",
         lambda *a: step(*a, var="beta")),
        ("the noise is scaled by σ_t = √β̃_t, not by β̃_t", lambda *a: step(*a, var="no_root")),
        ("no fresh noise: DDPM adds σ_t·noise at every step (σ_t = 0 only at the last)", lambda *a: step(*a, noise=False)),
        ("this returns z_t unchanged: the step must move to ᾱ_prev", lambda z, e, a, ap, n: z),
        ("that is DDIM (η = 0): the DDPM mean is the posterior mean μ̃_t(z_t, ẑ_0) of eq. 7, plus noise",
         lambda z, e, a, ap, n: ddim_step_reference(z, e, a, ap, 0.0, n)),
        ("β_t is the step's own 1 − ᾱ_t/ᾱ_prev (so respaced chains work), not 1 − ᾱ_t",
         lambda z, e, a, ap, n: step(z, e, a, ap, n, beta=1 - a)),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        n_img, steps = (2, 3) if runtime.smoke_mode() else (8, 50)
        noise = torch.randn(n_img, *model.latent_shape, generator=gen(0))
        sched, g = model.schedule, gen(1)
        ts = sched.timesteps(steps).tolist()
        z = noise
        for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
            eps = model.denoiser(z, torch.full((n_img,), t), None)
            fresh = torch.randn(z.shape, generator=g) if i < len(ts) - 1 else torch.zeros_like(z)  # as ddpm draws
            z = f(z, eps, sched.alpha_bar_at(t), sched.alpha_bar_at(t_prev), fresh)
        lib = samplers.ddpm(model.denoiser, sched, noise, steps, generator=gen(1))
        diff = float((z - lib).abs().max())
        return {"images": model.decode(z), "max_diff": diff, "summary": f"sampled {n_img} images from {source} with "
                f"your DDPM step ({steps} steps): the same latents as ll.samplers.ddpm with the same draws (max "
                f"difference {diff:.1e}); demo.images holds them."}

    return check("ddpm_step", fn, ref, cases, mistakes, "DDPM step (ll.samplers.ddpm)", run, demo, atol=1e-4)


def check_cfg(fn: Fn, demo: bool = True) -> Verdict:
    """`cfg(eps_uncond, eps_cond, scale) -> ε̃ = ε̂(z, ∅) + s·(ε̂(z, c) − ε̂(z, ∅))` (classifier-free guidance, as
    `ll.samplers.guided` combines them): s = 0 is the unconditional model, s = 1 the conditional one, s > 1 pushes
    further along the condition. Cases: s = 3, s = 0, s = 1, s = 7.5. Demo: the shipped class-conditional MNIST
    model draws every digit with your guidance."""
    def ref(eps_uncond, eps_cond, scale):
        both = guided(lambda z, t, c: c, scale, eps_uncond)  # a denoiser that returns its condition
        return both(torch.zeros_like(eps_cond), torch.zeros(len(eps_cond), dtype=torch.long), eps_cond)

    u, c = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1)
    cases = [Case("s = 3", (u, c, 3.0)), Case("s = 0 (must give ε̂(z, ∅))", (u, c, 0.0)),
             Case("s = 1 (must give ε̂(z, c))", (u, c, 1.0)), Case("s = 7.5", (u, c, 7.5))]
    mistakes = [
        ("ε̂(z, c) and ε̂(z, ∅) are swapped: start from the unconditional ε̂ and move towards the conditional one",
         lambda u, c, s: c + s * (u - c)),
        ("that is the (1 + w) convention ε̂(c) + s·(ε̂(c) − ε̂(∅)); here s = 1 must give the conditional model",
         lambda u, c, s: c + s * (c - u)),
        ("guidance scales the difference ε̂(c) − ε̂(∅), not ε̂(c) alone", lambda u, c, s: u + s * c),
        ("s·ε̂(c) alone drops the unconditional prediction", lambda u, c, s: s * c),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:

        model = shipped("ldm-kl-f4-mnist32-class")
        if model is None:
            return missing("ldm-kl-f4-mnist32-class", "class-conditional model")
        per_digit, steps = (1, 3) if runtime.smoke_mode() else (3, 15)
        labels = torch.arange(10).repeat_interleave(per_digit)
        noise = torch.randn(len(labels), *model.latent_shape, generator=gen(1))
        cond = model.condition({"label": labels}, len(labels))
        null = model.conditioner.null_like(cond)

        def denoiser(z, t, c):
            return f(model.denoiser(z, t, null), model.denoiser(z, t, c), 3.0)

        z = samplers.ddim(denoiser, model.schedule, noise, steps, cond=cond)
        lib = model.sample(labels=labels, noise=noise, steps=steps, guidance_scale=3.0, return_latents=True)
        plain = model.sample(labels=labels, noise=noise, steps=steps, return_latents=True)  # s = 1, no guidance
        diff = float((z - lib).abs().max())
        images = model.decode(z)
        out = {"images": images, "labels": labels, "max_diff": diff}
        clf_dir = PRETRAINED_DIR / "mnist-classifier-32"
        judged = ""
        if clf_dir.is_dir():
            clf = MNISTClassifier.from_pretrained(clf_dir).eval()
            acc = {s: float((clf(x).argmax(1) == labels).float().mean()) for s, x in ((3.0, images),
                                                                                       (1.0, model.decode(plain)))}
            out["accuracy"] = acc
            judged = (f"; the shipped MNIST classifier reads the requested digit in {acc[3.0]:.0%} of them, "
                      f"{acc[1.0]:.0%} without guidance (s = 1, same noise; {len(labels)} images, so a 95% interval of about ±15 points)")
        out["summary"] = (f"the shipped class-conditional model ldm-kl-f4-mnist32-class drew digits 0-9 "
                          f"({len(labels)} images, DDIM {steps} steps, s = 3) with your cfg: the same samples as "
                          f"LatentDiffusion.sample(guidance_scale=3) (max difference {diff:.1e}){judged}.")
        return out

    return check("cfg", fn, ref, cases, mistakes, "samplers.guided", run, demo)

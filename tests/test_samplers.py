"""Samplers against diffusers' schedulers on the same inputs, step by step (diffusers is the oracle)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

from ldm_lite import samplers
from ldm_lite.schedule import Schedule

T = 1000
B, C, H, W = 2, 3, 4, 4
# "scaled_linear" with diffusers' Stable Diffusion endpoints (0.00085 -> 0.012), set in diffusers_scheduler below
SCHEDULES = {"linear": Schedule.linear, "scaled_linear": Schedule.stable_diffusion, "squaredcos_cap_v2": Schedule.cosine}


def toy_denoiser(z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """A fixed linear function of z_t and t: exact, deterministic, and different at every t."""
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(C, C, generator=g) * 0.3 + torch.eye(C) * 0.5
    bias = torch.randn(1, C, H, W, generator=g) * 0.1
    s = (t.to(z.dtype) / T).view(-1, 1, 1, 1)  # (B,1,1,1)
    out = torch.einsum("dc,bchw->bdhw", mix, z) * (0.5 + s) + bias * (1 - s)
    if cond is not None:
        out = out + cond.view(-1, 1, 1, 1)
    return out


def diffusers_scheduler(kind: str, beta_schedule: str, spacing: str):
    kw = dict(num_train_timesteps=T, beta_schedule=beta_schedule, timestep_spacing=spacing)
    if beta_schedule == "scaled_linear":
        kw.update(beta_start=0.00085, beta_end=0.012)
    if kind == "ddpm":
        return DDPMScheduler(clip_sample=False, **kw)
    if kind == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **kw)
    if kind == "plms":
        return PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=True, **kw)
    return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **kw)


def reference_trajectory(kind, sched, noise, steps, seed=None, eta=0.0):
    """Run diffusers' loop; return the sample it feeds the model at every step, and the final sample."""
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    z, seen = noise.clone(), []
    timesteps = sched.timesteps.tolist()
    for j, t in enumerate(timesteps):
        if not (kind == "plms" and j == 1):  # PNDM's repeated 2nd timestep is PLMS's extra improved-Euler call
            seen.append(z.clone())
        eps = toy_denoiser(z, torch.full((B,), t, dtype=torch.long))
        extra = {"eta": eta, "generator": g} if kind == "ddim" else {"generator": g} if kind == "ddpm" else {}
        z = sched.step(eps, t, z, **extra).prev_sample
    return seen, z


def ours(kind, schedule, noise, steps, spacing, seed=None, eta=0.0):
    seen = []
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    opts = {"eta": eta} if kind == "ddim" else {}
    fn = samplers.SAMPLERS[kind if kind != "dpm" else "dpm_solver_pp"]
    z0 = fn(toy_denoiser, schedule, noise, steps, generator=g, spacing=spacing,
            callback=lambda i, t, z, x0: seen.append(z.clone()), **opts)
    return seen, z0


# DDIM and PNDM step from t to t - T // steps whatever the spacing, so they agree with the visited sequence (and with
# us) only when steps divides T for "trailing"; "linspace" is checked where diffusers uses the sequence (DDPM).
# DPMSolverMultistepScheduler defines "leading"/"linspace" over steps + 1 points, so only "trailing" is comparable.
# Cosine + trailing starts at t=999 where ᾱ = 2.4e-9: x0_hat is ~1e4 there and float32 cannot agree to 1e-5, so
# DPM-Solver is compared on the linear and scaled-linear schedules.
CASES = [
    ("ddim", "scaled_linear", "leading", 10), ("ddim", "linear", "trailing", 8), ("ddim", "squaredcos_cap_v2", "leading", 25),
    ("plms", "scaled_linear", "leading", 10), ("plms", "linear", "trailing", 8), ("plms", "squaredcos_cap_v2", "leading", 20),
    ("dpm", "scaled_linear", "trailing", 10), ("dpm", "linear", "trailing", 20), ("dpm", "scaled_linear", "trailing", 5),
    ("ddpm", "scaled_linear", "leading", 10), ("ddpm", "linear", "trailing", 10), ("ddpm", "scaled_linear", "linspace", 6),
]


@pytest.mark.parametrize("kind,beta_schedule,spacing,steps", CASES)
def test_matches_diffusers_every_step(kind, beta_schedule, spacing, steps):
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))
    seed = 123 if kind == "ddpm" else None
    ref_seen, ref_z0 = reference_trajectory(kind, diffusers_scheduler(kind, beta_schedule, spacing), noise, steps, seed)
    our_seen, our_z0 = ours(kind, SCHEDULES[beta_schedule](T), noise, steps, spacing, seed)
    assert len(our_seen) == len(ref_seen) == steps
    # float32 round-off grows with the values (|z| reaches ~165 with the toy denoiser): the tolerance is relative
    # to the trajectory's magnitude, 1e-5 of it, far below any error in an update (those are O(1) relative).
    for i, (a, b) in enumerate(zip(our_seen, ref_seen)):
        torch.testing.assert_close(a, b, atol=_atol(b), rtol=1e-5, msg=f"step {i}")
    torch.testing.assert_close(our_z0, ref_z0, atol=_atol(ref_z0), rtol=1e-5)


def _atol(ref: torch.Tensor) -> float:
    return 1e-5 * max(1.0, float(ref.abs().max()))


def test_ddim_eta_one_with_generator_matches_diffusers():
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))
    ref_seen, ref_z0 = reference_trajectory("ddim", diffusers_scheduler("ddim", "scaled_linear", "leading"), noise, 10, 7, 1.0)
    our_seen, our_z0 = ours("ddim", Schedule.stable_diffusion(T), noise, 10, "leading", 7, 1.0)
    torch.testing.assert_close(our_z0, ref_z0, atol=1e-5, rtol=1e-5)


def test_ddpm_same_seed_same_sample_and_full_chain_is_algorithm_2():
    sched = Schedule.linear(50)
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))
    a = samplers.ddpm(toy_denoiser, sched, noise, generator=torch.Generator().manual_seed(5))
    b = samplers.ddpm(toy_denoiser, sched, noise, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # Algorithm 2 written out literally (all T steps, σ_t² = β̃_t)
    g = torch.Generator().manual_seed(5)
    z, ab, beta = noise.clone(), sched.alpha_bar, sched.betas
    for t in reversed(range(sched.T)):
        e = toy_denoiser(z, torch.full((B,), t))
        ab_prev = ab[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        mean = (z - beta[t] / (1 - ab[t]).sqrt() * e) / (1 - beta[t]).sqrt()
        z = mean + ((1 - ab_prev) / (1 - ab[t]) * beta[t]).sqrt() * torch.randn(z.shape, generator=g) if t > 0 else mean
    torch.testing.assert_close(a, z.float(), atol=1e-4, rtol=1e-4)


def test_callback_called_every_step_with_x0_prediction():
    sched = Schedule.scaled_linear(T)
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))
    calls = []
    for fn in (samplers.ddpm, samplers.ddim, samplers.plms, samplers.dpm_solver_pp):
        calls.clear()
        fn(toy_denoiser, sched, noise, 6, callback=lambda i, t, z, x0: calls.append((i, t, z, x0)))
        assert [c[0] for c in calls] == list(range(6))
        assert [c[1] for c in calls] == sched.timesteps(6).tolist()
        i, t, z, x0 = calls[2]
        expected = sched.x0_from_eps(z, torch.full((B,), t), toy_denoiser(z, torch.full((B,), t)))
        torch.testing.assert_close(x0, expected)


def test_keep_known_predicts_the_known_latent_on_kept_cells_for_every_sampler():
    sched = Schedule.scaled_linear(T)
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))
    z_known = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(1))
    keep = torch.zeros(B, 1, H, W)
    keep[..., : H // 2, :] = 1
    wrapped = samplers.keep_known(toy_denoiser, sched, z_known, keep)
    z, t = torch.randn(B, C, H, W), torch.full((B,), 500)
    x0 = sched.x0_from_eps(z, t, wrapped(z, t, None))  # ẑ_0 = z_known where kept, the model's ẑ_0 elsewhere
    torch.testing.assert_close(x0 * keep, z_known * keep, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wrapped(z, t, None) * (1 - keep), toy_denoiser(z, t) * (1 - keep))
    top = keep.bool().expand(B, C, H, W)
    for fn in (samplers.ddim, samplers.plms, samplers.dpm_solver_pp):
        z0 = fn(wrapped, sched, noise, 10)  # deterministic samplers end on z_known where kept
        torch.testing.assert_close(z0[top], z_known[top], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(z0[~top], z_known[~top], atol=1e-2)


def test_guided_is_one_batched_forward_and_interpolates():
    calls = []

    def den(z, t, cond):
        calls.append(z.shape[0])
        return toy_denoiser(z, t, cond)

    z = torch.randn(B, C, H, W)
    t = torch.full((B,), 500)
    cond, uncond = torch.tensor([1.0, 2.0]), torch.zeros(1)
    for scale in (0.0, 1.0, 3.0):
        calls.clear()
        out = samplers.guided(den, scale, uncond)(z, t, cond)
        assert calls == [2 * B]
        e_u, e_c = toy_denoiser(z, t, torch.zeros(B)), toy_denoiser(z, t, cond)
        torch.testing.assert_close(out, e_u + scale * (e_c - e_u))


def test_v_prediction_option_equals_eps_model():
    sched = Schedule.cosine(T)
    noise = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))

    def v_model(z, t, cond):  # the same model, re-parameterised: v = (√ᾱ z_t - x0) / σ with x0 from ε
        eps = toy_denoiser(z, t)
        return (sched.at(sched.sqrt_alpha_bar, t, z) * z - sched.x0_from_eps(z, t, eps)) / sched.at(sched.sigma, t, z)

    for fn in (samplers.ddim, samplers.dpm_solver_pp):
        a = fn(toy_denoiser, sched, noise, 8)
        b = fn(v_model, sched, noise, 8, prediction="v")
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bad_options_say_what_to_change():
    sched = Schedule.linear(T)
    noise = torch.randn(1, C, H, W)
    with pytest.raises(ValueError, match="prediction"):
        samplers.ddim(toy_denoiser, sched, noise, 5, prediction="x0")
    with pytest.raises(ValueError, match="spacing"):
        samplers.ddim(toy_denoiser, sched, noise, 5, spacing="uniform")
    with pytest.raises(ValueError, match="steps"):
        samplers.ddim(toy_denoiser, sched, noise, 2000)

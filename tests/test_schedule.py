"""Schedules against diffusers' DDPMScheduler and against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ldm_lite.schedule import Schedule

PRESETS = [
    ("linear", Schedule.linear, {}),
    ("scaled_linear", Schedule.scaled_linear, {"beta_start": 0.00085, "beta_end": 0.012}),
    ("squaredcos_cap_v2", Schedule.cosine, {}),
]


@pytest.mark.parametrize("name,make,kw", PRESETS)
@pytest.mark.parametrize("T", [1000, 250])
def test_matches_diffusers(name, make, kw, T):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=name, **kw)
    ours = make(T, **kw)
    torch.testing.assert_close(ours.betas, ref.betas.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.alphas, ref.alphas.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.alpha_bar, ref.alphas_cumprod.double(), atol=1e-6, rtol=0)
    # q_sample is diffusers' add_noise (DDPM eq. 4), both in float32 (hence 1e-5 on values of size ~4)
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, T // 3, T // 2, T - 2, T - 1])
    torch.testing.assert_close(ours.q_sample(z0, t, noise), ref.add_noise(z0, noise, t), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.v_target(z0, t, noise), ref.get_velocity(z0, noise, t), atol=1e-5, rtol=1e-5)


def test_scaled_linear_is_linear_in_sqrt_beta_and_derived_quantities():
    s = Schedule.scaled_linear()  # the kit's default endpoints (tests/test_reference.py checks the paper's presets)
    root = s.betas.sqrt()
    assert s.T == 1000 and math.isclose(float(s.betas[0]), 0.00085) and math.isclose(float(s.betas[-1]), 0.012)
    torch.testing.assert_close(root.diff(), torch.full((999,), root.diff()[0].item(), dtype=torch.float64))
    torch.testing.assert_close(s.alpha_bar, torch.tensor([math.prod(1 - b for b in s.betas.tolist()[: i + 1])
                                                         for i in range(1000)], dtype=torch.float64))
    torch.testing.assert_close(s.sigma**2 + s.alpha_bar, torch.ones(1000, dtype=torch.float64))
    torch.testing.assert_close(s.snr, s.alpha_bar / (1 - s.alpha_bar))
    assert bool((s.snr.diff() < 0).all())  # noise only grows


def test_cosine_alpha_bar_closed_form():
    s = Schedule.cosine(1000)
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(1001)]
    expected = torch.tensor([f[t + 1] / f[0] for t in range(1000)], dtype=torch.float64)
    # equal until the β cap of 0.999 bites at the very end
    torch.testing.assert_close(s.alpha_bar[:-1], expected[:-1], atol=1e-12, rtol=1e-9)


def test_parameterisations_invert_each_other():
    s = Schedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([3, 200, 600, 950])
    z_t = s.q_sample(z0, t, eps)
    v = s.v_target(z0, t, eps)
    torch.testing.assert_close(s.x0_from_eps(z_t, t, eps), z0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.eps_from_x0(z_t, t, z0), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.eps_from_v(z_t, t, v), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.x0_from_v(z_t, t, v), z0, atol=1e-5, rtol=1e-5)
    # the samplers' form at a value of ᾱ agrees with the table form at the same step
    for i, ti in enumerate(t.tolist()):
        ab = s.alpha_bar_at(ti)
        torch.testing.assert_close(Schedule.x0_at(z_t[i:i + 1], eps[i:i + 1], ab), z0[i:i + 1], atol=1e-4, rtol=1e-4)
        assert Schedule.half_log_snr_at(ab) == pytest.approx(0.5 * float(s.log_snr[ti]), rel=1e-9)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timesteps_match_diffusers(spacing, steps):
    ref = DDPMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert torch.equal(Schedule.linear().timesteps(steps, spacing), ref.timesteps)


def test_errors_say_what_to_change():
    s = Schedule.linear(100)
    with pytest.raises(ValueError, match="spacing"):
        s.timesteps(10, "uniform")
    with pytest.raises(ValueError, match="between 1 and T=100"):
        s.timesteps(101)
    with pytest.raises(ValueError, match="offset"):
        s.timesteps(10, "trailing", offset=1)
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        s.q_sample(torch.zeros(1, 2), torch.tensor([100]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="beta"):
        Schedule(torch.tensor([0.1, 1.5]))


def test_works_in_float32_and_half_without_float64_leaking():
    s = Schedule.scaled_linear()
    z0 = torch.randn(2, 4, 8, 8)
    assert s.q_sample(z0, torch.tensor([1, 999]), torch.randn_like(z0)).dtype == torch.float32
    zb = z0.bfloat16()
    assert s.q_sample(zb, torch.tensor([1, 999]), torch.randn_like(zb)).dtype == torch.bfloat16


def test_ldm_uniform_spacing_is_make_ddim_timesteps_and_fails_where_it_does():
    """CompVis `make_ddim_timesteps("uniform")`: range(0, T, T // S) + offset; with offset 1 it reaches t = T for
    the step counts the module docstring lists (the reference then fails with an IndexError)."""
    s = Schedule.linear()
    failing = []
    for steps in range(1, 1001):
        c = 1000 // steps
        ref = (np.asarray(list(range(0, 1000, c))) + 1)[::-1]
        if ref.max() >= 1000:
            failing.append(steps)
            with pytest.raises(ValueError, match=f"steps={steps} with spacing='ldm_uniform'"):
                s.timesteps(steps, "ldm_uniform", offset=1)
        else:
            assert s.timesteps(steps, "ldm_uniform", offset=1).tolist() == ref.tolist()
        assert s.timesteps(steps, "ldm_uniform").tolist() == (ref - 1).tolist()  # offset 0 never fails
    assert failing == [3, 9, 27, 36, 37, *range(101, 112), *range(251, 334), *range(501, 1001)]

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Samplers: the reverse process, step by step
#
# **By the end of this notebook you will** have watched a latent diffusion model turn noise into a shape one step
# at a time, know what DDPM, DDIM (and its η), PLMS and DPM-Solver++ do differently with the same ε-prediction
# network, and have measured how sample quality depends on the number of steps.
#
# *Paper:* Rombach et al., CVPR 2022, §3.2 and §4 (LDMs are sampled with DDIM and PLMS); DDPM Algorithm 2 (Ho et al.
# 2020), DDIM eq. 12 (Song et al. 2021), PLMS (Liu et al. 2022), DPM-Solver++(2M) (Lu et al. 2022).
#
# *Time:* about 3 minutes on a laptop CPU with the shipped model `ldm-kl-f4-shapes32`, under a minute on a GPU.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
SCRUB_STEPS = 5 if SMOKE else 50          # steps recorded for the scrubber
N_COMPARE = 4 if SMOKE else 8             # images per sampler in the side-by-side grid
SWEEP_STEPS = (2, 4) if SMOKE else (5, 10, 20, 50)
N_SWEEP = 8 if SMOKE else 128             # samples per (sampler, steps) point
N_REAL = 64 if SMOKE else 1_000           # held-out real images for FID

# %%
import matplotlib.pyplot as plt
import torch
# %matplotlib inline

# %%
ldm, source = ll.recipes.get_ldm(device=DEVICE)
sched = ldm.schedule
print("model:", source, "| latent shape:", ldm.latent_shape, "| schedule:", sched)

# %% [markdown]
# ## 1 · Every reverse step
#
# A sampler is a plain function: `ll.samplers.ddim(denoiser, schedule, noise, steps, callback=...)`. The denoiser is
# the trained UNet $\varepsilon_\theta(z_t, t)$; the callback sees every step: the current $z_t$, and the
# prediction $\hat z_0 = (z_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ (DDPM eq. 15), which we
# decode to see what the model "has in mind" at that step. Move the step control.

# %%
callback, trajectory = ll.widgets.record_trajectory(sched)
noise = torch.randn((4, *ldm.latent_shape), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    z0 = ll.samplers.ddim(ldm.denoiser, sched, noise.to(DEVICE), SCRUB_STEPS, callback=callback)
ll.widgets.reverse_scrubber(trajectory, lambda z: ldm.decode(z.to(DEVICE)).cpu())

# %% [markdown]
# Early steps (large $t$) fix the coarse layout: where the shape is and roughly its colour. Late steps only sharpen
# edges. That is why few-step samplers work at all, and why LDM can spend its compute on a small latent.
#
# ## 2 · Four samplers, one seed
#
# All four use the same network and the same starting noise $z_T$. DDPM (ancestral) adds fresh noise at every step.
# DDIM with η = 0 is deterministic. DDIM with η = 1 *is* DDPM's update: its noise level σ_t(η = 1) (DDIM eq. 16)
# equals DDPM's posterior standard deviation $\sqrt{\tilde\beta_t}$ and its mean equals DDPM's posterior mean (eq. 7),
# so with the same noise draws (the same generator seed, as below) the rows "DDPM" and "DDIM η=1" show the same images,
# up to float rounding; η = 0.5 lies between. PLMS reuses the last few ε̂ (a linear multistep method);
# DPM-Solver++(2M) is a second-order solver of the probability-flow ODE.

# %%
noise = torch.randn((N_COMPARE, *ldm.latent_shape), generator=torch.Generator().manual_seed(0))
runs = {"DDPM, 50 steps": ("ddpm", 50, {}), "DDIM η=0, 50": ("ddim", 50, {"eta": 0.0}),
        "DDIM η=0.5, 50": ("ddim", 50, {"eta": 0.5}), "DDIM η=1, 50": ("ddim", 50, {"eta": 1.0}),
        "PLMS, 50": ("plms", 50, {}), "DPM-Solver++, 20": ("dpm_solver_pp", 20, {})}
rows, titles = [], []
for name, (sampler, steps, opts) in runs.items():
    steps = min(steps, SCRUB_STEPS)
    x = ldm.sample(noise=noise, n=N_COMPARE, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0), **opts)
    rows += list(x.cpu()); titles += [f"{name.split(',')[0]} ({steps})"] * N_COMPARE
fig = ll.plotting.image_grid(rows, titles, ncols=N_COMPARE, title="same starting noise, different samplers")

# %% [markdown]
# The deterministic samplers (DDIM η=0, PLMS, DPM-Solver++) land on nearly the same images: they solve the same
# ODE. The stochastic ones (DDPM = DDIM η=1, and DDIM η=0.5) wander off: more noise injected, more diversity per
# starting point.
#
# ## 3 · Quality against the number of steps
#
# For each sampler and number of steps we draw `N_SWEEP` samples from the same seeds, and measure (a) the share the
# shapes classifier finds recognisable and (b) FID on the classifier's features against held-out real images.

# %%
clf = ll.recipes.get_classifier()
real = torch.stack([it["image"] for it in (ll.datasets.shapes(32, n=N_REAL, seed=1, max_shapes=1)[i] for i in range(N_REAL))])
sweep = ll.evaluation.sampler_sweep(ldm, ["ddpm", "ddim", "plms", "dpm_solver_pp"], SWEEP_STEPS, N_SWEEP, real, clf)
print(ll.metrics.format_table(sweep))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for sampler in ["ddpm", "ddim", "plms", "dpm_solver_pp"]:
    pts = [r for r in sweep if r["sampler"] == sampler]
    axes[0].plot([r["steps"] for r in pts], [r["fid"] for r in pts], "o-", label=sampler)
    axes[1].plot([r["steps"] for r in pts], [100 * r["recognisable"] for r in pts], "o-", label=sampler)
axes[0].set_title("FID on ShapesClassifier features (lower is better)"); axes[0].set_ylabel("FID")
axes[1].set_title("recognisable shapes (%)"); axes[1].set_ylabel("% of samples")
for ax in axes:
    ax.set_xscale("log"); ax.set_xlabel("number of sampler steps"); ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Exercises
#
# 1. DDPM needs many steps; DPM-Solver++ few. From the sweep, how many steps does each sampler need to come within
#    10% of its 50-step FID? Relate the answer to "first order" vs "second order".
# 2. Set `eta` between 0 and 1 for DDIM with 10 steps. How do diversity (look at the grid) and FID trade off?
# 3. In the scrubber, find the step after which the decoded $\hat x_0$ no longer changes colour. Which $t$ is it,
#    and what is $\bar\alpha_t$ there (`sched.alpha_bar[t]`)?

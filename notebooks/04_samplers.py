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
# *Paper:* Rombach et al., CVPR 2022, §3.2 and §4 (the paper samples its LDMs with DDIM; the reference code also has
# a PLMS sampler, used by its text-to-image script); DDPM Algorithm 2 (Ho et al.
# 2020), DDIM eq. 12 (Song et al. 2021), PLMS (Liu et al. 2022), DPM-Solver++(2M) (Lu et al. 2022).
#
# *Time:* about 2.5 minutes at full size (149 s, measured 2026-12-05 on a quiet 2-core CPU, headless (nbclient, kernel start included), shipped models present). Most of it is the step sweep of
# section 3: 4 samplers × (5 + 10 + 20 + 50) steps × 256 samples with the shipped model `ldm-kl-f4-shapes32`.
#
# *Your turn:* 4 checked exercises (write a function; `ldm_lite.exercises` checks it against the library and,
# when it is right, runs it on real data: see each exercise), 5–10 minutes each.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
SCRUB_STEPS = 5 if SMOKE else 50          # steps recorded for the scrubber
N_COMPARE = 4 if SMOKE else 8             # images per sampler in the side-by-side grid
SWEEP_STEPS = (2, 4) if SMOKE else (5, 10, 20, 50)
N_SWEEP = 8 if SMOKE else 256             # samples per (sampler, steps) point (FID on 128-d features needs > 128)
N_REAL = 64 if SMOKE else 1_000           # held-out real images for FID

# %%
import matplotlib.pyplot as plt
import torch
from ldm_lite import exercises as ex
# %matplotlib inline

# %%
ldm, source = ll.recipes.load_or_train("ldm-kl-f4-shapes32", device=str(DEVICE))
ldm = ldm.to(DEVICE)
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
# edges. That is one reason few-step samplers work (section 3 measures how few).
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
# For each sampler and number of steps we draw `N_SWEEP` samples (256) from the same seeds, and measure (a) the share
# the shapes judge (`shapes-judge-32`: the shapes classifier plus a gate against noise, blanks and several shapes)
# finds recognisable and (b) FID (notebook 01) on the classifier's 128-d features against 1,000 held-out real images
# (FID needs more samples than feature dimensions: below 129 the covariance is singular and the kit warns).
#
# Two more ways of reading such numbers, used from notebook 07 on. FID computed from a finite sample is biased upward,
# more so the fewer samples: compare FIDs only at equal sample counts. **KID** (Kernel Inception Distance, Bińkowski et
# al. 2018; `ll.metrics.kid`) compares the two feature sets with a polynomial kernel and is unbiased, so it stays
# usable with fewer samples than feature dimensions (it can even dip below 0). A **bootstrap interval** says how much
# an FID would move with another draw of samples: resample the generated set with replacement many times, recompute
# FID each time and keep the middle 90% of the values; a resampled set repeats points, which inflates its FID, so the
# **bias correction** shifts the interval down by the mean resampled FID minus the FID itself
# (`ll.evaluation.fid_bootstrap`).

# %%
clf = ll.recipes.get_classifier()
held_out = ll.datasets.shapes(32, n=N_REAL, seed=ll.datasets.HELDOUT_SEED, max_shapes=1)
real = torch.stack([held_out[i]["image"] for i in range(N_REAL)])
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
    ax.set_xscale("log"); ax.set_xticks(SWEEP_STEPS, [str(k) for k in SWEEP_STEPS]); ax.minorticks_off()
    ax.set_xlabel("number of sampler steps"); ax.legend()
fig.tight_layout()

# %% [markdown]
# ## 4 · Your turn: ẑ_0, a DDIM step, a DDPM step and guidance
#
# Write each function in place of its `raise NotImplementedError` (a few lines each) and run the cell after it:
# `ex.check_<name>` compares your function with ldm_lite's on random inputs, edge cases and (for most) real ones from
# the shipped models, and prints ✓ or ✗ with the failing case, expected vs got and a hint naming the likely mistake.
# When you are right, `predict_x0`, `ddim_step` and `ddpm_step` run in the shipped `ldm-kl-f4-shapes32` (one-step
# denoising; sampling with your step); `cfg` guides the shipped class-conditional MNIST model `ldm-kl-f4-mnist32-class`
# and the shipped MNIST classifier reads the digits it draws, with and without your guidance (notebook 05 shows
# guidance in the text model). An unsolved stub only prints a note: the notebook carries on
# with the library's version. (Under `LDM_LITE_SMOKE=1`, as the tests run, an unsolved stub is checked with the
# reference solution in `solutions/exercises.py`: look there only when stuck.)
# Hints are hidden until you ask: `ex.hint("<name>")` in a cell shows the first of three (where it is in
# the paper, then the formula, then the detail that usually goes wrong in code), each further call the next.

# %% [markdown]
# **4.1 · The model's guess of the clean latent** $\hat z_0$, what the scrubber above decodes: the forward process (DDPM
# eq. 4) solved for $z_0$, with the network's $\hat\varepsilon$ in place of the true noise (DDPM eq. 15). Stuck?
# `ex.hint("predict_x0")`.

# %%
def predict_x0(alpha_bar, z_t, t, eps):
    """alpha_bar (T,), z_t and eps (B, c, h, w), t (B,) long -> x0_hat (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_predict_x0(predict_x0);

# %% [markdown]
# **4.2 · One DDIM step** (Song et al. 2021, eq. 12, with the noise level σ_t(η) of eq. 16) from $t$ to the previous
# visited timestep: predict $\hat z_0$, then re-noise it to $\bar\alpha_{prev}$ with a deterministic part along
# $\hat\varepsilon$ and fresh noise of size σ_t (zero for η = 0; DDPM's for η = 1). The check tries η = 0 and 1 and the
# last step (ᾱ_prev = 1); when right it samples images with your step and shows them. Stuck? `ex.hint("ddim_step")`.

# %%
def ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):
    """z_t, eps, noise (B, c, h, w); alpha_bar_t, alpha_bar_prev floats; eta in [0, 1] -> z_prev (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
verdict = ex.check_ddim_step(ddim_step)
if verdict.passed:
    fig = ll.plotting.image_grid(verdict.demo["images"].cpu(), title="sampled with your DDIM step")

# %% [markdown]
# **4.3 · One DDPM step** (Ho et al. 2020, Algorithm 2), the ancestral sampler of the sweep above: the true reverse step
# $q(z_{prev} \mid z_t, z_0)$ is a Gaussian whose mean and variance DDPM writes in closed form (eq. 6-7); put the
# network's $\hat z_0$ in for $z_0$, take that mean and add fresh noise with that variance. Use the step's own
# β_t, computed from ᾱ_t and ᾱ_prev, so the step also works when the sampler skips timesteps. When right, the check
# samples the shipped LDM with your step and the same noise draws as `ll.samplers.ddpm`. Stuck? `ex.hint("ddpm_step")`.

# %%
def ddpm_step(z_t, eps, alpha_bar_t, alpha_bar_prev, noise):
    """z_t, eps, noise (B, c, h, w); alpha_bar_t, alpha_bar_prev floats -> z_prev (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
verdict = ex.check_ddpm_step(ddpm_step)
if verdict.passed:
    fig = ll.plotting.image_grid(verdict.demo["images"].cpu(), title="sampled with your DDPM step")

# %% [markdown]
# **4.4 · Classifier-free guidance** (Ho & Salimans 2022): from the conditional $\hat\varepsilon(z, c)$ and the
# unconditional $\hat\varepsilon(z, \varnothing)$ predictions, extrapolate with scale $s$ so that $s = 0$ gives the
# unconditional model, $s = 1$ the conditional one and $s > 1$ a stronger pull towards the condition. Stuck?
# `ex.hint("cfg")`.

# %%
def cfg(eps_uncond, eps_cond, scale):
    """eps_uncond, eps_cond (B, c, h, w); scale s -> guided eps (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
verdict = ex.check_cfg(cfg)
if verdict.passed and "images" in verdict.demo:
    fig = ll.plotting.image_grid(verdict.demo["images"].cpu(), [str(int(d)) for d in verdict.demo["labels"]],
                                 ncols=10, title="digits 0-9 drawn with your guidance (s = 3)")

# %% [markdown]
# ## Exercises
#
# - **4.5** DDPM needs many steps; DPM-Solver++ few. From the sweep, how many steps does each sampler need to come within
#    10% of its 50-step FID? Relate the answer to "first order" vs "second order".
# - **4.6** Set `eta` between 0 and 1 for DDIM with 10 steps. How do diversity (look at the grid) and FID trade off?
# - **4.7** In the scrubber, find the step after which the decoded $\hat x_0$ no longer changes colour. Which $t$ is it,
#    and what is $\bar\alpha_t$ there (`sched.alpha_bar[t]`)?

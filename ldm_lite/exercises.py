"""Checked exercises: the learner writes a piece of LDM, a check compares it with the library and then runs it
inside the real model.

    import ldm_lite as ll
    from ldm_lite import exercises as ex

    def q_sample(alpha_bar, z0, t, noise):          # a "your turn" cell: the learner replaces the raise
        raise NotImplementedError
    q_sample = ex.check_q_sample(q_sample).fn       # prints the verdict; .fn is yours if right, else the library's

Every `check_<name>(fn, demo=True) -> Verdict`:
- calls `fn` on the cases listed in its docstring (random tensors, real ones from the shipped models, edge cases
  such as t = 0 and t = T-1, η = 0 and 1, a single context token) and compares with the library's implementation;
- prints one verdict: ✓ with the cases it passed, or ✗ with the case that failed, expected vs got, and a hint naming
  the likely mistake (a missing square root, an off-by-one in t, keys and values from the wrong source...). A hint
  comes from re-running the typical wrong versions listed beside each check on the same inputs: the one whose
  output equals yours names your mistake; otherwise generic hints (shape, sign, a constant factor, NaN);
- when right and `demo=True`, plugs `fn` into the real model (the shipped checkpoints under `data/pretrained/`,
  else a small untrained one, and says so) and prints what it measured, e.g. images sampled with your DDIM step
  against `ll.samplers.ddim` from the same noise. The demo part takes up to ~30 s on a laptop CPU (seconds in
  smoke mode);
- returns a `Verdict` (truthy when passed). `verdict.fn` is the function to use from then on: yours when it
  passed, else the library's, so a notebook runs top to bottom with unsolved or wrong exercises (checking that
  handed-back library version again says so instead of passing).

A stub that still raises `NotImplementedError` is "not attempted": the check says so and falls back to the
library. In smoke mode (`LDM_LITE_SMOKE=1`, how the tests run the notebooks) it checks the reference solution from
`solutions/exercises.py` instead, so the check and its demo run end to end.

Checks (notebook: function to write; paper):
    00  to_model_range(img) -> (3, H, W)                        uint8 image (H, W, 3) -> float32 in [-1, 1]
    00  psnr(x, y) -> (B,)                                      PSNR in dB on images mapped to [0, 1]
    01  kl_sample(mean, logvar, noise) -> z                     reparameterised sample of q(z|x) (VAE)
    01  kl_divergence(mean, logvar) -> (B,)                     KL(q(z|x) || N(0, I)) per image
    01  vq_lookup(z_e, codebook) -> (z_q, indices)              nearest code + straight-through (VQ-VAE eq. 3)
    02  q_sample(alpha_bar, z0, t, noise) -> z_t                forward process (DDPM eq. 4)
    02  snr(alpha_bar) -> (T,)                                  signal-to-noise ratio ᾱ/(1-ᾱ)
    02  scale_factor(latents) -> float                          LDM's latent scale 1/std(z) (App. D.1)
    03  ldm_loss(eps_model, alpha_bar, z0, t, noise) -> ()      L_LDM (LDM eq. 2)
    03  timestep_embedding(t, dim) -> (B, dim)                  sinusoidal time embedding
    03  resblock_forward(block, x, emb) -> (B, C_out, H, W)     a UNet ResBlock with its time injection
    03  attention(q, k, v) -> (B, h, N, d)                      softmax(QKᵀ/√d) V (LDM eq. 3)
    03  unet_forward(unet, x, t) -> ε̂ (B, C, H, W)              the whole UNet assembled from its parts
    04  predict_x0(z_t, eps, alpha_bar_t) -> ẑ_0                DDPM eq. 15
    04  ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise) -> z_prev   DDIM eq. 12 with σ(η) of eq. 16
    04  cfg(eps_uncond, eps_cond, scale) -> ε̃                   classifier-free guidance
    05  cross_attention(x, context, w_q, w_k, w_v) -> (B, N, d) Q from the image, K/V from the context (LDM eq. 3)
    06  sr_unet_input(z_t, lowres) -> (B, c + 3, h, w)          the UNet input of LDM super-resolution (concat, §3.3)
    07  conv2d_flops(c_in, c_out, kernel, h_out, w_out) -> int  the cost of a convolution, the unit of LDM-f's cost
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from . import runtime
from .autoencoder import DiagonalGaussian, VectorQuantizer, estimate_scale_factor
from .checking import Case, Verdict, check, gen, real_autoencoder, real_images, real_ldm, real_moments
from .schedule import Schedule

__all__ = ["Verdict", "check_to_model_range", "check_psnr", "check_kl_sample", "check_kl_divergence", "check_vq_lookup", "check_q_sample", "check_snr",
           "check_scale_factor", "check_ldm_loss", "check_timestep_embedding", "check_resblock_forward",
           "check_attention", "check_unet_forward", "check_predict_x0", "check_ddim_step", "check_cfg", "check_cross_attention",
           "check_sr_unet_input", "check_conv2d_flops"]
Fn = Callable[..., object]
_SCHEDULES = {s.name: s for s in (Schedule.scaled_linear(), Schedule.linear(), Schedule.cosine())}


def _schedule_of(alpha_bar: Tensor) -> Schedule:
    """The preset whose ᾱ (as the float32 tensor a learner receives) is `alpha_bar`."""
    for s in _SCHEDULES.values():
        if len(s.alpha_bar) == len(alpha_bar) and torch.allclose(s.alpha_bar.to(alpha_bar.dtype), alpha_bar):
            return s
    raise ValueError("alpha_bar is not one of the preset schedules")


def _ab(name: str = "scaled_linear") -> Tensor:
    return _SCHEDULES[name].alpha_bar.float()  # (T,) float32: what the learner's function receives


def _rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=gen(seed))


# ============================================================================================== 00 data and metrics
def check_to_model_range(fn: Fn, demo: bool = True) -> Verdict:
    """`to_model_range(img) -> (3, H, W)` float32 in [-1, 1]: a uint8 image (H, W, 3) as numpy array, channels
    first, 0 -> −1 and 255 -> +1 (`ll.datasets.to_model_image` at the image's own size). Cases: random pixels,
    black, white, 16×16, a rendered `shapes` image."""
    import numpy as np

    from .datasets import to_model_image

    def ref(img):
        return to_model_image(img, resolution=img.shape[0])

    def u8(x: Tensor):
        return ((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    rng = np.random.default_rng(0)
    cases = [Case("random pixels, 32×32", (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),)),
             Case("black (must be −1 everywhere)", (np.zeros((32, 32, 3), dtype=np.uint8),)),
             Case("white (must be +1 everywhere)", (np.full((32, 32, 3), 255, dtype=np.uint8),)),
             Case("16×16", (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),)),
             Case("a shapes image as uint8", (u8(real_images(1)[0]),))]

    def t(img):
        return torch.from_numpy(np.ascontiguousarray(img)).float()

    mistakes = [
        ("/ 255 maps to [0, 1]; the models expect [−1, 1]: x / 127.5 − 1", lambda img: t(img).permute(2, 0, 1) / 255),
        ("channels are still last: permute (H, W, 3) to (3, H, W)", lambda img: t(img) / 127.5 - 1),
        ("/ 128 − 1 never reaches +1 (255 -> 0.992): divide by 127.5", lambda img: t(img).permute(2, 0, 1) / 128 - 1),
        ("numpy arithmetic made float64: convert with torch.float32 (or .float())",
         lambda img: torch.from_numpy(img.transpose(2, 0, 1) / 127.5 - 1)),
    ]

    def run(f: Fn) -> dict:
        x = real_images(8)
        back = torch.stack([f(u8(img)) for img in x])
        diff = float((back - x).abs().max())
        return {"max_diff": diff, "summary": f"8 shapes images rendered to uint8 and read back with your function "
                f"differ from the dataset's by at most {diff:.4f} (half a grey level is {1 / 255:.4f})."}

    return check("to_model_range", fn, ref, cases, mistakes, "datasets.to_model_image", run, demo)


def check_psnr(fn: Fn, demo: bool = True) -> Verdict:
    """`psnr(x, y) -> (B,)`: 10·log10(1 / MSE) per image, with x, y (B, C, H, W) in [−1, 1] mapped to [0, 1] first
    (`ll.metrics.psnr`). Cases: random images, one image, a one-grey-level difference, the shipped autoencoder's
    reconstructions of shapes."""
    from .metrics import psnr

    def ref(x, y):
        return psnr(x, y)

    ae, source = real_autoencoder("kl")
    x = real_images(4)
    with torch.no_grad():
        x_hat = ae.decode(ae.encode(x).mode()).clamp(-1, 1)
    u = torch.rand(4, 3, 16, 16, generator=gen(0)) * 2 - 1
    cases = [Case("random images", (u, torch.rand(4, 3, 16, 16, generator=gen(1)) * 2 - 1)),
             Case("one image (B = 1)", (u[:1], (u[:1] + 0.1).clamp(-1, 1))),
             Case("a difference of one grey level", (0.9 * u, 0.9 * u + 2 / 255)),
             Case(f"{source}'s reconstructions of shapes", (x, x_hat))]

    def mse01(x, y):
        return (((x + 1) / 2 - (y + 1) / 2) ** 2).mean(dim=(1, 2, 3))

    mistakes = [
        ("the images are in [−1, 1]: map them to [0, 1] first ((x + 1) / 2), or the PSNR comes out 6.02 dB too low",
         lambda x, y: 10 * torch.log10(1 / ((x - y) ** 2).mean(dim=(1, 2, 3)))),
        ("one PSNR per image: average the squared error over (C, H, W) only, shape (B,)",
         lambda x, y: 10 * torch.log10(1 / mse01(x, y).mean())),
        ("20·log10 is for amplitudes; with the MSE (a power) use 10·log10", lambda x, y: 20 * torch.log10(1 / mse01(x, y))),
        ("the natural log: PSNR uses log10", lambda x, y: 10 * torch.log(1 / mse01(x, y))),
        ("the sign: PSNR = 10·log10(1 / MSE), not 10·log10(MSE)",
         lambda x, y: 10 * torch.log10(mse01(x, y))),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        xs = real_images(16, seed=5)
        rec = ae.decode(ae.encode(xs).mode()).clamp(-1, 1)
        yours, lib = float(f(xs, rec).mean()), float(psnr(xs, rec).mean())
        return {"psnr": yours, "summary": f"your PSNR of {source}'s reconstructions of 16 shapes: {yours:.2f} dB "
                f"(ll.metrics.psnr: {lib:.2f} dB)."}

    return check("psnr", fn, ref, cases, mistakes, "metrics.psnr", run, demo)


# ============================================================================================== 01 the autoencoder
def check_kl_sample(fn: Fn, demo: bool = True) -> Verdict:
    """`kl_sample(mean, logvar, noise) -> z`: the reparameterised sample z = μ + σ·ε of q(z|x) = N(μ, σ²), with
    σ = exp(logvar / 2); all (B, c, h, w). Cases: random, σ = 1, σ ≈ 0, the KL autoencoder's posterior on shapes."""
    def ref(mean, logvar, noise):
        post = DiagonalGaussian(torch.cat([mean, logvar], dim=1))
        return post.mean + post.std * noise  # = post.sample() with this noise

    mean, logvar = real_moments()
    cases = [Case("random μ, log σ² in [-3, 1]", (_rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, generator=gen(1)) * 4 - 3,
                                                 _rand(2, 3, 4, 4, seed=2))),
             Case("log σ² = 0 (σ = 1)", (_rand(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), _rand(2, 3, 4, 4, seed=2))),
             Case("log σ² = -20 (σ ≈ 0: z ≈ μ)", (_rand(2, 3, 4, 4), torch.full((2, 3, 4, 4), -20.0), _rand(2, 3, 4, 4))),
             Case("real posterior on shapes", (mean, logvar, _rand(*mean.shape, seed=3)))]
    mistakes = [
        ("σ is exp(logvar / 2); exp(logvar) is the variance σ² (a missing square root)",
         lambda m, lv, n: m + lv.exp() * n),
        ("logvar is log σ², not σ: use σ = exp(logvar / 2)", lambda m, lv, n: m + lv * n),
        ("σ = exp(+logvar / 2): the sign of the exponent", lambda m, lv, n: m + (-0.5 * lv).exp() * n),
        ("the mean is missing: z = μ + σ·ε", lambda m, lv, n: (0.5 * lv).exp() * n),
        ("this returns μ without noise: that is posterior.mode(), not a sample", lambda m, lv, n: m),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        ae, source = real_autoencoder("kl")
        x = real_images(8)
        post = ae.encode(x)
        noise = _rand(*post.mean.shape, seed=4)
        z = f(post.mean, post.logvar, noise)
        x_hat = ae.decode(z).clamp(-1, 1)
        from .metrics import psnr
        p = float(psnr(x_hat, x).mean())
        return {"images": x_hat, "psnr": p, "summary": f"{source} decoded your samples of 8 shapes at PSNR {p:.1f} dB "
                f"(the same as its own posterior.sample() with this noise)."}

    return check("kl_sample", fn, ref, cases, mistakes, "DiagonalGaussian.sample", run, demo)


def check_kl_divergence(fn: Fn, demo: bool = True) -> Verdict:
    """`kl_divergence(mean, logvar) -> (B,)`: KL(N(μ, σ²) || N(0, I)) = ½ Σ_{c,h,w} (μ² + σ² − 1 − log σ²) per image.
    Cases: random, q = N(0, I) exactly (KL = 0), one image, the autoencoder's posterior on shapes."""
    def ref(mean, logvar):
        return DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()

    mean, logvar = real_moments()
    cases = [Case("random μ, log σ² in [-3, 1]", (_rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, generator=gen(1)) * 4 - 3)),
             Case("q = N(0, I): KL must be 0", (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))),
             Case("one image (B = 1)", (_rand(1, 3, 8, 8), _rand(1, 3, 8, 8, seed=5) * 0.5)),
             Case("real posterior on shapes", (mean, logvar))]
    mistakes = [
        ("averaged over (c, h, w): the KL of independent dimensions is their sum (one number per image)",
         lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).mean(dim=(1, 2, 3))),
        ("the factor ½ is missing", lambda m, lv: (m**2 + lv.exp() - 1 - lv).sum(dim=(1, 2, 3))),
        ("the −1 term is missing (KL(N(0, I) || N(0, I)) must be 0)",
         lambda m, lv: 0.5 * (m**2 + lv.exp() - lv).sum(dim=(1, 2, 3))),
        ("σ² is exp(logvar); exp(logvar / 2) is σ", lambda m, lv: 0.5 * (m**2 + (0.5 * lv).exp() - 1 - lv).sum(dim=(1, 2, 3))),
        ("the log σ² term has the wrong sign: ½ Σ (μ² + σ² − 1 − log σ²)",
         lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 + lv).sum(dim=(1, 2, 3))),
        ("summed over the batch too: return one KL per image, shape (B,)",
         lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum()),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        ae, source = real_autoencoder("kl")
        post = ae.encode(real_images(8))
        kl = f(post.mean, post.logvar)
        return {"kl": kl, "summary": f"your KL of {source}'s posterior on 8 shapes: {float(kl.mean()):.1f} nats per "
                f"image; with the paper's weight 1e-6 it adds {1e-6 * float(kl.mean()):.1e} to the loss."}

    return check("kl_divergence", fn, ref, cases, mistakes, "DiagonalGaussian.kl", run, demo)


def check_vq_lookup(fn: Fn, demo: bool = True) -> Verdict:
    """`vq_lookup(z_e, codebook) -> (z_q, indices)`: for each vector of z_e (B, c, h, w) the nearest code (squared
    distance) of codebook (K, c); indices (B, h, w) long; z_q (B, c, h, w) equals the codes in the forward pass and
    passes its gradient straight through to z_e (VQ-VAE eq. 3). Cases: random, one code, z_e on the codes, the
    shipped VQ autoencoder's encoder output and codebook, and the gradient."""
    def ref(z_e, codebook):
        vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], dead_code_threshold=0).eval()
        vq.codebook.weight.data.copy_(codebook)
        out = vq(z_e)
        return out.z_q, out.indices

    ae, source = real_autoencoder("vq")
    with torch.no_grad():
        z_real = ae.quant_conv(ae.encoder(real_images()))
    codebook = ae.quantizer.codebook.weight.detach().clone()
    codes = _rand(8, 3, seed=6)
    cases = [Case("random z_e, 8 codes", (_rand(2, 3, 4, 4), codes)),
             Case("one code", (_rand(2, 3, 4, 4), codes[:1])),
             Case("z_e exactly on codes", (rearrange(codes[:4], "(b h w) c -> b c h w", b=1, h=2, w=2), codes)),
             Case(f"{source}: encoder output and codebook", (z_real, codebook))]

    def flat(z):
        return rearrange(z, "b c h w -> (b h w) c")

    def unflat(idx, z, cb):
        i = idx.view(z.shape[0], z.shape[2], z.shape[3])
        return rearrange(cb[i], "b h w c -> b c h w"), i

    mistakes = [
        ("argmax picks the farthest code: take the argmin of the distances",
         lambda z, cb: unflat(torch.cdist(flat(z), cb).argmax(1), z, cb)),
        ("the largest dot product z·e is not the nearest code: minimise ||z − e||² (= ||z||² − 2 z·e + ||e||²)",
         lambda z, cb: unflat((flat(z) @ cb.T).argmax(1), z, cb)),
        ("z_e was flattened without moving the channels last: rearrange (B, c, h, w) to (B·h·w, c) first",
         lambda z, cb: unflat(torch.cdist(z.reshape(-1, z.shape[1]), cb).argmin(1), z, cb)),
    ]

    def gradient_reaches_z_e(f: Fn):
        z = _rand(2, 3, 4, 4).requires_grad_(True)
        w = _rand(2, 3, 4, 4, seed=7)
        z_q, _ = f(z, codes)
        if not z_q.requires_grad:
            return ("gradient", "no gradient reaches z_e",
                    "use the straight-through estimator: z_q = z_e + (codes − z_e).detach()")
        (z_q * w).sum().backward()
        if z.grad is None or not torch.allclose(z.grad, w, atol=1e-6):
            return ("gradient", "the gradient reaching z_e is not the gradient of z_q",
                    "use the straight-through estimator: z_q = z_e + (codes − z_e).detach()")
        return None

    @torch.no_grad()
    def run(f: Fn) -> dict:
        x = real_images(8)
        z_e = ae.quant_conv(ae.encoder(x))
        z_q, idx = f(z_e, ae.quantizer.codebook.weight)
        x_hat = ae.decode(z_q).clamp(-1, 1)
        from .metrics import psnr
        p = float(psnr(x_hat, x).mean())
        return {"images": x_hat, "psnr": p, "summary": f"{source} reconstructed 8 shapes through your lookup at PSNR "
                f"{p:.1f} dB, using {len(idx.unique())} of its {ae.quantizer.codebook_size} codes."}

    return check("vq_lookup", fn, ref, cases, mistakes, "VectorQuantizer", run, demo, properties=[gradient_reaches_z_e])


# ============================================================================================== 02 the forward process
def check_q_sample(fn: Fn, demo: bool = True) -> Verdict:
    """`q_sample(alpha_bar, z0, t, noise) -> z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε` (DDPM eq. 4). alpha_bar (T,) float32,
    z0 and noise (B, c, h, w), t (B,) long in [0, T−1]. Cases: random t, t = 0, t = T−1, the cosine schedule, real
    latents of the shipped autoencoder."""
    def ref(alpha_bar, z0, t, noise):
        return _schedule_of(alpha_bar).q_sample(z0, t, noise)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z_real = ae.to_latent(real_images(), sample=False)
    t_mixed = torch.tensor([3, 250, 600, 999])
    cases = [Case("random z0, t = 3, 250, 600, 999", (_ab(), _rand(4, 3, 8, 8), t_mixed, _rand(4, 3, 8, 8, seed=1))),
             Case("t = 0 (almost clean)", (_ab(), _rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), _rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999 (almost pure noise)", (_ab(), _rand(2, 3, 8, 8), torch.full((2,), 999), _rand(2, 3, 8, 8, seed=1))),
             Case("cosine schedule", (_ab("cosine"), _rand(4, 3, 8, 8), t_mixed, _rand(4, 3, 8, 8, seed=1))),
             Case(f"real latents ({source})", (_ab(), z_real, torch.tensor([0, 100, 500, 900]), _rand(*z_real.shape)))]

    def at(ab, t):
        return ab[t.clamp(0, len(ab) - 1)].view(-1, 1, 1, 1)

    mistakes = [
        ("missing square roots: z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε, not ᾱ_t·z_0 + (1 − ᾱ_t)·ε",
         lambda ab, z, t, n: at(ab, t) * z + (1 - at(ab, t)) * n),
        ("missing square root on the noise term: its standard deviation is √(1 − ᾱ_t)",
         lambda ab, z, t, n: at(ab, t).sqrt() * z + (1 - at(ab, t)) * n),
        ("missing square root on the signal term: z_0 is scaled by √ᾱ_t",
         lambda ab, z, t, n: at(ab, t) * z + (1 - at(ab, t)).sqrt() * n),
        ("off-by-one in t: use alpha_bar[t], not alpha_bar[t - 1] (t runs from 0 to T−1 here)",
         lambda ab, z, t, n: at(ab, t - 1).sqrt() * z + (1 - at(ab, t - 1)).sqrt() * n),
        ("off-by-one in t: use alpha_bar[t], not alpha_bar[t + 1]",
         lambda ab, z, t, n: at(ab, t + 1).sqrt() * z + (1 - at(ab, t + 1)).sqrt() * n),
        ("the weights are swapped: √ᾱ_t multiplies z_0 and √(1 − ᾱ_t) multiplies ε",
         lambda ab, z, t, n: (1 - at(ab, t)).sqrt() * z + at(ab, t).sqrt() * n),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        z0 = ae.to_latent(real_images(16), sample=False)
        ts = [0, 250, 500, 750, 999]
        corr = []
        for t in ts:
            z_t = f(_ab(), z0, torch.full((len(z0),), t), _rand(*z0.shape, seed=t))
            corr.append(float(torch.corrcoef(torch.stack([z_t.flatten(), z0.flatten()]))[0, 1]))
        root = [float(_ab()[t].sqrt()) for t in ts]
        return {"t": ts, "corr": corr, "summary": f"your z_t of {source}'s latents (16 shapes): corr(z_t, z_0) at "
                f"t = {'/'.join(map(str, ts))} = {'/'.join(f'{c:.2f}' for c in corr)}; √ᾱ_t = "
                f"{'/'.join(f'{r:.2f}' for r in root)} (equal for unit-variance latents)."}

    return check("q_sample", fn, ref, cases, mistakes, "Schedule.q_sample", run, demo)


def check_snr(fn: Fn, demo: bool = True) -> Verdict:
    """`snr(alpha_bar) -> SNR(t) = ᾱ_t / (1 − ᾱ_t)`, (T,) → (T,) float64. Cases: the scaled-linear, linear and
    cosine schedules (whose ᾱ_{T−1} ≈ 0), and a 10-step schedule."""
    def ref(alpha_bar):
        return Schedule(1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])).snr

    cases = [Case(f"{name} schedule", (s.alpha_bar.clone(),)) for name, s in _SCHEDULES.items()]
    cases.append(Case("T = 10", (Schedule.linear(T=10, beta_end=0.2).alpha_bar,)))
    mistakes = [
        ("√ᾱ/√(1 − ᾱ) is a ratio of amplitudes; the SNR is a ratio of powers: ᾱ / (1 − ᾱ) (square it)",
         lambda ab: ab.sqrt() / (1 - ab).sqrt()),
        ("inverted: (1 − ᾱ)/ᾱ is the noise-to-signal ratio", lambda ab: (1 - ab) / ab),
        ("this is log SNR; return the SNR itself", lambda ab: (ab / (1 - ab)).log()),
        ("ᾱ alone is the signal fraction; the SNR divides it by the noise variance 1 − ᾱ", lambda ab: ab),
    ]

    def run(f: Fn) -> dict:
        where = {name: int((f(s.alpha_bar) < 1).nonzero()[0]) for name, s in _SCHEDULES.items()}
        return {"t_snr_below_1": where, "summary": "with your SNR the signal drops below the noise (SNR < 1) at "
                + ", ".join(f"t = {t} ({name})" for name, t in where.items()) + "."}

    return check("snr", fn, ref, cases, mistakes, "Schedule.snr", run, demo)


def check_scale_factor(fn: Fn, demo: bool = True) -> Verdict:
    """`scale_factor(latents) -> float`: LDM's latent scale 1 / std(z) over every entry of the latents (B, c, h, w)
    (App. D.1; `estimate_scale_factor`). Cases: std 3, std 1, a large mean, the shipped autoencoder's latents."""
    def ref(latents):
        return 1.0 / latents.flatten().float().std().item()  # what estimate_scale_factor computes (tested)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z_real = ae.encode(real_images(16)).sample(gen(0))
    cases = [Case("latents with std 3", (3 * _rand(8, 3, 8, 8),)),
             Case("unit-variance latents", (_rand(8, 3, 8, 8, seed=1),)),
             Case("latents with mean 5, std 2", (5 + 2 * _rand(8, 3, 8, 8, seed=2),)),
             Case(f"latents of {source}", (z_real,))]
    mistakes = [
        ("1 / var(z) is missing a square root: the scale is 1 / std(z)", lambda z: 1 / z.var().item()),
        ("std(z) itself: LDM divides by it, scale = 1 / std(z)", lambda z: z.std().item()),
        ("1 / √mean(z²) ignores the mean: use the standard deviation", lambda z: 1 / z.pow(2).mean().sqrt().item()),
        ("1 / mean|z| is not the standard deviation", lambda z: 1 / z.abs().mean().item()),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        n = 16 if runtime.smoke_mode() else 128
        x = real_images(n, seed=7)
        yours = float(f(ae.encode(x).sample(gen(1))))
        lib = estimate_scale_factor(ae, x, max_images=n, generator=gen(1), set_buffer=False)
        return {"scale": yours, "summary": f"your scale on {n} latents of {source}: {yours:.4f} "
                f"(estimate_scale_factor: {lib:.4f}; stored in the checkpoint: {float(ae.scale_factor):.4f})."}

    return check("scale_factor", fn, ref, cases, mistakes, "estimate_scale_factor", run, demo)


# ============================================================================================== 03 the denoiser
def check_ldm_loss(fn: Fn, demo: bool = True) -> Verdict:
    """`ldm_loss(eps_model, alpha_bar, z0, t, noise) -> scalar`: L_LDM = mean ‖ε − ε_θ(z_t, t)‖² with
    z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε (LDM eq. 2, as `LatentDiffusion.loss` computes it); eps_model(z_t, t) -> ε̂.
    Cases: a toy ε-model, t = 0, t = T−1, the shipped LDM's UNet on real latents."""
    def ref(eps_model, alpha_bar, z0, t, noise):
        return F.mse_loss(eps_model(_schedule_of(alpha_bar).q_sample(z0, t, noise), t), noise)

    def toy(z, t):
        return torch.tanh(1.5 * z + t.float()[:, None, None, None] / 500 - 0.3)

    model, source = real_ldm()
    with torch.no_grad():
        z_real = model.encode(real_images(4, seed=3)[:, :, : model.config.image_size, : model.config.image_size])
    unet = model.unet
    t4 = torch.tensor([5, 300, 700, 990])
    cases = [Case("toy ε-model, random t", (toy, _ab(), _rand(4, 3, 8, 8), t4, _rand(4, 3, 8, 8, seed=1))),
             Case("t = 0", (toy, _ab(), _rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), _rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999", (toy, _ab(), _rand(2, 3, 8, 8), torch.full((2,), 999), _rand(2, 3, 8, 8, seed=1))),
             Case(f"{source}'s UNet on real latents", (lambda z, t: unet(z, t), _ab(), z_real, t4, _rand(*z_real.shape)))]

    def noised(ab, z, t, n, shift=0):
        a = ab[(t + shift).clamp(0, len(ab) - 1)].view(-1, 1, 1, 1)
        return a.sqrt() * z + (1 - a).sqrt() * n

    mistakes = [
        ("the target is the noise ε, not z_0 (eq. 2: ‖ε − ε_θ(z_t, t)‖²)",
         lambda m, ab, z, t, n: F.mse_loss(m(noised(ab, z, t, n), t), z)),
        ("the target is the noise ε, not z_t", lambda m, ab, z, t, n: F.mse_loss(m(noised(ab, z, t, n), t), noised(ab, z, t, n))),
        ("the network must see the noised z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε, not z_0",
         lambda m, ab, z, t, n: F.mse_loss(m(z, t), n)),
        ("missing square roots when noising: z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε",
         lambda m, ab, z, t, n: F.mse_loss(m(ab[t].view(-1, 1, 1, 1) * z + (1 - ab[t].view(-1, 1, 1, 1)) * n, t), n)),
        ("off-by-one in t: noise with alpha_bar[t] and give the network the same t",
         lambda m, ab, z, t, n: F.mse_loss(m(noised(ab, z, t, n, -1), t), n)),
        ("off-by-one in t: the network must get the t used for noising, not t + 1",
         lambda m, ab, z, t, n: F.mse_loss(m(noised(ab, z, t, n), (t + 1).clamp(max=len(ab) - 1)), n)),
        ("a sum of squared errors; eq. 2's expectation is a mean (F.mse_loss)",
         lambda m, ab, z, t, n: F.mse_loss(m(noised(ab, z, t, n), t), n, reduction="sum")),
    ]

    def run(f: Fn) -> dict:
        return _train_with_loss(f)

    return check("ldm_loss", fn, ref, cases, mistakes, "LatentDiffusion.loss", run, demo, atol=1e-5)


def _train_with_loss(f: Fn) -> dict:
    """Train a small UNet on the shipped autoencoder's latents with the learner's loss and, from the same
    initialisation and draws, with `LatentDiffusion.loss`: the two runs must agree."""
    from .datasets import shapes
    from .ldm import LatentDiffusion
    from .unet import UNet, UNetConfig

    ae, source = real_autoencoder("kl")
    steps, batch = (3, 4) if runtime.smoke_mode() else (50, 8)
    ds = shapes(resolution=32, n=batch * steps, seed=11)
    losses: dict[str, list[float]] = {"yours": [], "library": []}
    for who, n_steps in (("yours", steps), ("library", min(steps, 5))):  # the library run: enough to compare
        with torch.random.fork_rng():
            torch.manual_seed(0)
            unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2),
                                   num_res_blocks=1, attention_resolutions=(2,), head_dim=32))
        ldm = LatentDiffusion(ae, unet, image_size=32)
        opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
        g = gen(0)
        for step in range(n_steps):
            x = torch.stack([ds[i]["image"] for i in range(batch * step, batch * step + batch)])
            t = torch.randint(0, 1000, (batch,), generator=g)
            noise = torch.randn(batch, 3, 8, 8, generator=g)
            if who == "yours":
                with torch.no_grad():
                    z0 = ldm.encode(x, generator=gen(step))
                loss = f(unet, ldm.schedule.alpha_bar.float(), z0, t, noise)
            else:
                loss = ldm.loss({"image": x}, gen(step), t=t, noise=noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[who].append(loss.item())
    y, lib = losses["yours"], losses["library"]
    k = max(1, steps // 5)
    return {"losses": y, "library_losses": lib, "summary": (
        f"trained a small UNet on {source}'s latents for {steps} steps with your loss: mean loss "
        f"{sum(y[:k]) / k:.3f} over the first {k} steps -> {sum(y[-k:]) / k:.3f} over the last {k}; the first "
        f"{len(lib)} steps equal those of LatentDiffusion.loss from the same start to "
        f"{max(abs(a - b) for a, b in zip(y, lib)):.1e}.")}


def check_timestep_embedding(fn: Fn, demo: bool = True) -> Verdict:
    """`timestep_embedding(t, dim) -> (B, dim)`: [cos(t·ω_i), sin(t·ω_i)] with ω_i = 10000^(−i / (dim/2)),
    i = 0 .. dim/2 − 1 (cos first, as LDM and diffusers' flip_sin_to_cos); t (B,) long, dim even. Cases: random t,
    t = 0, t = T−1, dim = 8, fractional t."""
    def ref(t, dim):
        from .unet import timestep_embedding
        return timestep_embedding(t, dim)

    cases = [Case("t = 3, 250, 600, 999; dim 32", (torch.tensor([3, 250, 600, 999]), 32)),
             Case("t = 0 (cos = 1, sin = 0)", (torch.zeros(2, dtype=torch.long), 32)),
             Case("t = T-1 = 999", (torch.full((2,), 999), 64)),
             Case("dim = 8", (torch.tensor([1, 10, 100]), 8)),
             Case("fractional t", (torch.tensor([0.5, 12.25]), 16))]

    def emb(t, dim, sign=-1.0, denom=None, first="cos", period=10000.0):
        half = dim // 2
        freqs = torch.exp(sign * torch.log(torch.tensor(period)) * torch.arange(half) / (denom or half))
        a = t.float()[:, None] * freqs[None]
        parts = [a.cos(), a.sin()] if first == "cos" else [a.sin(), a.cos()]
        return torch.cat(parts, dim=-1)

    mistakes = [
        ("sin and cos are swapped: this kit puts cos first ([cos(tω), sin(tω)], diffusers' flip_sin_to_cos)",
         lambda t, d: emb(t, d, first="sin")),
        ("the exponent divides by dim; it divides by dim/2: ω_i = 10000^(−i / (dim/2))",
         lambda t, d: emb(t, d, denom=d)),
        ("the exponent's sign: frequencies must fall, ω_i = 10000^(−i / (dim/2))", lambda t, d: emb(t, d, sign=1.0)),
        ("interleaved cos/sin pairs: concatenate all cosines, then all sines",
         lambda t, d: rearrange(torch.stack([emb(t, d)[:, : d // 2], emb(t, d)[:, d // 2:]], -1), "b h two -> b (h two)")),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        from . import unet as unet_module
        model, source = real_ldm()
        z, t = _rand(4, *model.latent_shape, seed=9), torch.tensor([10, 300, 600, 950])
        want = model.unet(z, t)
        with _patched(unet_module, "timestep_embedding", f):
            got = model.unet(z, t)
        diff = float((got - want).abs().max())
        return {"max_diff": diff, "summary": f"{source}'s UNet with your time embedding predicts the same ε̂ "
                f"(max difference {diff:.1e})."}

    return check("timestep_embedding", fn, ref, cases, mistakes, "unet.timestep_embedding", run, demo)


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    """Temporarily replace `owner.name` (the demos plug a learner's function into the real model)."""
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def check_resblock_forward(fn: Fn, demo: bool = True) -> Verdict:
    """`resblock_forward(block, x, emb) -> (B, C_out, H, W)`: a UNet ResBlock (`ll.unet.ResBlock`, additive time
    injection) from its parts: h = conv1(SiLU(norm1(x))); h = h + emb_proj(SiLU(emb))[:, :, None, None]
    (`block.emb`); h = conv2(dropout(SiLU(norm2(h)))); return h + skip(x). x (B, C_in, H, W), emb (B, emb_dim).
    Cases: equal widths, C_in ≠ C_out (1×1 skip conv), B = 1, the first ResBlock of the shipped UNet."""
    from .unet import ResBlock

    def ref(block, x, emb):
        return block(x, emb)

    def block(c_in, c_out, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            b = ResBlock(c_in, c_out, 64, 0.0, False, 8).eval()
            for p in b.parameters():  # the default init hides mistakes (zero-ish biases): make every term count
                torch.nn.init.normal_(p, std=0.2)
        return b

    model, source = real_ldm()
    captured: list = []
    first = next(m for m in model.unet.modules() if isinstance(m, ResBlock))
    hook = first.register_forward_pre_hook(lambda m, args: captured.append(args))
    with torch.no_grad():
        model.unet(_rand(2, *model.latent_shape), torch.tensor([100, 800]))
    hook.remove()
    cases = [Case("32 -> 32 channels", (block(32, 32, 0), _rand(2, 32, 8, 8), _rand(2, 64, seed=1))),
             Case("32 -> 64 channels (1x1 skip conv)", (block(32, 64, 1), _rand(2, 32, 8, 8), _rand(2, 64, seed=1))),
             Case("B = 1", (block(16, 16, 2), _rand(1, 16, 4, 4), _rand(1, 64, seed=1))),
             Case(f"first ResBlock of {source}", (first, *captured[0]))]
    silu = F.silu
    mistakes = [
        ("the time embedding is never added: h = h + block.emb(SiLU(emb))[:, :, None, None] before norm2",
         lambda b, x, e: b.conv2(silu(b.norm2(b.conv1(silu(b.norm1(x)))))) + b.skip(x)),
        ("the time embedding goes through SiLU before block.emb",
         lambda b, x, e: b.conv2(silu(b.norm2(b.conv1(silu(b.norm1(x))) + b.emb(e)[:, :, None, None]))) + b.skip(x)),
        ("the time embedding is added after norm2; add it to h before the second GroupNorm",
         lambda b, x, e: b.conv2(silu(b.norm2(b.conv1(silu(b.norm1(x)))) + b.emb(silu(e))[:, :, None, None])) + b.skip(x)),
        ("the skip connection is missing: return h + block.skip(x)",
         lambda b, x, e: b.conv2(silu(b.norm2(b.conv1(silu(b.norm1(x))) + b.emb(silu(e))[:, :, None, None])))),
        ("SiLU after norm1 is missing: h = conv1(SiLU(norm1(x)))",
         lambda b, x, e: b.conv2(silu(b.norm2(b.conv1(b.norm1(x)) + b.emb(silu(e))[:, :, None, None]))) + b.skip(x)),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        blocks = [m for m in model.unet.modules() if isinstance(m, ResBlock)]
        z, t = _rand(4, *model.latent_shape, seed=9), torch.tensor([10, 300, 600, 950])
        want = model.unet(z, t)
        try:
            for b in blocks:
                b.forward = lambda x, emb, b=b: f(b, x, emb)
            got = model.unet(z, t)
        finally:
            for b in blocks:
                del b.forward
        diff = float((got - want).abs().max())
        return {"max_diff": diff, "summary": f"{source}'s UNet with your forward in all its {len(blocks)} ResBlocks "
                f"predicts the same ε̂ (max difference {diff:.1e})."}

    return check("resblock_forward", fn, ref, cases, mistakes, "unet.ResBlock", run, demo, atol=1e-4)


def check_attention(fn: Fn, demo: bool = True) -> Verdict:
    """`attention(q, k, v) -> softmax(q·kᵀ / √d)·v` (LDM eq. 3), q (B, h, N, d), k and v (B, h, L, d) ->
    (B, h, N, d); the softmax runs over the L keys. Cases: self-attention (L = N), cross-attention (L ≠ N), one key
    (L = 1), d = 32."""
    def ref(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    cases = [Case("self-attention, N = L = 16, d = 8", (_rand(2, 2, 16, 8), _rand(2, 2, 16, 8, seed=1), _rand(2, 2, 16, 8, seed=2))),
             Case("cross-attention, N = 16 queries, L = 5 keys", (_rand(2, 2, 16, 8), _rand(2, 2, 5, 8, seed=1), _rand(2, 2, 5, 8, seed=2))),
             Case("a single key (L = 1: every weight is 1)", (_rand(1, 2, 4, 8), _rand(1, 2, 1, 8, seed=1), _rand(1, 2, 1, 8, seed=2))),
             Case("d = 32", (_rand(1, 1, 6, 32), _rand(1, 1, 6, 32, seed=1), _rand(1, 1, 6, 32, seed=2)))]

    def attn(q, k, v, scale=None, dim=-1):
        return torch.softmax(q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale), dim=dim) @ v

    mistakes = [
        ("scaled by 1/d instead of 1/√d: a missing square root", lambda q, k, v: attn(q, k, v, scale=1 / q.shape[-1])),
        ("the scores are not scaled: divide q·kᵀ by √d", lambda q, k, v: attn(q, k, v, scale=1.0)),
        ("the softmax runs over the queries (dim −2); it must normalise over the keys (dim −1)",
         lambda q, k, v: attn(q, k, v, dim=-2)),
        ("keys and values are swapped: the weights come from q·kᵀ and average v", lambda q, k, v: attn(q, v, k)),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model, source = real_ldm()
        z, t = _rand(4, *model.latent_shape, seed=9), torch.tensor([10, 300, 600, 950])
        want = model.unet(z, t)
        with _patched(F, "scaled_dot_product_attention", f):
            got = model.unet(z, t)
        diff = float((got - want).abs().max())
        return {"max_diff": diff, "summary": f"{source}'s UNet with your attention in every attention layer predicts "
                f"the same ε̂ (max difference {diff:.1e})."}

    return check("attention", fn, ref, cases, mistakes, "F.scaled_dot_product_attention", run, demo)


def check_unet_forward(fn: Fn, demo: bool = True) -> Verdict:
    """`unet_forward(unet, x, t) -> ε̂`: the forward pass of an unconditional `ll.unet.UNet` from its parts:
    emb = time_mlp(timestep_embedding(t, model_channels)); h = conv_in(x), kept as the first skip; per level each
    block `blk(h, emb, None)` (keep every output as a skip) then `downsample[level]` except after the last level
    (keep it too); mid2(mid1(h)); per up level each block on torch.cat([h, skips.pop()], 1), then `upsample[i]`
    except after the last; conv_out(SiLU(norm_out(h))). x (B, C, H, W), t (B,) long. Cases: two and three levels,
    two blocks per level, the shipped UNet on a real latent."""
    from .unet import UNet, UNetConfig, timestep_embedding

    def ref(unet, x, t):
        return unet(x, t)

    def tiny(mult, blocks, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            u = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=mult,
                                num_res_blocks=blocks, attention_resolutions=(2,), head_dim=32, norm_groups=8)).eval()
            for name, p in u.named_parameters():  # undo the zero inits so every path shows in the output
                if p.abs().sum() == 0 and name.endswith("weight"):
                    torch.nn.init.normal_(p, std=0.05)
        return u

    model, source = real_ldm()
    t2 = torch.tensor([20, 900])
    cases = [Case("2 levels, 1 block each", (tiny((1, 2), 1, 0), _rand(2, 3, 8, 8), t2)),
             Case("3 levels (16×16 -> 4×4)", (tiny((1, 2, 2), 1, 1), _rand(2, 3, 16, 16), t2)),
             Case("2 blocks per level", (tiny((1, 2), 2, 2), _rand(2, 3, 8, 8), t2)),
             Case(f"{source}'s UNet", (model.unet, _rand(2, *model.latent_shape, seed=3), t2))]

    def forward(u, x, t, silu_out=True, time_mlp=True):
        e = timestep_embedding(t, u.config.model_channels)
        emb = u.time_mlp(e) if time_mlp else e
        h = u.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(u.down):
            for blk in blocks:
                h = blk(h, emb, None)
                skips.append(h)
            if level < len(u.down) - 1:
                h = u.downsample[level](h)
                skips.append(h)
        h = u.mid2(u.mid1(h, emb, None), emb, None)
        for i, blocks in enumerate(u.up):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb, None)
            if i < len(u.up) - 1:
                h = u.upsample[i](h)
        h = u.norm_out(h)
        return u.conv_out(F.silu(h) if silu_out else h)

    mistakes = [("SiLU before conv_out is missing: ε̂ = conv_out(SiLU(norm_out(h)))",
                 lambda u, x, t: forward(u, x, t, silu_out=False))]
    hints = {"Sizes of tensors must match": "the skips are used last in, first out: concatenate skips.pop() (the "
             "most recent) and keep every block output and every downsample output as a skip",
             "channels, but got": "a block got the wrong number of channels: the up blocks take torch.cat([h, "
             "skips.pop()], 1), and every block output and downsample output must be kept as a skip",
             "cannot be multiplied": "the sinusoidal embedding (model_channels wide) goes through unet.time_mlp "
             "before the blocks get it"}

    @torch.no_grad()
    def run(f: Fn) -> dict:
        n = 4
        noise = torch.randn(n, *model.latent_shape, generator=gen(0))
        want = model.sample(n, noise=noise, steps=10, return_latents=True)
        model.unet.forward = lambda x, t, context=None: f(model.unet, x, t)  # an instance attribute wins
        try:
            got = model.sample(n, noise=noise, steps=10, return_latents=True)
        finally:
            del model.unet.forward  # back to UNet.forward
        diff = float((got - want).abs().max())
        return {"images": model.decode(got), "max_diff": diff, "summary": f"{source} sampled {n} images (DDIM, 10 "
                f"steps) with your UNet forward: the same latents as with UNet.forward (max difference {diff:.1e})."}

    return check("unet_forward", fn, ref, cases, mistakes, "UNet.forward", run, demo, atol=1e-4, exception_hints=hints)


def check_cross_attention(fn: Fn, demo: bool = False) -> Verdict:
    """`cross_attention(x, context, w_q, w_k, w_v) -> (B, N, d)`: one head of LDM's cross-attention (eq. 3):
    Q = x·w_q from the image tokens x (B, N, d), K = context·w_k and V = context·w_v from the context (B, L, d_ctx);
    softmax(Q·Kᵀ / √d)·V. w_q (d, d), w_k and w_v (d_ctx, d). Cases: d_ctx = d, d_ctx ≠ d, one context token, B = 1.
    (No model demo: notebook 05 shows cross-attention in a conditional model.)"""
    from .attention import Attention

    def ref(x, context, w_q, w_k, w_v):
        a = Attention(w_q.shape[1], head_dim=w_q.shape[1], context_dim=context.shape[-1])
        with torch.no_grad():
            a.to_q.weight.copy_(w_q.T)
            a.to_kv.weight.copy_(torch.cat([w_k, w_v], dim=1).T)
            a.to_out.weight.copy_(torch.eye(w_q.shape[1]))
            a.to_out.bias.zero_()
            return a(x, context)

    def args(b, n, n_ctx, d, dc, seed=0):
        return (_rand(b, n, d, seed=seed), _rand(b, n_ctx, dc, seed=seed + 1), _rand(d, d, seed=seed + 2) / d**0.5,
                _rand(dc, d, seed=seed + 3) / dc**0.5, _rand(dc, d, seed=seed + 4) / dc**0.5)

    cases = [Case("16 image tokens, 5 context tokens, same width", args(2, 16, 5, 8, 8)),
             Case("context width 12 != image width 8", args(2, 16, 5, 8, 12, seed=10)),
             Case("a single context token (L = 1)", args(2, 16, 1, 8, 12, seed=20)),
             Case("B = 1", args(1, 4, 3, 8, 6, seed=30))]

    def xattn(q_src, kv_src, w_q, w_k, w_v, swap=False, scale=True):
        q, k, v = q_src @ w_q, kv_src @ w_k, kv_src @ w_v
        if swap:
            k, v = v, k
        s = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale else 1.0)
        return torch.softmax(s, dim=-1) @ v

    mistakes = [
        ("keys and values come from the image tokens x: in cross-attention K and V come from the context, Q from x",
         lambda x, c, wq, wk, wv: xattn(x, x, wq, wk, wv)),
        ("queries come from the context: Q = x·w_q comes from the image tokens, K and V from the context",
         lambda x, c, wq, wk, wv: xattn(c, x, wq, wk, wv)),
        ("keys and values are swapped: K = context·w_k, V = context·w_v", lambda x, c, wq, wk, wv: xattn(x, c, wq, wk, wv, swap=True)),
        ("the scores are not scaled: divide Q·Kᵀ by √d", lambda x, c, wq, wk, wv: xattn(x, c, wq, wk, wv, scale=False)),
    ]
    return check("cross_attention", fn, ref, cases, mistakes, "attention.Attention", None, demo,
                 exception_hints={"cannot be multiplied": "a weight met the wrong tokens: Q = x·w_q (image), "
                                  "K = context·w_k and V = context·w_v (context)"})


# ============================================================================================== 04 the samplers
def check_predict_x0(fn: Fn, demo: bool = True) -> Verdict:
    """`predict_x0(alpha_bar, z_t, t, eps) -> ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t` (DDPM eq. 15), the inverse of
    q_sample for a given ε̂. alpha_bar (T,) float32, z_t and eps (B, c, h, w), t (B,) long. Cases: random t, t = 0,
    t = T−1, round trip on real latents."""
    def ref(alpha_bar, z_t, t, eps):
        return _schedule_of(alpha_bar).x0_from_eps(z_t, t, eps)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z0 = ae.to_latent(real_images(), sample=False)
    t4, n = torch.tensor([10, 400, 800, 999]), _rand(*z0.shape, seed=1)
    cases = [Case("random z_t, t = 3, 250, 600, 999", (_ab(), _rand(4, 3, 8, 8), torch.tensor([3, 250, 600, 999]), _rand(4, 3, 8, 8, seed=1))),
             Case("t = 0", (_ab(), _rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), _rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999", (_ab(), _rand(2, 3, 8, 8), torch.full((2,), 999), _rand(2, 3, 8, 8, seed=1))),
             Case(f"real latents of {source} noised with the true ε", (_ab(), _SCHEDULES["scaled_linear"].q_sample(z0, t4, n), t4, n))]

    def at(ab, t):
        return ab[t.clamp(0, len(ab) - 1)].view(-1, 1, 1, 1)

    mistakes = [
        ("missing square roots: ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t", lambda ab, z, t, e: (z - (1 - at(ab, t)) * e) / at(ab, t)),
        ("divide by √ᾱ_t (the signal's scale), not by ᾱ_t", lambda ab, z, t, e: (z - (1 - at(ab, t)).sqrt() * e) / at(ab, t)),
        ("the division by √ᾱ_t is missing", lambda ab, z, t, e: z - (1 - at(ab, t)).sqrt() * e),
        ("the noise is subtracted, not added: ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t",
         lambda ab, z, t, e: (z + (1 - at(ab, t)).sqrt() * e) / at(ab, t).sqrt()),
        ("off-by-one in t: use alpha_bar[t]", lambda ab, z, t, e: (z - (1 - at(ab, t - 1)).sqrt() * e) / at(ab, t - 1).sqrt()),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model, src = real_ldm()
        z0 = model.encode(real_images(8)[:, :, : model.config.image_size, : model.config.image_size])
        t = torch.full((8,), 500)
        z_t = model.schedule.q_sample(z0, t, _rand(*z0.shape, seed=2))
        x0_hat = f(model.schedule.alpha_bar.float(), z_t, t, model.unet(z_t, t))
        from .metrics import psnr
        p = float(psnr(model.decode(x0_hat), model.decode(z0)).mean())
        return {"images": model.decode(x0_hat), "psnr": p, "summary": f"{src} denoised 8 latents from t = 500 in one "
                f"step with your ẑ_0: PSNR {p:.1f} dB against the clean images' decoding."}

    return check("predict_x0", fn, ref, cases, mistakes, "Schedule.x0_from_eps", run, demo)


def _ddim_step_ref(z_t: Tensor, eps: Tensor, ab: float, ab_prev: float, eta: float, noise: Tensor) -> Tensor:
    """One step of `ll.samplers.ddim` (DDIM eq. 12, σ of eq. 16); tests/test_exercises.py ties the two."""
    x0 = (z_t - (1 - ab) ** 0.5 * eps) / ab**0.5  # DDPM eq. 15
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5  # eq. 16
    return ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps + sigma * noise  # eq. 12


def check_ddim_step(fn: Fn, demo: bool = True) -> Verdict:
    """`ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise) -> z_prev` (DDIM eq. 12): with
    ẑ_0 = (z_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t and σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev) (eq. 16),
    z_prev = √ᾱ_prev·ẑ_0 + √(1 − ᾱ_prev − σ_t²)·ε̂ + σ_t·noise. ᾱ's are floats; tensors (B, c, h, w).
    Cases: η = 0, η = 1, η = 0.5, the last step (ᾱ_prev = 1), the first step from t = T−1, the shipped model's ε̂."""
    ab = _SCHEDULES["scaled_linear"].alpha_bar_at
    z, e, n = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1), _rand(2, 3, 8, 8, seed=2)
    model, source = real_ldm()
    with torch.no_grad():
        z_real = _rand(2, *model.latent_shape, seed=3)
        e_real = model.unet(z_real, torch.full((2,), 979))
    cases = [Case("η = 0, t = 500 -> 480", (z, e, ab(500), ab(480), 0.0, n)),
             Case("η = 1, t = 500 -> 480", (z, e, ab(500), ab(480), 1.0, n)),
             Case("η = 0.5, t = 200 -> 100", (z, e, ab(200), ab(100), 0.5, n)),
             Case("last step, t = 20 -> ᾱ_prev = 1", (z, e, ab(20), 1.0, 1.0, n)),
             Case("first step, t = T-1 = 999 -> 979", (z, e, ab(999), ab(979), 1.0, n)),
             Case(f"{source}'s ε̂ at t = 979", (z_real, e_real, ab(979), ab(959), 0.0, torch.zeros_like(z_real)))]

    def step(z, e, a, ap, eta, n, root_prev=True, sig2=True, sig_root=True, add_noise=True):
        x0 = (z - (1 - a) ** 0.5 * e) / a**0.5
        s2 = eta**2 * ((1 - ap) / (1 - a) * (1 - a / ap)) if sig_root else (eta * (1 - ap) / (1 - a) * (1 - a / ap)) ** 2
        s = s2**0.5
        return ((ap**0.5 if root_prev else ap) * x0 + (1 - ap - (s2 if sig2 else 0)) ** 0.5 * e
                + (s * n if add_noise else 0))

    mistakes = [
        ("missing square root: ẑ_0 is scaled by √ᾱ_prev", lambda *a: step(*a, root_prev=False)),
        ("the direction term is √(1 − ᾱ_prev − σ_t²)·ε̂: σ_t² is missing (it matters only for η > 0)",
         lambda *a: step(*a, sig2=False)),
        ("σ_t of eq. 16 has square roots: σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)",
         lambda *a: step(*a, sig_root=False)),
        ("no fresh noise: add σ_t·noise (zero at η = 0, not at η > 0)", lambda *a: step(*a, add_noise=False)),
        ("this returns z_t unchanged: the step must move to ᾱ_prev (ᾱ_t used twice? an off-by-one in t?)",
         lambda z, e, a, ap, eta, n: z),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        from . import samplers
        n_img, steps = (4, 4) if runtime.smoke_mode() else (8, 25)
        noise = torch.randn(n_img, *model.latent_shape, generator=gen(0))
        sched = model.schedule
        ts = sched.timesteps(steps).tolist()
        z = noise
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            eps = model.denoiser(z, torch.full((n_img,), t), None)
            z = f(z, eps, sched.alpha_bar_at(t), sched.alpha_bar_at(t_prev), 0.0, torch.zeros_like(z))
        lib = samplers.ddim(model.denoiser, sched, noise, steps)
        diff = float((z - lib).abs().max())
        return {"images": model.decode(z), "max_diff": diff, "summary": f"sampled {n_img} images from {source} with "
                f"your DDIM step ({steps} steps, η = 0): the same latents as ll.samplers.ddim from this noise "
                f"(max difference {diff:.1e}); demo.images holds them."}

    return check("ddim_step", fn, _ddim_step_ref, cases, mistakes, "DDIM step (ll.samplers.ddim)", run, demo, atol=1e-4)


def check_cfg(fn: Fn, demo: bool = True) -> Verdict:
    """`cfg(eps_uncond, eps_cond, scale) -> ε̃ = ε̂(z, ∅) + s·(ε̂(z, c) − ε̂(z, ∅))` (classifier-free guidance, as
    `ll.samplers.guided` combines them): s = 0 is the unconditional model, s = 1 the conditional one, s > 1 pushes
    further along the condition. Cases: s = 3, s = 0, s = 1, s = 7.5."""
    from .samplers import guided

    def ref(eps_uncond, eps_cond, scale):
        both = guided(lambda z, t, c: c, scale, eps_uncond)  # a denoiser that returns its condition
        return both(torch.zeros_like(eps_cond), torch.zeros(len(eps_cond), dtype=torch.long), eps_cond)

    u, c = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1)
    cases = [Case("s = 3", (u, c, 3.0)), Case("s = 0 (must give ε̂(z, ∅))", (u, c, 0.0)),
             Case("s = 1 (must give ε̂(z, c))", (u, c, 1.0)), Case("s = 7.5", (u, c, 7.5))]
    mistakes = [
        ("ε̂(z, c) and ε̂(z, ∅) are swapped: start from the unconditional ε̂ and move towards the conditional one",
         lambda u, c, s: c + s * (u - c)),
        ("that is the (1 + w) convention ε̂(c) + s·(ε̂(c) − ε̂(∅)); here s = 1 must give the conditional model",
         lambda u, c, s: c + s * (c - u)),
        ("guidance scales the difference ε̂(c) − ε̂(∅), not ε̂(c) alone", lambda u, c, s: u + s * c),
        ("s·ε̂(c) alone drops the unconditional prediction", lambda u, c, s: s * c),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        from . import samplers
        from .autoencoder import IdentityAutoencoder
        from .conditioning import ClassConditioner, ClassConditionerConfig
        from .ldm import LatentDiffusion
        from .unet import UNet, UNetConfig

        with torch.random.fork_rng():
            torch.manual_seed(0)
            unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2),
                                   num_res_blocks=1, attention_resolutions=(2,), head_dim=32, context_dim=32))
            torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
            model = LatentDiffusion(IdentityAutoencoder(), unet, ClassConditioner(ClassConditionerConfig(6, 32)),
                                    image_size=16).eval()
        labels, noise = torch.tensor([0, 1, 2, 3]), torch.randn(4, 3, 16, 16, generator=gen(1))
        cond = model.condition({"label": labels}, 4)
        null = model.conditioner.null_like(cond)

        def denoiser(z, t, c):
            return f(model.denoiser(z, t, null), model.denoiser(z, t, c), 3.0)

        z = samplers.ddim(denoiser, model.schedule, noise, 5, cond=cond)
        lib = model.sample(labels=labels, noise=noise, steps=5, guidance_scale=3.0, return_latents=True)
        diff = float((z - lib).abs().max())
        return {"max_diff": diff, "summary": "guided DDIM sampling (s = 3) of a small class-conditional LDM with "
                f"your cfg gives the same samples as LatentDiffusion.sample(guidance_scale=3) (max difference "
                f"{diff:.1e}); the model is untrained: this shows the plumbing, notebook 05 shows the effect."}

    return check("cfg", fn, ref, cases, mistakes, "samplers.guided", run, demo)


# ============================================================================================== 06-07 (as they land)
def check_sr_unet_input(fn: Fn, demo: bool = False) -> Verdict:
    """`sr_unet_input(z_t, lowres) -> (B, c + 3, h, w)`: what the UNet of an LDM super-resolution model sees:
    torch.cat([z_t, y], dim=1) with y the low-res image (B, 3, H/s, W/s) resized bicubically to the latent's h×w
    (antialiased when it shrinks), as `SuperResolutionConditioner` + `LatentDiffusion.denoiser` build it. z_t
    (B, c, h, w) is the latent of a 32×32 image with f = 4. Cases: s = f (no resizing), s = 2 (shrink), s = 8 (grow)."""
    from .spatial import SuperResolutionConditioner, SuperResolutionConfig

    ae, _ = real_autoencoder("kl")

    def ref(z_t, lowres):
        cond = SuperResolutionConditioner(SuperResolutionConfig(factor=4 * z_t.shape[-1] // lowres.shape[-1]))
        cond.attach_autoencoder(ae)
        with torch.no_grad():
            return torch.cat([z_t, cond({"lowres": lowres}).concat], dim=1)

    def lowres(side, seed):
        return torch.rand(2, 3, side, side, generator=gen(seed)) * 2 - 1

    z = _rand(2, 3, 8, 8)
    cases = [Case("s = f = 4: the 8×8 low-res image is already latent-sized", (z, lowres(8, 1))),
             Case("s = 2: a 16×16 low-res image shrinks to 8×8", (z, lowres(16, 2))),
             Case("s = 8: a 4×4 low-res image grows to 8×8", (z, lowres(4, 3))),
             Case("a real shapes image at ×4 (8×8)", (z, F.interpolate(real_images(2), size=(8, 8), mode="bicubic",
                                                                       antialias=True)))]

    def resize(y, size, mode="bicubic", antialias=True):
        if y.shape[-1] == size:
            return y
        kw = {"antialias": antialias and size < y.shape[-1]} if mode == "bicubic" else {}
        return F.interpolate(y, size=(size, size), mode=mode, **kw)

    mistakes = [
        ("z_t comes first: the UNet's first c input channels are the noisy latent, then the condition",
         lambda z, y: torch.cat([resize(y, z.shape[-1]), z], dim=1)),
        ("concatenated along the batch: the condition adds channels, torch.cat([...], dim=1)",
         lambda z, y: torch.cat([z, resize(y, z.shape[-1])], dim=0)),
        ("resize with mode=\"bicubic\", as the conditioner does (not nearest)",
         lambda z, y: torch.cat([z, resize(y, z.shape[-1], mode="nearest")], dim=1)),
        ("shrinking needs antialias=True (as the conditioner), or the small image aliases",
         lambda z, y: torch.cat([z, resize(y, z.shape[-1], antialias=False)], dim=1)),
    ]
    return check("sr_unet_input", fn, ref, cases, mistakes, "SuperResolutionConditioner", None, demo)


def check_conv2d_flops(fn: Fn, demo: bool = True) -> Verdict:
    """`conv2d_flops(c_in, c_out, kernel, h_out, w_out) -> int`: FLOPs of one k×k convolution (no bias), counted as
    torch's FlopCounterMode counts them: 2 per multiply-add, 2·c_in·c_out·k²·h_out·w_out. Cases: the UNet's first
    conv at 32×32 and 8×8, a 1×1 conv, a wide conv at 4×4. The demo prices LDM-f's first conv for f = 1 .. 16."""
    from torch.utils.flop_counter import FlopCounterMode

    def ref(c_in, c_out, kernel, h_out, w_out):
        conv = torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            conv(torch.zeros(1, c_in, h_out, w_out))
        return float(counter.get_total_flops())

    cases = [Case("3 -> 64 channels, 3×3, 32×32 (LDM-1's conv_in)", (3, 64, 3, 32, 32)),
             Case("3 -> 64 channels, 3×3, 8×8 (LDM-4's conv_in)", (3, 64, 3, 8, 8)),
             Case("1×1 conv, 64 -> 128, 16×16", (64, 128, 1, 16, 16)),
             Case("128 -> 128, 3×3, 4×4", (128, 128, 3, 4, 4))]
    mistakes = [
        ("that counts multiply-adds (MACs); one multiply-add is 2 FLOPs", lambda ci, co, k, h, w: ci * co * k * k * h * w),
        ("a k×k kernel has k² weights per input channel: multiply by k², not k",
         lambda ci, co, k, h, w: 2 * ci * co * k * h * w),
        ("the kernel size is missing: each output value sums c_in·k² products", lambda ci, co, k, h, w: 2 * ci * co * h * w),
        ("channels multiply: every output channel reads every input channel (c_in·c_out, not c_in + c_out)",
         lambda ci, co, k, h, w: 2 * (ci + co) * k * k * h * w),
    ]

    def run(f: Fn) -> dict:
        costs = {fac: int(f(3, 64, 3, 32 // fac, 32 // fac)) for fac in (1, 2, 4, 8, 16)}
        return {"flops": costs, "summary": "with your formula the UNet's first conv on a 32×32 image costs "
                + ", ".join(f"{c / 1e6:.2f} MFLOPs (LDM-{fac})" for fac, c in costs.items())
                + ": each doubling of f divides the cost of every layer by 4."}

    return check("conv2d_flops", fn, ref, cases, mistakes, "torch FlopCounterMode", run, demo)

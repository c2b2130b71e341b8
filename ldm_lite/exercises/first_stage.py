"""Checked exercises of notebooks 00 and 01: data range, PSNR, the KL posterior and term, the VQ lookup and the
latent scale factor. See `ldm_lite.exercises`."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from .. import runtime
from ..autoencoder import DiagonalGaussian, VectorQuantizer, estimate_scale_factor
from ..datasets import to_model_image
from ..metrics import psnr
from .checking import Case, Fn, Verdict, check, gen, rand, real_autoencoder, real_images, real_moments


# ============================================================================================== 00 data and metrics
def check_to_model_range(fn: Fn, demo: bool = True) -> Verdict:
    """`to_model_range(img) -> (3, H, W)` float32 in [-1, 1]: a uint8 image (H, W, 3) as numpy array, channels
    first, 0 -> −1 and 255 -> +1 (`ll.datasets.to_model_image` at the image's own size). Cases: random pixels,
    black, white, 16×16, a rendered `shapes` image."""

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
    cases = [Case("random μ, log σ² in [-3, 1]", (rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, generator=gen(1)) * 4 - 3,
                                                 rand(2, 3, 4, 4, seed=2))),
             Case("log σ² = 0 (σ = 1)", (rand(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), rand(2, 3, 4, 4, seed=2))),
             Case("log σ² = -20 (σ ≈ 0: z ≈ μ)", (rand(2, 3, 4, 4), torch.full((2, 3, 4, 4), -20.0), rand(2, 3, 4, 4))),
             Case("real posterior on shapes", (mean, logvar, rand(*mean.shape, seed=3)))]
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
        noise = rand(*post.mean.shape, seed=4)
        z = f(post.mean, post.logvar, noise)
        x_hat = ae.decode(z).clamp(-1, 1)
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
    cases = [Case("random μ, log σ² in [-3, 1]", (rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, generator=gen(1)) * 4 - 3)),
             Case("q = N(0, I): KL must be 0", (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))),
             Case("one image (B = 1)", (rand(1, 3, 8, 8), rand(1, 3, 8, 8, seed=5) * 0.5)),
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
    codes = rand(8, 3, seed=6)
    cases = [Case("random z_e, 8 codes", (rand(2, 3, 4, 4), codes)),
             Case("one code", (rand(2, 3, 4, 4), codes[:1])),
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
        z = rand(2, 3, 4, 4).requires_grad_(True)
        w = rand(2, 3, 4, 4, seed=7)
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
        p = float(psnr(x_hat, x).mean())
        return {"images": x_hat, "psnr": p, "summary": f"{source} reconstructed 8 shapes through your lookup at PSNR "
                f"{p:.1f} dB, using {len(idx.unique())} of its {ae.quantizer.codebook_size} codes."}

    return check("vq_lookup", fn, ref, cases, mistakes, "VectorQuantizer", run, demo, properties=[gradient_reaches_z_e])


def check_scale_factor(fn: Fn, demo: bool = True) -> Verdict:
    """`scale_factor(latents) -> float`: LDM's latent scale 1 / std(z) over every entry of the latents (B, c, h, w)
    (App. D.1; `estimate_scale_factor`). Cases: std 3, std 1, a large mean, the shipped autoencoder's latents."""
    def ref(latents):
        return 1.0 / latents.flatten().float().std().item()  # what estimate_scale_factor computes (tested)

    ae, source = real_autoencoder("kl")
    with torch.no_grad():
        z_real = ae.encode(real_images(16)).sample(gen(0))
    cases = [Case("latents with std 3", (3 * rand(8, 3, 8, 8),)),
             Case("unit-variance latents", (rand(8, 3, 8, 8, seed=1),)),
             Case("latents with mean 5, std 2", (5 + 2 * rand(8, 3, 8, 8, seed=2),)),
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

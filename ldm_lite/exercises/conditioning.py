"""Checked exercises for notebooks 05 and 06: cross-attention and the concat input of super-resolution. See
`ldm_lite.exercises`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import samplers
from ..attention import Attention
from ..samplers import keep_known
from ..schedule import Schedule
from ..spatial import SuperResolutionConditioner, SuperResolutionConfig, known_latents
from .checking import (
    Case,
    Fn,
    Verdict,
    check,
    gen,
    rand,
    real_autoencoder,
    real_images,
    shipped,
)


def check_cross_attention(fn: Fn, demo: bool = False) -> Verdict:
    """`cross_attention(x, context, w_q, w_k, w_v) -> (B, N, d)`: one head of LDM's cross-attention (§3.3):
    Q = x·w_q from the image tokens x (B, N, d), K = context·w_k and V = context·w_v from the context (B, L, d_ctx);
    softmax(Q·Kᵀ / √d)·V. w_q (d, d), w_k and w_v (d_ctx, d). Cases: d_ctx = d, d_ctx ≠ d, one context token, B = 1.
    (No model demo: notebook 05 shows cross-attention in a conditional model.)"""
    def ref(x, context, w_q, w_k, w_v):
        a = Attention(w_q.shape[1], head_dim=w_q.shape[1], context_dim=context.shape[-1])
        with torch.no_grad():
            a.to_q.weight.copy_(w_q.T)
            a.to_kv.weight.copy_(torch.cat([w_k, w_v], dim=1).T)
            a.to_out.weight.copy_(torch.eye(w_q.shape[1]))
            a.to_out.bias.zero_()
            return a(x, context)

    def args(b, n, n_ctx, d, dc, seed=0):
        return (rand(b, n, d, seed=seed), rand(b, n_ctx, dc, seed=seed + 1), rand(d, d, seed=seed + 2) / d**0.5,
                rand(dc, d, seed=seed + 3) / dc**0.5, rand(dc, d, seed=seed + 4) / dc**0.5)

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


# ============================================================================================== 06-07 (as they land)
def check_sr_unet_input(fn: Fn, demo: bool = False) -> Verdict:
    """`sr_unet_input(z_t, lowres) -> (B, c + 3, h, w)`: what the UNet of an LDM super-resolution model sees:
    torch.cat([z_t, y], dim=1) with y the low-res image (B, 3, H/s, W/s) resized bicubically to the latent's h×w
    (antialiased when it shrinks), as `SuperResolutionConditioner` + `LatentDiffusion.denoiser` build it. z_t
    (B, c, h, w) is the latent of a 32×32 image with f = 4. Cases: s = f (no resizing), s = 2 (shrink), s = 8 (grow)."""
    ae, _ = real_autoencoder("kl")

    def ref(z_t, lowres):
        cond = SuperResolutionConditioner(SuperResolutionConfig(factor=4 * z_t.shape[-1] // lowres.shape[-1]))
        cond.attach_autoencoder(ae)
        with torch.no_grad():
            return torch.cat([z_t, cond({"lowres": lowres}).concat], dim=1)

    def lowres(side, seed):
        return torch.rand(2, 3, side, side, generator=gen(seed)) * 2 - 1

    z = rand(2, 3, 8, 8)
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


def check_keep_known(fn: Fn, demo: bool = True) -> Verdict:
    """`keep_known(z_t, eps, alpha_bar_t, z_known, keep) -> ε̃`: replacement sampling for inpainting, as
    `ll.samplers.keep_known` computes it: where keep = 1 the ε that makes the prediction ẑ_0 equal the known latent,
    ε = (z_t − √ᾱ_t·z_known) / √(1 − ᾱ_t) (DDPM eq. 4 solved for ε); elsewhere the model's ε̂. z_t, eps, z_known
    (B, c, h, w); keep (B, 1, h, w) of 0/1; alpha_bar_t a float. Cases: t in the middle, ᾱ near 1 (t = 0), ᾱ near
    0 (t = T−1), nothing kept, everything kept. Demo: the shipped inpainting model fills boxes with your function."""
    def ref(z_t, eps, alpha_bar_t, z_known, keep):
        one_step = Schedule(betas=torch.tensor([1.0 - alpha_bar_t], dtype=torch.float64))  # ᾱ_0 = alpha_bar_t
        wrapped = keep_known(lambda z, t, c: eps, one_step, z_known, keep)
        return wrapped(z_t, torch.zeros(len(z_t), dtype=torch.long), None)

    z, e, zk = rand(2, 3, 8, 8), rand(2, 3, 8, 8, seed=1), rand(2, 3, 8, 8, seed=2)
    keep = (torch.rand(2, 1, 8, 8, generator=gen(3)) > 0.4).float()
    cases = [Case("ᾱ_t = 0.5, some cells kept", (z, e, 0.5, zk, keep)),
             Case("ᾱ_t = 0.9991 (t = 0)", (z, e, 0.9991, zk, keep)),
             Case("ᾱ_t = 0.0047 (t = T − 1)", (z, e, 0.0047, zk, keep)),
             Case("nothing kept: the model's ε̂ everywhere", (z, e, 0.3, zk, torch.zeros_like(keep))),
             Case("everything kept", (z, e, 0.3, zk, torch.ones_like(keep)))]

    def replaced(z, ab, zk, sign=-1.0, roots=True):
        a, s = (ab**0.5, (1 - ab) ** 0.5) if roots else (ab, 1 - ab)
        return (z + sign * a * zk) / s

    mistakes = [
        ("keep = 1 marks the known cells: the replacement goes where keep is 1, the model's ε̂ elsewhere",
         lambda z, e, ab, zk, k: torch.where(k > 0, e, replaced(z, ab, zk))),
        ("missing square roots: z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε, so ε = (z_t − √ᾱ_t·z_known) / √(1 − ᾱ_t)",
         lambda z, e, ab, zk, k: torch.where(k > 0, replaced(z, ab, zk, roots=False), e)),
        ("the sign: solving z_t = √ᾱ_t·z_known + √(1 − ᾱ_t)·ε for ε subtracts √ᾱ_t·z_known",
         lambda z, e, ab, zk, k: torch.where(k > 0, replaced(z, ab, zk, sign=1.0), e)),
        ("that is the noisy known latent q(z_t | z_known) (a z_t), not an ε: the sampler needs the ε that gives "
         "ẑ_0 = z_known",
         lambda z, e, ab, zk, k: torch.where(k > 0, ab**0.5 * zk + (1 - ab) ** 0.5 * e, e)),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model = shipped("ldm-inpaint-shapes32")
        x = real_images(4)
        m = torch.zeros(4, 32, 32)
        m[:, 8:20, 10:22] = 1  # a box in the middle
        batch = {"image": x, "inpaint_mask": m}
        cond = model.condition(batch, 4)
        z_known, kept = known_latents(cond)
        noise = torch.randn(4, *z_known.shape[1:], generator=gen(5))

        def denoiser(z, t, c):
            return f(z, model.denoiser(z, t, c), model.schedule.alpha_bar_at(int(t[0])), z_known, kept)

        z0 = samplers.ddim(denoiser, model.schedule, noise, 10, cond=cond)
        lib = model.sample(batch=batch, noise=noise, steps=10, known=(z_known, kept), return_latents=True)
        free = model.sample(batch=batch, noise=noise, steps=10, return_latents=True)
        err = lambda z: float(((z - z_known) * kept).abs().max())  # noqa: E731
        diff = float((z0 - lib).abs().max())
        return {"max_diff": diff, "summary": f"the shipped inpainting model filled a box in 4 images with your "
                f"function: same latents as LatentDiffusion.sample(known=...) (max difference {diff:.1e}); on the "
                f"kept cells the result is the masked image's latent (max error {err(z0):.1e}, without replacement "
                f"{err(free):.2f})."}

    return check("keep_known", fn, ref, cases, mistakes, "samplers.keep_known", run, demo)

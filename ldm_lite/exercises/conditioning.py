"""Checked exercises for notebooks 05 and 06: cross-attention and the concat input of super-resolution. See
`ldm_lite.exercises`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import runtime, samplers
from ..attention import Attention
from ..samplers import keep_known
from ..schedule import Schedule
from ..spatial import SuperResolutionConditioner, SuperResolutionConfig, known_latents
from .checking import (
    Case,
    Fn,
    Verdict,
    check,
    forwards,
    gen,
    missing,
    patched,
    rand,
    real_autoencoder,
    real_images,
    shipped,
)


def check_cross_attention(fn: Fn, demo: bool = True) -> Verdict:
    """`cross_attention(x, context, w_q, w_k, w_v) -> (B, N, d)`: one head of LDM's cross-attention (§3.3):
    Q = x·w_q from the image tokens x (B, N, d_x), K = context·w_k and V = context·w_v from the context
    (B, L, d_ctx); softmax(Q·Kᵀ / √d)·V with d the head width. w_q (d_x, d), w_k and w_v (d_ctx, d). Cases:
    d_ctx = d, d_ctx ≠ d, one context token, B = 1, one head of a two-head layer (d = d_x / 2). Demo: every
    cross-attention layer of the shipped text model runs your function (once per head) and samples the same prompts
    as the library."""
    def ref(x, context, w_q, w_k, w_v):  # head 0 of ll.attention.Attention with d_x / d heads
        d_x, d = w_q.shape
        a = Attention(d_x, head_dim=d, context_dim=context.shape[-1])
        with torch.no_grad():
            for lin, weights in ((a.to_q, [w_q]), (a.to_kv, [w_k, w_v])):
                lin.weight.zero_()
                for i, w in enumerate(weights):  # rows of head 0 of q (and of k, then v: layout (two h d))
                    lin.weight[i * d_x: i * d_x + d] = w.T
            a.to_out.weight.copy_(torch.eye(d_x))
            a.to_out.bias.zero_()
            return a(x, context)[..., :d]

    def args(b, n, n_ctx, d, dc, seed=0, d_x=None):
        d_x = d_x or d
        return (rand(b, n, d_x, seed=seed), rand(b, n_ctx, dc, seed=seed + 1), rand(d_x, d, seed=seed + 2) / d_x**0.5,
                rand(dc, d, seed=seed + 3) / dc**0.5, rand(dc, d, seed=seed + 4) / dc**0.5)

    cases = [Case("16 image tokens, 5 context tokens, same width", args(2, 16, 5, 8, 8)),
             Case("context width 12 != image width 8", args(2, 16, 5, 8, 12, seed=10)),
             Case("a single context token (L = 1)", args(2, 16, 1, 8, 12, seed=20)),
             Case("B = 1", args(1, 4, 3, 8, 6, seed=30)),
             Case("one head of a two-head layer: 16-wide tokens, head width d = 8", args(2, 16, 5, 8, 12, seed=40, d_x=16))]

    def xattn(q_src, kv_src, w_q, w_k, w_v, swap=False, scale=True, width=None):
        q, k, v = q_src @ w_q, kv_src @ w_k, kv_src @ w_v
        if swap:
            k, v = v, k
        s = q @ k.transpose(-1, -2) * ((width or q.shape[-1]) ** -0.5 if scale else 1.0)
        return torch.softmax(s, dim=-1) @ v

    mistakes = [
        ("keys and values come from the image tokens x: in cross-attention K and V come from the context, Q from x",
         lambda x, c, wq, wk, wv: xattn(x, x, wq, wk, wv)),
        ("queries come from the context: Q = x·w_q comes from the image tokens, K and V from the context",
         lambda x, c, wq, wk, wv: xattn(c, x, wq, wk, wv)),
        ("keys and values are swapped: K = context·w_k, V = context·w_v", lambda x, c, wq, wk, wv: xattn(x, c, wq, wk, wv, swap=True)),
        ("the scores are not scaled: divide Q·Kᵀ by √d", lambda x, c, wq, wk, wv: xattn(x, c, wq, wk, wv, scale=False)),
        ("scaled by the width of x; d is the head width, the width of Q = x·w_q (q.shape[-1])",
         lambda x, c, wq, wk, wv: xattn(x, c, wq, wk, wv, width=x.shape[-1])),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        model = shipped("ldm-kl-f4-shapes32-text")
        if model is None:
            return missing("ldm-kl-f4-shapes32-text", "text model")
        prompts = ["a large red circle", "a small blue square", "a large green triangle", "a large yellow star"]
        steps = 3 if runtime.smoke_mode() else 20
        noise = torch.randn(len(prompts), *model.latent_shape, generator=gen(0))

        def sample() -> Tensor:
            return model.sample(prompts=prompts, noise=noise, steps=steps, guidance_scale=3.0, return_latents=True)

        def yours(layer, x, context):  # each head through your function, then the layer's output projection
            d = layer.to_q.out_features // layer.heads
            w_q, (w_k, w_v) = layer.to_q.weight.T, layer.to_kv.weight.T.chunk(2, dim=1)
            heads = [f(x, context, *(w[:, i * d:(i + 1) * d] for w in (w_q, w_k, w_v))) for i in range(layer.heads)]
            return layer.to_out(torch.cat(heads, dim=-1))

        want = sample()
        layers = list(model.unet.cross_attentions().values())
        with forwards(layers, lambda layer: lambda x, context=None: yours(layer, x, context)):
            got = sample()
        diff = float((got - want).abs().max())
        heads = sum(layer.heads for layer in layers)
        return {"images": model.decode(got), "library_images": model.decode(want), "prompts": prompts,
                "max_diff": diff, "summary": f"the shipped text model ldm-kl-f4-shapes32-text drew {len(prompts)} "
                f"prompts (DDIM, {steps} steps, guidance 3) with your function for each of the {heads} heads of its "
                f"{len(layers)} cross-attention layers: the same latents as with ll.attention.Attention "
                f"(max difference {diff:.1e}); `verdict.demo['images']` and `['library_images']` hold both."}

    return check("cross_attention", fn, ref, cases, mistakes, "attention.Attention", run, demo,
                 exception_hints={"cannot be multiplied": "a weight met the wrong tokens: Q = x·w_q (image), "
                                  "K = context·w_k and V = context·w_v (context)"})


# ============================================================================================== 06-07 (as they land)
def check_sr_unet_input(fn: Fn, demo: bool = True) -> Verdict:
    """`sr_unet_input(z_t, lowres) -> (B, c + 3, h, w)`: what the UNet of an LDM super-resolution model sees:
    torch.cat([z_t, y], dim=1) with y the low-res image (B, 3, H/s, W/s) resized bicubically to the latent's h×w
    (antialiased when it shrinks), as `SuperResolutionConditioner` + `LatentDiffusion.denoiser` build it. z_t
    (B, c, h, w) is the latent of a 32×32 image with f = 4. Cases: s = f (no resizing), s = 2 (shrink), s = 8 (grow).
    Demo: the shipped SR model up-samples real ×4 low-res images with your input at every step."""
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
    @torch.no_grad()
    def run(f: Fn) -> dict:
        from ..metrics import psnr

        model = shipped("ldm-sr4-bicubic-shapes32")
        if model is None:
            return missing("ldm-sr4-bicubic-shapes32", "SR model")
        x = real_images(4)
        low = F.interpolate(x, size=(8, 8), mode="bicubic", antialias=True).clamp(-1, 1)  # (4, 3, 8, 8), ×4 smaller
        steps = 3 if runtime.smoke_mode() else 20
        noise = torch.randn(len(x), *model.latent_shape, generator=gen(0))
        want = model.sample(low_res=low, noise=noise, steps=steps, return_latents=True)
        with patched(model, "denoiser", lambda z_t, t, cond: model.unet(f(z_t, low), t, None)):
            got = model.sample(low_res=low, noise=noise, steps=steps, return_latents=True)
        diff = float((got - want).abs().max())
        images = model.decode(got)
        bicubic = F.interpolate(low, size=x.shape[-2:], mode="bicubic").clamp(-1, 1)
        p_sr, p_bic = float(psnr(images.clamp(-1, 1), x).mean()), float(psnr(bicubic, x).mean())
        return {"images": images, "max_diff": diff, "psnr": p_sr, "psnr_bicubic": p_bic, "summary": (
            f"the shipped SR model ldm-sr4-bicubic-shapes32 up-sampled {len(x)} real 8×8 images to 32×32 (DDIM, "
            f"{steps} steps) with your input at every step: the same latents as LatentDiffusion.sample(low_res=...) "
            f"(max difference {diff:.1e}); PSNR {p_sr:.1f} dB against the originals (bicubic up-sampling: "
            f"{p_bic:.1f} dB).")}

    return check("sr_unet_input", fn, ref, cases, mistakes, "SuperResolutionConditioner", run, demo)


def check_inpaint_unet_input(fn: Fn, demo: bool = True) -> Verdict:
    """`inpaint_unet_input(z_t, x, mask, encode) -> (B, 2c + 1, h, w)`: what the UNet of LDM's inpainting model sees
    (§4.5, concat conditioning as `InpaintingConditioner` + `LatentDiffusion.denoiser` build it): torch.cat of z_t
    (B, c, h, w), the latent `encode(x ⊙ (1 − m))` of the image with its hole set to 0 (grey), and the mask m
    (B, H, W), 1 = missing, average-pooled to h×w (the share of missing pixels per latent cell). x (B, 3, H, W) in
    [-1, 1]; encode(images) -> (B, c, h, w) (the frozen encoder, posterior mean, scaled). Cases: a box, a random mask,
    nothing missing, everything missing. Demo: the shipped inpainting model fills boxes with your input."""
    from ..spatial import InpaintingConditioner

    ae, _ = real_autoencoder("kl")

    def encode(images):
        with torch.no_grad():
            return ae.to_latent(images, sample=False)

    def ref(z_t, x, mask, encode):
        cond = InpaintingConditioner()
        cond.attach_autoencoder(ae)
        return torch.cat([z_t, cond({"image": x, "inpaint_mask": mask}).concat], dim=1)

    x = real_images(2)
    box = torch.zeros(2, 32, 32)
    box[:, 6:19, 9:23] = 1  # not aligned with the 4×4 cells: some cells are partly missing
    speckle = (torch.rand(2, 32, 32, generator=gen(4)) > 0.7).float()
    z = rand(2, 3, 8, 8)
    cases = [Case("a box, partly covering latent cells", (z, x, box, encode)),
             Case("a random mask (30% missing)", (z, x, speckle, encode)),
             Case("nothing missing", (z, x, torch.zeros(2, 32, 32), encode)),
             Case("everything missing", (z, x, torch.ones(2, 32, 32), encode))]

    def wrong(z, x, m, enc, hole="keep", pool="area", order="zcm", mask_of="missing"):
        m4 = m[:, None]
        masked = {"keep": x * (1 - m4), "inverted": x * m4, "none": x, "black": x * (1 - m4) - m4}[hole]
        mm = m4 if mask_of == "missing" else 1 - m4
        small = F.adaptive_avg_pool2d(mm, z.shape[-2:]) if pool == "area" else F.interpolate(mm, size=z.shape[-2:], mode="nearest")
        parts = {"z": z, "c": enc(masked), "m": small}
        return torch.cat([parts[k] for k in order], dim=1)

    mistakes = [
        ("the known pixels were removed: the encoder sees x ⊙ (1 − m), the image with its hole (m = 1) set to 0",
         lambda z, x, m, e: wrong(z, x, m, e, hole="inverted")),
        ("the encoder must not see the hole's pixels: encode x ⊙ (1 − m), not x", lambda z, x, m, e: wrong(z, x, m, e, hole="none")),
        ("the hole is 0 (grey) in this kit's encoding; −1 (black) is the CompVis reference's (reference_encoding)",
         lambda z, x, m, e: wrong(z, x, m, e, hole="black")),
        ("the mask is average-pooled to the latent size (F.adaptive_avg_pool2d), not nearest-downsampled",
         lambda z, x, m, e: wrong(z, x, m, e, pool="nearest")),
        ("the mask channel is m (1 = missing), not 1 − m", lambda z, x, m, e: wrong(z, x, m, e, mask_of="keep")),
        ("the order is [z_t, masked image's latent, mask]: z_t first, the mask last",
         lambda z, x, m, e: wrong(z, x, m, e, order="zmc")),
        ("z_t comes first: the UNet's first c input channels are the noisy latent",
         lambda z, x, m, e: wrong(z, x, m, e, order="czm")),
    ]

    @torch.no_grad()
    def run(f: Fn) -> dict:
        from ..metrics import psnr

        model = shipped("ldm-inpaint-shapes32")
        if model is None:
            return missing("ldm-inpaint-shapes32", "inpainting model")
        images = real_images(4)
        m = torch.zeros(4, 32, 32)
        m[:, 8:20, 10:22] = 1  # a box in the middle
        steps = 3 if runtime.smoke_mode() else 20
        noise = torch.randn(4, *model.latent_shape, generator=gen(5))

        def model_encode(y):
            return model.autoencoder.to_latent(y, sample=False)

        want = model.sample(image=images, mask=m, noise=noise, steps=steps, return_latents=True)
        with patched(model, "denoiser", lambda z_t, t, cond: model.unet(f(z_t, images, m, model_encode), t, None)):
            got = model.sample(image=images, mask=m, noise=noise, steps=steps, return_latents=True)
        diff = float((got - want).abs().max())
        out = model.decode(got).clamp(-1, 1)
        keep = (1 - m)[:, None].expand_as(images)
        outside = float(psnr(out * keep, images * keep).mean())
        return {"images": out, "max_diff": diff, "psnr_outside": outside, "summary": (
            f"the shipped inpainting model ldm-inpaint-shapes32 filled a 12×12 box in {len(images)} real images "
            f"(DDIM, {steps} steps) with your input at every step: the same latents as "
            f"LatentDiffusion.sample(image=..., mask=...) (max difference {diff:.1e}); outside the box the output is "
            f"{outside:.1f} dB PSNR from the original.")}

    return check("inpaint_unet_input", fn, ref, cases, mistakes, "InpaintingConditioner", run, demo)


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

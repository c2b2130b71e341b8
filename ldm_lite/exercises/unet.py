"""Checked exercises of notebook 03 (and 07): the LDM loss, the time embedding, a ResBlock, attention, the whole
UNet forward, and the FLOPs of a convolution. See `ldm_lite.exercises`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .. import runtime
from .. import unet as unet_module
from ..datasets import shapes
from ..ldm import LatentDiffusion
from ..unet import ResBlock, UNet, UNetConfig, timestep_embedding
from .checking import (
    Case,
    Fn,
    Verdict,
    check,
    forwards,
    gen,
    learner_alpha_bar,
    patched,
    rand,
    real_autoencoder,
    real_images,
    real_ldm,
    schedule_of,
    unet_demo,
)


# ============================================================================================== 03 the denoiser
def check_ldm_loss(fn: Fn, demo: bool = True) -> Verdict:
    """`ldm_loss(eps_model, alpha_bar, z0, t, noise) -> scalar`: L_LDM = mean ‖ε − ε_θ(z_t, t)‖² with
    z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε (LDM eq. 2, as `LatentDiffusion.loss` computes it); eps_model(z_t, t) -> ε̂.
    Cases: a toy ε-model, t = 0, t = T−1, the shipped LDM's UNet on real latents."""
    def ref(eps_model, alpha_bar, z0, t, noise):
        return F.mse_loss(eps_model(schedule_of(alpha_bar).q_sample(z0, t, noise), t), noise)

    def toy(z, t):
        return torch.tanh(1.5 * z + t.float()[:, None, None, None] / 500 - 0.3)

    model, source = real_ldm()
    with torch.no_grad():
        z_real = model.encode(real_images(4, seed=3)[:, :, : model.config.image_size, : model.config.image_size])
    unet = model.unet
    t4 = torch.tensor([5, 300, 700, 990])
    cases = [Case("toy ε-model, random t", (toy, learner_alpha_bar(), rand(4, 3, 8, 8), t4, rand(4, 3, 8, 8, seed=1))),
             Case("t = 0", (toy, learner_alpha_bar(), rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), rand(2, 3, 8, 8, seed=1))),
             Case("t = T-1 = 999", (toy, learner_alpha_bar(), rand(2, 3, 8, 8), torch.full((2,), 999), rand(2, 3, 8, 8, seed=1))),
             Case(f"{source}'s UNet on real latents", (lambda z, t: unet(z, t), learner_alpha_bar(), z_real, t4, rand(*z_real.shape)))]

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
    ae, source = real_autoencoder("kl")
    steps, batch = (3, 4) if runtime.smoke_mode() else (50, 8)
    ds = shapes(resolution=32, n=batch * steps, seed=11)
    losses: dict[str, list[float]] = {"yours": [], "library": []}
    for who, n_steps in (("yours", steps), ("library", min(steps, 5))):  # the library run: enough to compare
        with torch.random.fork_rng():
            torch.manual_seed(0)
            unet = UNet(UNetConfig.small(model_channels=32, num_res_blocks=1, attention_resolutions=(2,)))
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

    def run(f: Fn) -> dict:
        model, source = real_ldm()
        return unet_demo(model, source, patched(unet_module, "timestep_embedding", f), "your time embedding")

    return check("timestep_embedding", fn, ref, cases, mistakes, "unet.timestep_embedding", run, demo)


def check_resblock_forward(fn: Fn, demo: bool = True) -> Verdict:
    """`resblock_forward(block, x, emb) -> (B, C_out, H, W)`: a UNet ResBlock (`ll.unet.ResBlock`, additive time
    injection) from its parts: h = conv1(SiLU(norm1(x))); h = h + emb_proj(SiLU(emb))[:, :, None, None]
    (`block.emb`); h = conv2(dropout(SiLU(norm2(h)))); return h + skip(x). x (B, C_in, H, W), emb (B, emb_dim).
    Cases: equal widths, C_in ≠ C_out (1×1 skip conv), B = 1, the first ResBlock of the shipped UNet."""
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
        model.unet(rand(2, *model.latent_shape), torch.tensor([100, 800]))
    hook.remove()
    cases = [Case("32 -> 32 channels", (block(32, 32, 0), rand(2, 32, 8, 8), rand(2, 64, seed=1))),
             Case("32 -> 64 channels (1x1 skip conv)", (block(32, 64, 1), rand(2, 32, 8, 8), rand(2, 64, seed=1))),
             Case("B = 1", (block(16, 16, 2), rand(1, 16, 4, 4), rand(1, 64, seed=1))),
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

    def run(f: Fn) -> dict:
        blocks = [m for m in model.unet.modules() if isinstance(m, ResBlock)]
        return unet_demo(model, source, forwards(blocks, lambda b: lambda x, emb: f(b, x, emb)),
                         f"your forward in all its {len(blocks)} ResBlocks")

    return check("resblock_forward", fn, ref, cases, mistakes, "unet.ResBlock", run, demo, atol=1e-4)


def check_attention(fn: Fn, demo: bool = True) -> Verdict:
    """`attention(q, k, v) -> softmax(q·kᵀ / √d)·v` (LDM §3.3), q (B, h, N, d), k and v (B, h, L, d) ->
    (B, h, N, d); the softmax runs over the L keys. Cases: self-attention (L = N), cross-attention (L ≠ N), one key
    (L = 1), d = 32."""
    def ref(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    cases = [Case("self-attention, N = L = 16, d = 8", (rand(2, 2, 16, 8), rand(2, 2, 16, 8, seed=1), rand(2, 2, 16, 8, seed=2))),
             Case("cross-attention, N = 16 queries, L = 5 keys", (rand(2, 2, 16, 8), rand(2, 2, 5, 8, seed=1), rand(2, 2, 5, 8, seed=2))),
             Case("a single key (L = 1: every weight is 1)", (rand(1, 2, 4, 8), rand(1, 2, 1, 8, seed=1), rand(1, 2, 1, 8, seed=2))),
             Case("d = 32", (rand(1, 1, 6, 32), rand(1, 1, 6, 32, seed=1), rand(1, 1, 6, 32, seed=2)))]

    def attn(q, k, v, scale=None, dim=-1):
        return torch.softmax(q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale), dim=dim) @ v

    mistakes = [
        ("scaled by 1/d instead of 1/√d: a missing square root", lambda q, k, v: attn(q, k, v, scale=1 / q.shape[-1])),
        ("the scores are not scaled: divide q·kᵀ by √d", lambda q, k, v: attn(q, k, v, scale=1.0)),
        ("the softmax runs over the queries (dim −2); it must normalise over the keys (dim −1)",
         lambda q, k, v: attn(q, k, v, dim=-2)),
        ("keys and values are swapped: the weights come from q·kᵀ and average v", lambda q, k, v: attn(q, v, k)),
    ]

    def run(f: Fn) -> dict:
        model, source = real_ldm()
        return unet_demo(model, source, patched(F, "scaled_dot_product_attention", f),
                         "your attention in every attention layer")

    return check("attention", fn, ref, cases, mistakes, "F.scaled_dot_product_attention", run, demo)


def check_unet_forward(fn: Fn, demo: bool = True) -> Verdict:
    """`unet_forward(unet, x, t) -> ε̂`: the forward pass of an unconditional `ll.unet.UNet` from its parts:
    emb = time_mlp(timestep_embedding(t, model_channels)); h = conv_in(x), kept as the first skip; per level each
    block `blk(h, emb, None)` (keep every output as a skip) then `downsample[level]` except after the last level
    (keep it too); mid2(mid1(h)); per up level each block on torch.cat([h, skips.pop()], 1), then `upsample[i]`
    except after the last; conv_out(SiLU(norm_out(h))). x (B, C, H, W), t (B,) long. Cases: two and three levels,
    two blocks per level, the shipped UNet on a real latent."""
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
    cases = [Case("2 levels, 1 block each", (tiny((1, 2), 1, 0), rand(2, 3, 8, 8), t2)),
             Case("3 levels (16×16 -> 4×4)", (tiny((1, 2, 2), 1, 1), rand(2, 3, 16, 16), t2)),
             Case("2 blocks per level", (tiny((1, 2), 2, 2), rand(2, 3, 8, 8), t2)),
             Case(f"{source}'s UNet", (model.unet, rand(2, *model.latent_shape, seed=3), t2))]

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
        with patched(model.unet, "forward", lambda x, t, context=None: f(model.unet, x, t)):
            got = model.sample(n, noise=noise, steps=10, return_latents=True)
        diff = float((got - want).abs().max())
        return {"images": model.decode(got), "max_diff": diff, "summary": f"{source} sampled {n} images (DDIM, 10 "
                f"steps) with your UNet forward: the same latents as with UNet.forward (max difference {diff:.1e})."}

    return check("unet_forward", fn, ref, cases, mistakes, "UNet.forward", run, demo, atol=1e-4, exception_hints=hints)




def check_conv2d_flops(fn: Fn, demo: bool = True) -> Verdict:
    """`conv2d_flops(c_in, c_out, kernel, h_out, w_out) -> int`: FLOPs of one k×k convolution (no bias), counted as
    torch's FlopCounterMode counts them: 2 per multiply-add, 2·c_in·c_out·k²·h_out·w_out. Cases: the UNet's first
    conv at 32×32 and 8×8, a 1×1 conv, a wide conv at 4×4. The demo prices LDM-f's first conv for f = 1 .. 32 at
    64×64 (notebook 07's equal-steps protocol) with your formula and measures each whole matched UNet beside it."""
    from torch.utils.flop_counter import FlopCounterMode  # local: ~0.5 s and 75 modules, for this check only

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
        return _price_ldm_f(f, FlopCounterMode)

    return check("conv2d_flops", fn, ref, cases, mistakes, "torch FlopCounterMode", run, demo)


def _price_ldm_f(f: Fn, flop_counter: type) -> dict:
    """Notebook 07's demo: the first conv of each LDM-f's matched UNet (`tradeoff.TradeoffConfig.equal_steps`, 64×64,
    the paper's c per f) priced with the learner's formula, and each whole UNet's forward FLOPs measured by torch's
    counter; the summary states the measured ratio between neighbouring f (no fixed rule is claimed)."""
    from .. import tradeoff  # local: the trade-off module is only needed by this demo

    resolution, target = 64, 1_800_000
    fs = (1, 4, 16) if runtime.smoke_mode() else tuple(tradeoff.PAPER_LATENT_CHANNELS)
    first, whole = {}, {}
    for fac in fs:
        c, side = tradeoff.PAPER_LATENT_CHANNELS[fac], resolution // fac
        cfg = tradeoff.matched_unet(c, side, target)
        first[fac] = int(f(c, cfg.model_channels, 3, side, side))
        with flop_counter(display=False) as counter, torch.no_grad():
            UNet(cfg)(torch.zeros(1, c, side, side), torch.zeros(1, dtype=torch.long))
        whole[fac] = int(counter.get_total_flops())
    ratios = {f"{a}→{b}": whole[a] / whole[b] for a, b in zip(fs, fs[1:])}
    lo, hi = min(ratios.values()), max(ratios.values())
    return {"first_conv_flops": first, "unet_forward_flops": whole, "ratios": ratios, "summary": (
        f"at {resolution}×{resolution}, with UNets matched to {target / 1e6:.1f} M parameters: your formula prices "
        "LDM-f's first conv at " + ", ".join(f"{first[a] / 1e6:.2f} MFLOPs (LDM-{a})" for a in fs)
        + "; torch's counter measures the whole UNet's forward pass (one image) at "
        + ", ".join(f"{whole[a] / 1e9:.3f} GFLOPs (LDM-{a})" for a in fs)
        + ". Measured ratio between neighbouring f: " + ", ".join(f"LDM-{k} {v:.1f}×" for k, v in ratios.items())
        + f" (from {lo:.1f}× to {hi:.1f}×, not a fixed 4×: the UNets are matched in parameters, not in shape, so "
        "their widths, depths and attention change with f, and the first conv's input channels c grow with f). "
        "At equal training steps every LDM-f gets the same number of updates, so a small f spends this much more "
        "compute on each: equal steps is the setting least favourable to a large f.")}

"""Hints for the checked exercises, hidden until the learner asks: `ex.hint("q_sample")` shows the first hint of an
exercise, each further call the next one (`ex.hint("q_sample", 2)` a given one). Every exercise has three, from
"where to look" to "almost the code":

    1  where it is in the paper and what to think about;
    2  the formula;
    3  the detail that usually goes wrong in code (shapes, broadcasting, dtypes).

The notebook text above a stub says what to compute, with its shapes; the formula is hint 2, opened on purpose.
"""

from __future__ import annotations

HINTS: dict[str, tuple[str, ...]] = {
    # 00
    "to_model_range": (
        "The kit's images are (3, H, W) float32 in [-1, 1] (print `ds[0]['image']`); a file gives (H, W, 3) uint8 in "
        "[0, 255]. Two things change: the order of the axes and the range of the values.",
        "A linear map sends 0 -> -1 and 255 -> +1: x / 127.5 - 1. The channel axis moves from last to first.",
        "torch.from_numpy(img) keeps uint8: convert with .float() before dividing, and move the axes with "
        ".permute(2, 0, 1).",
    ),
    "psnr": (
        "PSNR compares the error with the largest possible value (the peak, 1 for images in [0, 1]) on a log scale, "
        "in decibels; map both images from [-1, 1] to [0, 1] first.",
        "PSNR = 10 · log10(peak² / MSE) with peak 1, i.e. 10 · log10(1 / MSE), the MSE taken per image.",
        "One value per image: average the squared error over (C, H, W) only, e.g. ((x - y) ** 2).mean(dim=(1, 2, 3)), "
        "after (x + 1) / 2 and (y + 1) / 2.",
    ),
    # 01
    "kl_sample": (
        "q(z|x) is a diagonal Gaussian with mean `mean` and variance exp(logvar) (§3.1, the VAE of Kingma & Welling). "
        "Write the sample as a function of `noise` ~ N(0, I) so that gradients reach mean and logvar.",
        "The reparameterisation trick: z = μ + σ ⊙ ε with σ = exp(½ · logvar).",
        "σ is the square root of the variance: exp(0.5 * logvar), not exp(logvar).",
    ),
    "kl_divergence": (
        "The KL regulariser of the first stage (§3.1, App. G) between q(z|x) = N(μ, σ²) and the prior N(0, I) has a "
        "closed form for Gaussians; it is one number per image.",
        "KL = ½ · Σ_{c,h,w} (μ² + σ² − 1 − log σ²), with σ² = exp(logvar) and log σ² = logvar.",
        "Sum over (c, h, w), not over the batch: .sum(dim=(1, 2, 3)) gives shape (B,).",
    ),
    "vq_lookup": (
        "VQ (§3.1; VQ-VAE, van den Oord et al. 2017): every latent vector z_e[b, :, i, j] (c numbers) is replaced by "
        "the nearest codebook row; the gradient must still reach the encoder.",
        "indices = argmin_k ‖z_e − e_k‖²; z_q = z_e + sg[e_k − z_e] (sg = stop-gradient, `.detach()`), "
        "VQ-VAE's straight-through estimator.",
        "Move the channel axis last before comparing with the (K, c) codebook: z_e.permute(0, 2, 3, 1).reshape(-1, c); "
        "torch.cdist gives the distances; reshape the indices to (B, h, w) and the codes back to (B, c, h, w).",
    ),
    "scale_factor": (
        "LDM rescales the latent so that it has unit variance (App. D.1), estimated once on data over every entry of a "
        "batch of unscaled latents.",
        "scale = 1 / std(z), the standard deviation over all entries (not per channel).",
        "Return a Python float: float(1 / latents.flatten().std()).",
    ),
    # 02
    "q_sample": (
        "The forward process in closed form (DDPM eq. 4, LDM §3.2): z_t mixes z_0 and the noise with weights that "
        "depend only on ᾱ_t.",
        "z_t = √ᾱ_t · z_0 + √(1 − ᾱ_t) · ε.",
        "alpha_bar[t] has shape (B,): make it (B, 1, 1, 1) with .view(-1, 1, 1, 1) so it broadcasts against z0.",
    ),
    "scaled_linear_alpha_bar": (
        "LDM's configs name their schedule `linear`, but it is linear in √β (the diffusers name `scaled_linear`); "
        "ᾱ_t is how much of z_0 survives t + 1 noising steps (DDPM §2, eq. 4), each keeping a share 1 − β_s.",
        "β = linspace(√beta_start, √beta_end, T)²; ᾱ_t = ∏_{s=0..t} (1 − β_s).",
        "torch.cumprod(1 - betas, dim=0) is the running product (no leading 1: ᾱ_0 = 1 − β_0); build the linspace "
        "with dtype=torch.float64, as the library's schedule is float64.",
    ),
    "snr": (
        "In z_t the signal is √ᾱ_t·z_0 and the noise √(1 − ᾱ_t)·ε (DDPM eq. 4); the SNR is the ratio of their powers "
        "(variances) for unit-variance data.",
        "SNR(t) = ᾱ_t / (1 − ᾱ_t).",
        "A power is an amplitude squared: no square roots here; the whole schedule at once, elementwise.",
    ),
    # 03
    "timestep_embedding": (
        "The Transformer's sinusoidal position encoding (Vaswani et al. 2017), used by DDPM/LDM for t: half the "
        "dimensions are cosines, half sines, at frequencies falling geometrically.",
        "ω_i = 10000^(−i / (dim/2)) for i = 0 … dim/2 − 1; emb(t) = [cos(t·ω_0), …, cos(t·ω_{dim/2−1}), sin(t·ω_0), "
        "…, sin(t·ω_{dim/2−1})] (cosines first).",
        "t is (B,) and may be long: t.float()[:, None] * omega[None] gives (B, dim/2); torch.cat the cos and sin "
        "parts along dim=-1.",
    ),
    "resblock_forward": (
        "The ResBlock of DDPM/ADM that LDM's UNet uses (§3.3, App. D): two GroupNorm-SiLU-conv stages, the time "
        "embedding added in between, and a skip path around everything.",
        "h = conv1(SiLU(norm1(x))); h = h + emb(SiLU(e))[:, :, None, None]; h = conv2(dropout(SiLU(norm2(h)))); "
        "return h + skip(x).",
        "block.emb(...) is (B, C_out): add two axes ([:, :, None, None]) to broadcast over H×W; block.skip is the "
        "identity or a 1×1 conv, call it either way.",
    ),
    "attention": (
        "Scaled dot-product attention, the Attention(Q, K, V) of LDM §3.3: every query takes a weighted average of "
        "the values, weighted by how well it matches each key.",
        "softmax(Q·Kᵀ / √d) · V, the softmax over the L keys.",
        "k.transpose(-1, -2) swaps the last two axes only; the softmax runs over dim=-1; d = q.shape[-1].",
    ),
    "attention_block": (
        "The UNet's self-attention block (LDM §3.3, App. D; the `AttnBlock` of ADM): the H·W pixels become tokens, "
        "attend to each other (Q, K and V all from the image), and the result is added back to x.",
        "tokens = norm(x) as (B, H·W, C); q, k, v = to_qkv(tokens).chunk(3, -1), each split into heads "
        "(B, heads, H·W, d); out = attention(q, k, v) merged to (B, H·W, C); return x + to_out(out) as (B, C, H, W).",
        "x.flatten(2).transpose(1, 2) gives (B, H·W, C); reshape(B, N, heads, d).transpose(1, 2) splits heads; "
        "undo both in reverse order at the end (a reshape alone scrambles pixels and channels).",
    ),
    "unet_forward": (
        "The UNet of §3.3 / App. D: a time embedding, a down path that keeps every output as a skip, a middle, an "
        "up path that concatenates the skips, an output head. The trace of shapes above is the map.",
        "emb = time_mlp(timestep_embedding(t, model_channels)); h = conv_in(x); down: blocks, then downsample "
        "(not after the last level), every output kept; mid2(mid1(h)); up: each block on cat([h, skips.pop()], 1), "
        "then upsample (not after the last); conv_out(SiLU(norm_out(h))).",
        "Keep conv_in's output as the first skip; the up path pops the most recent skip first (a list used as a "
        "stack); every block is called as blk(h, emb, None).",
    ),
    "ldm_loss": (
        "LDM eq. 2: the network predicts the noise that was added to z_0 at a random t; the loss compares its "
        "prediction with that noise.",
        "z_t = √ᾱ_t · z_0 + √(1 − ᾱ_t) · ε; loss = mean ‖ε − ε_θ(z_t, t)‖² (F.mse_loss(eps_model(z_t, t), noise)).",
        "Give the network the same t you noised with; alpha_bar[t].view(-1, 1, 1, 1) broadcasts; a mean, not a sum.",
    ),
    # 04
    "predict_x0": (
        "DDPM eq. 4 gives z_t from z_0 and ε; the network gives ε̂: solve eq. 4 for z_0 (DDPM eq. 15).",
        "ẑ_0 = (z_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t.",
        "alpha_bar[t].view(-1, 1, 1, 1) broadcasts against z_t; the square roots are on ᾱ_t and 1 − ᾱ_t.",
    ),
    "ddim_step": (
        "DDIM (Song et al. 2021, eq. 12): predict ẑ_0 from ε̂, then re-noise it to the previous visited timestep with "
        "a deterministic part along ε̂ and, for η > 0, fresh noise of size σ_t (eq. 16).",
        "ẑ_0 = (z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t; σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev); "
        "z_prev = √ᾱ_prev·ẑ_0 + √(1 − ᾱ_prev − σ_t²)·ε̂ + σ_t·noise.",
        "alpha_bar_t and alpha_bar_prev are floats: use math.sqrt or ** 0.5; at the last step ᾱ_prev = 1, so "
        "σ_t = 0 and z_prev = ẑ_0.",
    ),
    "ddpm_step": (
        "DDPM's ancestral sampler (Algorithm 2): the true reverse step q(z_prev | z_t, z_0) is a Gaussian with a "
        "closed form (eq. 6-7); put the network's ẑ_0 in for z_0, take its mean and add noise of its variance.",
        "β_t = 1 − ᾱ_t/ᾱ_prev; ẑ_0 = (z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t; μ̃ = √ᾱ_prev·β_t/(1−ᾱ_t)·ẑ_0 + √(1−β_t)·(1−ᾱ_prev)/(1−ᾱ_t)·z_t; "
        "z_prev = μ̃ + √β̃_t·noise with β̃_t = (1−ᾱ_prev)/(1−ᾱ_t)·β_t.",
        "The ᾱ's are floats (** 0.5 for roots); noise is scaled by the standard deviation √β̃_t, not the variance; at "
        "the last step ᾱ_prev = 1 makes β̃_t = 0 by itself.",
    ),
    "cfg": (
        "Classifier-free guidance (Ho & Salimans 2022): start from the unconditional prediction and move along the "
        "direction the condition adds, scaled by s.",
        "ε̃ = ε̂(z, ∅) + s · (ε̂(z, c) − ε̂(z, ∅)).",
        "Check the ends: s = 0 must return eps_uncond, s = 1 eps_cond.",
    ),
    # 05
    "cross_attention": (
        "LDM §3.3: in cross-attention the queries come from the image tokens, the keys and values from the context "
        "τ_θ(y); the weights project each to width d.",
        "Q = x·w_q, K = context·w_k, V = context·w_v; out = softmax(Q·Kᵀ / √d)·V.",
        "w_k and w_v are (d_ctx, d): they multiply the context, never x; the softmax runs over the L context tokens "
        "(dim=-1).",
    ),
    # 06
    "sr_unet_input": (
        "Conditioning by concatenation (§3.3, §4.4): the low-res image is brought to the latent's h×w and stacked "
        "onto z_t along the channels, as `SuperResolutionConditioner` does.",
        "torch.cat([z_t, resize(lowres, (h, w))], dim=1), resize = F.interpolate(mode=\"bicubic\", antialias=True "
        "when it shrinks); no resizing when lowres is already h×w.",
        "z_t comes first (the UNet's first c input channels are the noisy latent); dim=1 is the channel axis.",
    ),
    "inpaint_unet_input": (
        "LDM's inpainting model (§4.5) is conditioned by concatenation, like super-resolution: the UNet sees z_t, "
        "the latent of the image with its hole blanked out, and where the hole is, all at the latent's h×w.",
        "torch.cat([z_t, encode(x * (1 − m)), avg_pool(m to h×w)], dim=1) with m = mask[:, None] (1 = missing).",
        "mask is (B, H, W): add the channel axis with mask[:, None]; F.adaptive_avg_pool2d(m, z_t.shape[-2:]) gives "
        "the share missing per cell; the hole is 0 (grey), not −1.",
    ),
    "keep_known": (
        "Replacement sampling (RePaint; Blended Latent Diffusion): on the kept cells, hand the sampler the ε that "
        "makes its prediction ẑ_0 equal the known latent; DDPM eq. 4 relates z_t, z_0 and ε.",
        "On keep = 1: ε = (z_t − √ᾱ_t · z_known) / √(1 − ᾱ_t); elsewhere the model's ε̂.",
        "torch.where(keep > 0, replaced, eps): keep (B, 1, h, w) broadcasts over the channels; alpha_bar_t is a float.",
    ),
    # 07
    "conv2d_flops": (
        "§4.1 compares LDM-f at equal training steps, so the cost of a step (mostly convolutions) decides the compute "
        "each model gets. Each output value of a k×k convolution is a sum of products over c_in input channels and "
        "k×k positions; count the output values and the products each needs.",
        "FLOPs = 2 · c_in · c_out · k² · h_out · w_out (one multiply-add = 2 FLOPs).",
        "Return an int; the kernel size enters squared.",
    ),
}

_next: dict[str, int] = {}  # name -> the level the next `hint(name)` shows


class Hint(str):
    """A hint's text; shown as plain text (no quotes) when it ends a notebook cell."""

    def __repr__(self) -> str:
        return str(self)


def hint(name: str, level: int | None = None) -> Hint:
    """The next hint for exercise `name` (1, then 2, then 3 on later calls), or hint `level` (1-based)."""
    if name not in HINTS:
        raise ValueError(f"no exercise named {name!r}; the exercises with hints: {', '.join(HINTS)}")
    hints = HINTS[name]
    if level is None:
        level = _next.get(name, 1)
        if level > len(hints):
            return Hint(f"{name}: no more hints ({len(hints)} shown). The reference solution is in "
                        f"solutions/exercises.py; `ex.hint({name!r}, 1)` shows the first hint again.")
    elif not isinstance(level, int) or not 1 <= level <= len(hints):
        raise ValueError(f"level must be an int from 1 to {len(hints)} for {name!r}; got {level!r}")
    _next[name] = max(_next.get(name, 1), level + 1)
    more = f" (`ex.hint({name!r})` again for hint {level + 1})" if level < len(hints) else " (the last one)"
    return Hint(f"{name}, hint {level} of {len(hints)}{more}: {hints[level - 1]}")

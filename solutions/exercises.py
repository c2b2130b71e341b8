"""Reference solutions of the checked exercises in notebooks/ (`ldm_lite.exercises`), written the way a learner
would: plain torch, a few lines each. Not shown in the notebooks; the tests check that every one passes its check,
and in smoke mode (`LDM_LITE_SMOKE=1`) a notebook's unsolved stub is checked with the solution from here."""

import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------ 00 data and metrics
def to_model_range(img):
    return torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1


def psnr(x, y):
    mse = (((x + 1) / 2 - (y + 1) / 2) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse)


# ------------------------------------------------------------------------------------------ 01 the autoencoder
def kl_sample(mean, logvar, noise):
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def vq_lookup(z_e, codebook):
    b, c, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, c)                     # (B·h·w, c)
    dist = torch.cdist(flat, codebook)                                # (B·h·w, K)
    indices = dist.argmin(dim=1).view(b, h, w)
    codes = codebook[indices].permute(0, 3, 1, 2)                     # (B, c, h, w)
    return z_e + (codes - z_e).detach(), indices                      # straight-through


# ------------------------------------------------------------------------------------------ 02 the forward process
def q_sample(alpha_bar, z0, t, noise):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return ab.sqrt() * z0 + (1 - ab).sqrt() * noise


def scaled_linear_alpha_bar(T, beta_start, beta_end):
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def snr(alpha_bar):
    return alpha_bar / (1 - alpha_bar)


def scale_factor(latents):
    return 1.0 / latents.std().item()


# ------------------------------------------------------------------------------------------ 03 the denoiser
def ldm_loss(eps_model, alpha_bar, z0, t, noise):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    return F.mse_loss(eps_model(z_t, t), noise)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def resblock_forward(block, x, emb):
    h = block.conv1(F.silu(block.norm1(x)))
    h = h + block.emb(F.silu(emb))[:, :, None, None]
    h = block.conv2(block.dropout(F.silu(block.norm2(h))))
    return h + block.skip(x)


def attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return weights @ v


def attention_block(block, x):
    b, c, h, w = x.shape
    tokens = block.norm(x).flatten(2).transpose(1, 2)                  # (B, HW, C)
    heads = block.attn.heads
    q, k, v = (y.reshape(b, h * w, heads, c // heads).transpose(1, 2)  # (B, heads, HW, d) each
               for y in block.attn.to_qkv(tokens).chunk(3, dim=-1))
    out = attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)      # heads merged: (B, HW, C)
    return x + block.attn.to_out(out).transpose(1, 2).reshape(b, c, h, w)


def unet_forward(unet, x, t):
    from ldm_lite.unet import timestep_embedding

    emb = unet.time_mlp(timestep_embedding(t, unet.config.model_channels))
    h = unet.conv_in(x)
    skips = [h]
    for level, blocks in enumerate(unet.down):
        for blk in blocks:
            h = blk(h, emb, None)
            skips.append(h)
        if level < len(unet.down) - 1:
            h = unet.downsample[level](h)
            skips.append(h)
    h = unet.mid2(unet.mid1(h, emb, None), emb, None)
    for i, blocks in enumerate(unet.up):
        for blk in blocks:
            h = blk(torch.cat([h, skips.pop()], dim=1), emb, None)
        if i < len(unet.up) - 1:
            h = unet.upsample[i](h)
    return unet.conv_out(F.silu(unet.norm_out(h)))


# ------------------------------------------------------------------------------------------ 04 the samplers
def predict_x0(alpha_bar, z_t, t, eps):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return (z_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):
    x0 = (z_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)) ** 0.5 * (1 - alpha_bar_t / alpha_bar_prev) ** 0.5
    return alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev - sigma**2) ** 0.5 * eps + sigma * noise


def ddpm_step(z_t, eps, alpha_bar_t, alpha_bar_prev, noise):
    beta = 1 - alpha_bar_t / alpha_bar_prev
    x0 = (z_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5
    mean = (alpha_bar_prev**0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - alpha_bar_prev) * z_t) / (1 - alpha_bar_t)
    var = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta
    return mean + var**0.5 * noise


def cfg(eps_uncond, eps_cond, scale):
    return eps_uncond + scale * (eps_cond - eps_uncond)


# ------------------------------------------------------------------------------------------ 05 conditioning
def cross_attention(x, context, w_q, w_k, w_v):
    q, k, v = x @ w_q, context @ w_k, context @ w_v
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


# ------------------------------------------------------------------------------------------ 06 image-to-image
def sr_unet_input(z_t, lowres):
    size = z_t.shape[-2:]
    if lowres.shape[-2:] != size:
        lowres = F.interpolate(lowres, size=size, mode="bicubic", antialias=lowres.shape[-1] > size[-1])
    return torch.cat([z_t, lowres], dim=1)


def inpaint_unet_input(z_t, x, mask, encode):
    m = mask[:, None].to(x.dtype)                                      # (B, 1, H, W), 1 = missing
    z_masked = encode(x * (1 - m))                                     # the hole is 0 (grey)
    return torch.cat([z_t, z_masked, F.adaptive_avg_pool2d(m, z_t.shape[-2:])], dim=1)


def keep_known(z_t, eps, alpha_bar_t, z_known, keep):
    replaced = (z_t - alpha_bar_t**0.5 * z_known) / (1 - alpha_bar_t) ** 0.5
    return torch.where(keep > 0, replaced, eps)


# ------------------------------------------------------------------------------------------ 07 the trade-off
def conv2d_flops(c_in, c_out, kernel, h_out, w_out):
    return 2 * c_in * c_out * kernel * kernel * h_out * w_out

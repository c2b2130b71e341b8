"""A small transcription of CompVis latent-diffusion's modules, with the reference's parameter names, for the interop
tests: `ldm/modules/diffusionmodules/model.py` (first-stage Encoder/Decoder), `openaimodel.py` (UNetModel, ResBlock,
AttentionBlock with QKVAttentionLegacy), `ldm/modules/attention.py` (SpatialTransformer), taming's VectorQuantizer2
lookup and `make_beta_schedule`. Written from the reference's forward passes (no Lightning, no fp16, no checkpointing),
so that a state dict made here has exactly the keys and shapes of a released checkpoint and the outputs the
reference's modules compute. Independent of ldm_lite: nothing here imports it."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------- first stage (model.py)


def _gn6(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.norm1, self.conv1 = _gn6(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.dropout, self.conv2 = _gn6(cout), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.in_channels != self.out_channels else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _gn6(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        q = q.reshape(b, c, h * w).permute(0, 2, 1)
        w_ = torch.softmax(torch.bmm(q, k.reshape(b, c, h * w)) * c**-0.5, dim=2)  # (b, hw_q, hw_k)
        h_ = torch.bmm(v.reshape(b, c, h * w), w_.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attn(c: int, attn_type: str) -> nn.Module:
    return AttnBlock(c) if attn_type == "vanilla" else nn.Identity()


class Encoder(nn.Module):
    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 double_z=True, attn_type="vanilla", **ignore):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        curr_res, in_ch_mult = resolution, (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(_attn(block_in, attn_type))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1 = ResnetBlock(block_in, block_in), _attn(block_in, attn_type)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = _gn6(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x):
        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](hs[-1])
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1])))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels,
                 attn_type="vanilla", **ignore):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1 = ResnetBlock(block_in, block_in), _attn(block_in, attn_type)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(_attn(block_in, attn_type))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out = _gn6(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class FirstStage(nn.Module):
    """AutoencoderKL (kind "kl") or VQModelInterface (kind "vq"), with a stand-in `loss` module holding the keys a
    released checkpoint's LPIPS/discriminator would (the converter must ignore them)."""

    def __init__(self, kind: str, ddconfig: dict, embed_dim: int, n_embed: int = 0):
        super().__init__()
        self.kind = kind
        self.encoder, self.decoder = Encoder(**ddconfig), Decoder(**ddconfig)
        z = ddconfig["z_channels"]
        if kind == "kl":
            self.quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1)
        else:
            self.quant_conv = nn.Conv2d(z, embed_dim, 1)
            self.quantize = nn.Module()
            self.quantize.embedding = nn.Embedding(n_embed, embed_dim)
            self.quantize.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
        self.loss = nn.Module()
        self.loss.logvar = nn.Parameter(torch.zeros(()))
        self.loss.discriminator = nn.Conv2d(3, 8, 4)

    def encode(self, x):
        """KL: the posterior mean (`encode(x).mode()`); VQ: the pre-quantization latent (VQModelInterface.encode)."""
        h = self.quant_conv(self.encoder(x))
        return h.chunk(2, dim=1)[0] if self.kind == "kl" else h

    def quantize_indices(self, h):
        z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        e = self.quantize.embedding.weight
        d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * torch.einsum("bd,dn->bn", z, e.t())
        return d.argmin(1).view(h.shape[0], h.shape[2], h.shape[3])

    def decode(self, h):
        if self.kind == "vq":  # VQModelInterface.decode: through the quantizer first
            h = self.quantize.embedding(self.quantize_indices(h)).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(h))


# ----------------------------------------------------------------------------------------------- UNet (openaimodel.py)


def _gn32(c: int) -> nn.GroupNorm:  # openaimodel's normalization(): GroupNorm32(32, c), eps 1e-5
    return nn.GroupNorm(32, c)


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class OpDown(nn.Module):
    def __init__(self, c: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class ConvUp(nn.Module):
    def __init__(self, c: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, out_channels=None, use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_gn32(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = ConvUp(channels, False), ConvUp(channels, False)
        elif down:
            self.h_upd, self.x_upd = OpDown(channels, False), OpDown(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, (1 + use_scale_shift_norm) * self.out_channels))
        self.out_layers = nn.Sequential(_gn32(self.out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if self.out_channels == channels else nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention with QKVAttentionLegacy (the heads split before q, k, v) or QKVAttention (new order)."""

    def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = _gn32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        bs, width, length = qkv.shape
        ch = width // (3 * self.num_heads)
        if self.new_order:
            q, k, v = (t.reshape(bs * self.num_heads, ch, length) for t in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(bs * self.num_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner, context_dim = dim_head * heads, context_dim or query_dim
        self.scale, self.heads = dim_head**-0.5, heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        h = self.heads
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))  # (b, h, n, d)
        attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale).softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return self.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim=None):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None):
        super().__init__()
        inner = n_heads * d_head
        self.norm = _gn6(in_channels)
        self.proj_in = nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(inner, n_heads, d_head, context_dim)
                                                for _ in range(depth))
        self.proj_out = nn.Conv2d(inner, in_channels, 1)

    def forward(self, x, context=None):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            t = block(t, context=context)
        return self.proj_out(t.transpose(1, 2).reshape(b, -1, h, w)) + x


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """openaimodel.UNetModel (legacy=True), the parts LDM's configs use."""

    def __init__(self, *, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult=(1, 2, 4, 8), num_heads=-1, num_head_channels=-1, use_scale_shift_norm=False,
                 resblock_updown=False, use_new_attention_order=False, use_spatial_transformer=False,
                 transformer_depth=1, context_dim=None, **ignore):
        super().__init__()
        self.model_channels = model_channels
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        def attention(ch):
            heads = num_heads if num_head_channels == -1 else ch // num_head_channels
            if use_spatial_transformer:  # legacy: dim_head = ch // num_heads
                return SpatialTransformer(ch, heads, ch // heads, transformer_depth, context_dim)
            return AttentionBlock(ch, num_heads, num_head_channels, use_new_attention_order)

        def res(ch, out=None, **kw):
            return ResBlock(ch, emb, out, use_scale_shift_norm, **kw)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(res(ch, ch, down=True) if resblock_updown
                                                                 else OpDown(ch, True)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch), attention(ch), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else ConvUp(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(_gn32(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def forward(self, x, timesteps, context=None):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


class ClassEmbedder(nn.Module):
    def __init__(self, embed_dim, n_classes=1000):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)

    def forward(self, labels):
        return self.embedding(labels[:, None])  # (B, 1, d)


def make_beta_schedule(n_timestep, linear_start=1e-4, linear_end=2e-2):
    """The reference's "linear" schedule (linear in √β), float64 as there."""
    return (torch.linspace(linear_start**0.5, linear_end**0.5, n_timestep, dtype=torch.float64) ** 2).numpy()


def schedule_buffers(betas: np.ndarray) -> dict[str, torch.Tensor]:
    """Some of the buffers DDPM.register_schedule stores in every LDM checkpoint (the converter ignores them)."""
    alphas_cumprod = np.cumprod(1.0 - betas)
    return {"betas": torch.tensor(betas, dtype=torch.float32),
            "alphas_cumprod": torch.tensor(alphas_cumprod, dtype=torch.float32),
            "sqrt_alphas_cumprod": torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32)}


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter random values (biases and norm affines too, ~1/sqrt(fan-in) for weights), so that a wrong
    mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim <= 1:
                base = 1.0 if name.endswith("weight") else 0.0  # norm scales around 1
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if "embedding" not in name else 1
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return module


@torch.no_grad()
def ddim_sample(eps_model, alphas_cumprod: np.ndarray, steps: int, x_T: torch.Tensor) -> torch.Tensor:
    """DDIMSampler.sample with eta = 0 ("uniform" discretization, ldm/models/diffusion/ddim.py)."""
    T = len(alphas_cumprod)
    ddim_timesteps = np.asarray(list(range(0, T, T // steps))) + 1  # make_ddim_timesteps: "+1 for the final alpha"
    alphas = torch.tensor(alphas_cumprod[ddim_timesteps], dtype=torch.float32)
    alphas_prev = torch.tensor([alphas_cumprod[0]] + alphas_cumprod[ddim_timesteps[:-1]].tolist(), dtype=torch.float32)
    x = x_T
    for i, step in enumerate(np.flip(ddim_timesteps)):
        index = len(ddim_timesteps) - i - 1
        t = torch.full((x.shape[0],), int(step), dtype=torch.long)
        e_t = eps_model(x, t)
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t
    return x

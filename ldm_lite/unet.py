"""The ε-prediction UNet ε_θ(z_t, t, τ_θ(y)) of LDM (§3.3; the ADM/LDM `openaimodel` layout, Dhariwal & Nichol 2021).

    t ──► sinusoidal(t) ──► MLP ──► emb (B, 4·mc)                 injected into every ResBlock
    z_t (B, C_in [+ concat], H, W)
     └► conv_in ─► [ResBlock (+ attention)] × num_res_blocks ─► Downsample ─► ... (one level per channel_mult)
        ─► middle: ResBlock, attention, ResBlock
        ─► [concat skip, ResBlock (+ attention)] × (num_res_blocks + 1) ─► Upsample ─► ... (levels reversed)
        ─► GroupNorm, SiLU, conv_out (zero-initialised, so ε̂ = 0 at init) ─► ε̂ (B, C_out, H, W)

Initialisation as in the reference (`openaimodel.py`, `zero_module`): every residual branch starts at zero, so each
block starts as the identity (or its 1×1 skip): the ResBlock's second conv, the self-attention block's output
projection, the SpatialTransformer's `proj_out` and `conv_out`.

Attention: where `attention_resolutions` contains a level's downsampling rate (1 = full resolution, 2 = half, ...,
as in LDM's configs), each block of that level ends with an attention layer: a self-attention `AttentionBlock`
when `context_dim` is None, else a `SpatialTransformer` whose cross-attention reads the context sequence
(B, L, context_dim) produced by a conditioner (`ldm_lite.conditioning`). The middle block always attends.

Concat conditioning (super-resolution, inpainting): the caller concatenates the conditioning image to z_t along
channels; `concat_channels` tells the UNet how many extra input channels to expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ldm_lite.attention import Attention, AttentionBlock, SpatialTransformer
from ldm_lite.checkpoint import Pretrained

from .errors import UsageError


@dataclass
class UNetConfig:
    in_channels: int = 4  # channels of z_t (latent channels c, or 3 in pixel space)
    out_channels: int = 4  # channels of ε̂ (= in_channels for ε-prediction)
    model_channels: int = 64  # width of the first level; level i has model_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2)  # one entry per resolution level (len - 1 downsamplings)
    num_res_blocks: int = 2  # ResBlocks per level on the way down (+1 on the way up)
    attention_resolutions: tuple[int, ...] = (1, 2)  # downsampling rates with attention (1 = input size), as in LDM
    head_dim: int = 32  # channels per attention head (heads = channels // head_dim); wide heads are fast on CPU
    context_dim: int | None = None  # features per context token for cross-attention; None = no cross-attention
    transformer_depth: int = 1  # transformer blocks per SpatialTransformer (only with context_dim)
    dropout: float = 0.0  # dropout inside ResBlocks and feed-forwards
    concat_channels: int = 0  # extra input channels concatenated to z_t (concat conditioning)
    scale_shift_norm: bool = False  # inject t as GroupNorm scale and shift (ADM) instead of adding it
    norm_groups: int = 32  # GroupNorm groups; every width must be divisible by it
    use_checkpoint: bool = False  # gradient checkpointing per block (less memory, ~30% slower training)
    num_heads: int | None = None  # fixed heads per attention layer (the reference's num_heads); None: width // head_dim
    resblock_updown: bool = False  # resample with ResBlocks (avg-pool / nearest inside; BigGAN, reference's churches)
    norm_eps: float = 1e-6  # GroupNorm eps of ResBlocks, self-attention blocks and the output (reference: 1e-5)
    attention_qkv_bias: bool = False  # bias on the self-attention blocks' q, k, v projection (the reference has one)

    @classmethod
    def small(cls, in_channels: int = 3, context_dim: int | None = None, **overrides) -> UNetConfig:
        """For 8×8×3 latents (LDM-4 on 32×32 images with the kit's c = 3 autoencoders): ~4M parameters, attention
        at 8×8 and 4×4, CPU-friendly."""
        return cls(**{"in_channels": in_channels, "out_channels": in_channels, "model_channels": 64,
                      "channel_mult": (1, 2), "num_res_blocks": 2, "attention_resolutions": (1, 2), "head_dim": 32,
                      "context_dim": context_dim, **overrides})

    @classmethod
    def pixel32(cls, context_dim: int | None = None, **overrides) -> UNetConfig:
        """LDM-1 at 32×32×3 (pixel space): levels 32, 16, 8 with attention at 16×16 and 8×8."""
        return cls(**{"in_channels": 3, "out_channels": 3, "model_channels": 64, "channel_mult": (1, 2, 2),
                      "num_res_blocks": 2, "attention_resolutions": (2, 4), "head_dim": 64,
                      "context_dim": context_dim, **overrides})

    def validate(self) -> None:
        levels = len(self.channel_mult)
        rates = [2**i for i in range(levels)]
        bad = [r for r in self.attention_resolutions if r not in rates]
        if bad:
            raise UsageError(f"attention_resolutions {bad} are not downsampling rates of this UNet; use some of {rates}")
        for level, mult in enumerate(self.channel_mult):
            width = self.model_channels * mult
            if width % self.norm_groups:
                raise UsageError(f"width {width} is not divisible by norm_groups={self.norm_groups}; change model_channels")
            attends = 2**level in self.attention_resolutions or level == levels - 1  # the middle block always attends
            if attends and self.num_heads is not None:
                if width % self.num_heads:
                    raise UsageError(f"width {width} is not divisible by num_heads={self.num_heads}; pick a head count "
                                     "dividing it")
            elif attends and width % self.head_dim:
                raise UsageError(f"width {width} is not divisible by head_dim={self.head_dim}; pick a head_dim dividing it")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017 §3.5): (B,) -> (B, dim),
    [cos(t ω_i), sin(t ω_i)] with ω_i = max_period^(-i / (dim/2)), as in LDM and diffusers (flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-dropout-conv, + skip (1×1 conv if widths differ).

    `resample="down"` / `"up"`: the block also halves (2×2 average pool) / doubles (nearest) the resolution, of the
    main path between SiLU and the first conv and of the skip path (BigGAN; the reference's `resblock_updown`)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, scale_shift: bool, groups: int,
                 eps: float = 1e-6, resample: str | None = None):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.scale_shift, self.resample = scale_shift, resample
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip path, as in the reference (zero_module)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # x (B, c_in, H, W), emb (B, emb_dim) -> (B, c_out, H, W)
        if self.resample is None:
            h = self.conv1(F.silu(self.norm1(x)))
        else:  # (B, c, H, W) -> (B, c, H/2, W/2) or (B, c, 2H, 2W)
            h = self.conv1(self._resample(F.silu(self.norm1(x))))
            x = self._resample(x)
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:  # ADM's AdaGN: norm(h) (1 + scale) + shift
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return h.add_(self.skip(x))  # in place: conv backward does not need its output


class Block(nn.Module):
    """One step of a UNet level: a ResBlock, then (optionally) attention."""

    def __init__(self, res: ResBlock, attn: nn.Module | None, use_checkpoint: bool):
        super().__init__()
        self.res, self.attn, self.use_checkpoint = res, attn, use_checkpoint

    def _forward(self, x: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context)

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, context, use_reentrant=False)
        return self._forward(x, emb, context)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(x)  # emb unused: the same call as a resampling ResBlock


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # emb unused, as in Downsample


class UNet(nn.Module, Pretrained):
    """ε_θ(z_t, t, context): (B, C_in + concat, H, W), (B,) long, (B, L, context_dim) | None -> (B, C_out, H, W).

    Activations of inputs with at least `channels_last_from` pixels (default 16×16) run in channels-last memory
    layout on CPU and CUDA: oneDNN/cuDNN convolve it faster, and image -> token reshapes for attention become free
    views (measured 1.1-1.3× faster training at 32×32 on a CPU; at 8×8 GroupNorm and SiLU are slower in that
    layout, so small latents stay NCHW). Weights and outputs keep the standard layout, so nothing outside the UNet
    sees the difference.
    """

    config_class = UNetConfig
    channels_last_from: int = 256  # H·W from which activations use channels-last memory (math is unchanged)

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        mc, emb_dim = c.model_channels, 4 * c.model_channels
        self.time_mlp = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(c.in_channels + c.concat_channels, mc, 3, padding=1)

        def resblock(c_in: int, c_out: int, resample: str | None = None) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, c.dropout, c.scale_shift_norm, c.norm_groups, c.norm_eps, resample)

        def block(c_in: int, c_out: int, attend: bool) -> Block:
            res = resblock(c_in, c_out)
            attn = self._attention(c_out) if attend else None
            return Block(res, attn, c.use_checkpoint)

        widths = [mc * m for m in c.channel_mult]
        skip_widths, ch = [mc], mc
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(widths):
            attend = 2**level in c.attention_resolutions
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                blocks.append(block(ch, width, attend))
                ch = width
                skip_widths.append(ch)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(resblock(ch, ch, "down") if c.resblock_updown else Downsample(ch))
                skip_widths.append(ch)
        self.mid1, self.mid2 = block(ch, ch, True), block(ch, ch, False)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            attend = 2**level in c.attention_resolutions
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                blocks.append(block(ch + skip_widths.pop(), width, attend))
                ch = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(resblock(ch, ch, "up") if c.resblock_updown else Upsample(ch))
        self.norm_out = nn.GroupNorm(c.norm_groups, ch, eps=c.norm_eps)
        self.conv_out = nn.Conv2d(ch, c.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # ε̂ = 0 at initialisation
        nn.init.zeros_(self.conv_out.bias)

    def _attention(self, channels: int) -> nn.Module:
        c = self.config
        if c.context_dim is None:
            return AttentionBlock(channels, c.head_dim, c.norm_groups, c.num_heads, c.attention_qkv_bias, c.norm_eps)
        return SpatialTransformer(channels, c.head_dim, c.context_dim, c.transformer_depth, c.dropout, c.norm_groups,
                                  c.num_heads)

    @property
    def levels(self) -> int:
        return len(self.config.channel_mult)

    def check_inputs(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        """Raise a ValueError that says what to change; return t as a (B,) tensor."""
        c = self.config
        expected = c.in_channels + c.concat_channels
        if x.ndim != 4 or x.shape[1] != expected:
            extra = f" ({c.in_channels} + {c.concat_channels} concat channels: torch.cat([z_t, c_concat], 1))"
            raise UsageError(f"x must be (B, {expected}, H, W){extra if c.concat_channels else ''}, got {tuple(x.shape)}")
        factor = 2 ** (self.levels - 1)
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise UsageError(
                f"spatial size {h}×{w} is not divisible by 2^{self.levels - 1}={factor} (one halving per level after "
                f"the first); pad or crop to {math.ceil(h / factor) * factor}×{math.ceil(w / factor) * factor}, or use "
                "fewer levels in channel_mult"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise UsageError(f"t must be a scalar or have shape (B,)=({x.shape[0]},), got {tuple(t.shape)}")
        if context is not None:
            if c.context_dim is None:
                raise UsageError("this UNet has no cross-attention (context_dim=None) but a context was passed; "
                                 "build it with UNetConfig(context_dim=...) or drop the context")
            if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != c.context_dim:
                raise UsageError(f"context has shape {tuple(context.shape)} but this UNet expects (B={x.shape[0]}, L, "
                                 f"context_dim={c.context_dim}); match the conditioner's output width to context_dim")
        return t

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """x (B, C_in + concat, H, W), t (B,) timesteps, context (B, L, context_dim) or None -> ε̂ (B, C_out, H, W)."""
        t = self.check_inputs(x, t, context)
        emb = self.time_mlp(timestep_embedding(t, self.config.model_channels).to(x.dtype))  # (B, 4·mc)
        if x.shape[-2] * x.shape[-1] >= self.channels_last_from and x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)  # (B, H, W, C) in memory; see the class doc
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb, context)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h, emb)  # (B, C, H/2^(level+1), W/2^(level+1))
                skips.append(h)
        h = self.mid2(self.mid1(h, emb, context), emb, context)
        for i, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb, context)
            if i < self.levels - 1:
                h = self.upsample[i](h, emb)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()  # (B, C_out, H, W), standard layout

    # ------------------------------------------------------------------ attention maps for the notebooks
    def cross_attentions(self) -> dict[str, Attention]:
        """The cross-attention layers by module name (empty without context_dim)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, Attention) and m.context_dim is not None
                and name.endswith("attn2")}

    def store_attention(self, enabled: bool = True) -> None:
        """Keep the last cross-attention probabilities (B, heads, HW, L) in each layer's `.last_attention`."""
        for m in self.cross_attentions().values():
            m.store_attention = enabled
            m.last_attention = None

    def attention_maps(self) -> dict[str, Tensor]:
        """{layer name: (B, heads, HW, L)} from the last forward with `store_attention(True)`."""
        return {n: m.last_attention for n, m in self.cross_attentions().items() if m.last_attention is not None}

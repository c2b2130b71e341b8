"""Attention for the UNet: self-attention over image tokens, cross-attention to a context sequence (LDM §3.3).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d) V                       (LDM §3.3, unnumbered; Vaswani et al. 2017)
    Q = W_Q φ(z_t)  from the image tokens (B, HW, C)
    K = W_K τ_θ(y), V = W_V τ_θ(y)  from the context (B, L, d_ctx): class, text or layout tokens
                                    (semantic maps reach the UNet by concatenation, not attention)

Blocks here:
    `Attention`           multi-head attention; key/value from `context` when given, else from the queries (self)
    `AttentionBlock`      GroupNorm -> self-attention -> residual, on a feature map (the unconditional UNet's block)
    `SpatialTransformer`  GroupNorm -> proj in -> [self-attn, cross-attn, GEGLU feed-forward] x depth -> proj out
                          (zero-initialised) -> residual. With `context=None` the cross-attention sub-layer is
                          skipped (its residual adds nothing), so a conditional UNet also runs unconditionally.

Heads: the number of heads is channels // head_dim, or a fixed `heads` (the reference's `num_heads`). Wide heads (32-64) matter on a CPU: the fused kernel of
`scaled_dot_product_attention` is much slower per FLOP with 8-wide heads (diffusers' default).

Attention maps: set `store_attention = True` on a cross-attention module (or `UNet.store_attention(True)`) and it
computes the probabilities explicitly and keeps the last ones in `.last_attention` (B, heads, HW, L); otherwise
the fused kernel runs and nothing is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .errors import UsageError


def _heads(channels: int, head_dim: int, heads: int | None = None) -> int:
    """Heads of a layer: `heads` when fixed (the reference's num_heads), else channels // head_dim."""
    if heads is not None:
        if heads < 1 or channels % heads:
            raise ValueError(f"{channels} channels cannot be split into heads={heads}; pick a head count dividing it")
        return heads
    if channels % head_dim:
        raise UsageError(f"{channels} channels are not divisible by head_dim={head_dim}; pick a head_dim dividing it")
    return channels // head_dim


class Attention(nn.Module):
    """Multi-head (self or cross) attention on token sequences. x (B, N, dim), context (B, L, context_dim)."""

    def __init__(self, dim: int, head_dim: int = 64, context_dim: int | None = None, heads: int | None = None,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = _heads(dim, head_dim, heads)
        self.context_dim = context_dim
        if context_dim is None:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # one matmul for Q, K, V
        else:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.store_attention = False
        self.last_attention: Tensor | None = None  # (B, heads, N, L) when store_attention

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_dim is None:
            q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        else:
            if context is None:
                raise UsageError("this is a cross-attention layer: pass a context (B, L, context_dim)")
            if context.shape[-1] != self.context_dim:
                raise UsageError(
                    f"context has {context.shape[-1]} features per token but the layer expects "
                    f"context_dim={self.context_dim}; project the context or build the UNet with that context_dim"
                )
            q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
            k, v = rearrange(self.to_kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        if self.store_attention:
            probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)  # (B, h, N, L), LDM §3.3
            self.last_attention = probs.detach()
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class AttentionBlock(nn.Module):
    """Self-attention on a feature map with a residual: x + W_o Attn(GroupNorm(x)). (B, C, H, W) -> same."""

    def __init__(self, channels: int, head_dim: int = 64, norm_groups: int = 32, heads: int | None = None,
                 qkv_bias: bool = False, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=eps)
        self.attn = Attention(channels, head_dim, heads=heads, qkv_bias=qkv_bias)
        nn.init.zeros_(self.attn.to_out.weight)  # starts as the identity, as the reference's zero_module(proj_out)
        nn.init.zeros_(self.attn.to_out.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        return x + rearrange(self.attn(tokens), "b (h w) c -> b c h w", h=h, w=w)


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020): (x W + b) ⊙ GELU(x V + c)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attn, cross-attn (skipped without context), GEGLU feed-forward."""

    def __init__(self, dim: int, head_dim: int, context_dim: int | None, dropout: float = 0.0, ff_mult: int = 4,
                 heads: int | None = None):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, head_dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, head_dim, context_dim=context_dim or dim, heads=heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(GEGLU(dim, ff_mult * dim), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # x (B, N, dim), context (B, L, d_ctx)
        x = x + self.attn1(self.norm1(x))
        if context is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """The LDM conditioning block (§3.3, Fig. 3): x + proj_out(Transformer(proj_in(GroupNorm(x)), context)).

    x (B, C, H, W), context (B, L, context_dim) or None -> (B, C, H, W). proj_out starts at zero, so a new block
    is the identity.
    """

    def __init__(self, channels: int, head_dim: int = 64, context_dim: int | None = None, depth: int = 1,
                 dropout: float = 0.0, norm_groups: int = 32, heads: int | None = None):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(TransformerBlock(channels, head_dim, context_dim, dropout, heads=heads)
                                    for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        tokens = self.proj_in(rearrange(self.norm(x), "b c h w -> b (h w) c"))  # (B, HW, C)
        for block in self.blocks:
            tokens = block(tokens, context)
        return x + rearrange(self.proj_out(tokens), "b (h w) c -> b c h w", h=h, w=w)

    def cross_attentions(self) -> list[Attention]:
        return [block.attn2 for block in self.blocks]

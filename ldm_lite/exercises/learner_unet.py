"""Notebook 03's UNet, built by the learner: the skeleton of `ll.unet.UNet` (the same modules under the same names,
so it loads the library UNet's `state_dict`) whose forward passes are the learner's own functions:

    timestep_embedding(t, dim)           the sinusoidal embedding                     (exercise, notebook 03)
    resblock_forward(block, x, emb)      every ResBlock                               (exercise)
    attention_block(block, x)            every self-attention block (with the learner's `attention` inside)
    unet_forward(unet, x, t)             the whole network: embedding, down, middle, up, head

    parts = ex.UNetParts(timestep_embedding, resblock_forward, attention_block, unet_forward)
    verdict = ex.build_unet(ldm.unet.config, parts)   # checks it against ll.unet.UNet with the same weights
    ldm.unet = verdict.fn                             # your UNet if it matched, else the library's (with a note)

Only the parameter containers and the two resampling convolutions are the skeleton's; everything a forward pass
computes between them is the learner's. `check_attention_block` (the self-attention block's forward) lives here
because the learner's UNet is what it is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .. import unet as unet_module
from ..attention import AttentionBlock
from ..unet import UNet, UNetConfig
from .checking import Case, Fn, Verdict, check, forwards, patched, rand, real_ldm, unet_demo


# ============================================================================================== the exercise
def check_attention_block(fn: Fn, demo: bool = True) -> Verdict:
    """`attention_block(block, x) -> (B, C, H, W)`: the UNet's self-attention block (`ll.attention.AttentionBlock`,
    LDM §3.3 with K, V from the image itself) from its parts: tokens = GroupNorm(x) as (B, H·W, C) (`block.norm`);
    q, k, v = the three C-wide thirds of `block.attn.to_qkv(tokens)`, each split into `block.attn.heads` heads of
    d = C / heads channels, (B, heads, H·W, d); out = attention(q, k, v), heads merged back to (B, H·W, C);
    return x + `block.attn.to_out(out)` as (B, C, H, W). Cases: one head, two heads, B = 1 on 4×4, the middle
    attention block of the shipped UNet on real activations."""
    def ref(block, x):
        return block(x)

    def block(channels, head_dim, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            b = AttentionBlock(channels, head_dim, norm_groups=8).eval()
            for p in b.parameters():  # to_out starts at zero, which hides every mistake: make every term count
                nn.init.normal_(p, std=0.2)
        return b

    model, source = real_ldm()
    captured: list = []
    mid = model.unet.mid1.attn
    hook = mid.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    with torch.no_grad():
        model.unet(rand(2, *model.latent_shape), torch.tensor([100, 800]))
    hook.remove()
    cases = [Case("one head, 32 channels, 8×8", (block(32, 32, 0), rand(2, 32, 8, 8))),
             Case("two heads of 16 channels", (block(32, 16, 1), rand(2, 32, 8, 8, seed=1))),
             Case("B = 1, 4×4", (block(16, 8, 2), rand(1, 16, 4, 4, seed=2))),
             Case(f"middle attention block of {source}", (mid, captured[0]))]

    def attn_block(b, x, norm=True, residual=True, heads_layout="(h d)", out_proj=True, unflatten="permute"):
        bs, c, h, w = x.shape
        tokens = rearrange(b.norm(x) if norm else x, "b c h w -> b (h w) c")
        q, k, v = (rearrange(y, f"b n {heads_layout} -> b h n d", h=b.attn.heads)
                   for y in b.attn.to_qkv(tokens).chunk(3, dim=-1))
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")
        out = b.attn.to_out(out) if out_proj else out
        out = rearrange(out, "b (h w) c -> b c h w", h=h, w=w) if unflatten == "permute" else out.reshape(bs, c, h, w)
        return x + out if residual else out

    mistakes = [
        ("the residual is missing: the block returns x + to_out(attention)", lambda b, x: attn_block(b, x, residual=False)),
        ("GroupNorm first: the tokens are block.norm(x), the residual adds the un-normalised x",
         lambda b, x: attn_block(b, x, norm=False)),
        ("the output projection block.attn.to_out is missing", lambda b, x: attn_block(b, x, out_proj=False)),
        ("heads are split wrongly: each third is (heads, d) with the head index outer, reshape(B, N, heads, d)",
         lambda b, x: attn_block(b, x, heads_layout="(d h)")),
        ("(B, H·W, C) back to (B, C, H, W) needs a transpose before the reshape, not a reshape alone",
         lambda b, x: attn_block(b, x, unflatten="reshape")),
    ]

    def run(f: Fn) -> dict:
        blocks = [m for m in model.unet.modules() if isinstance(m, AttentionBlock)]
        return unet_demo(model, source, forwards(blocks, lambda b: lambda x, context=None: f(b, x)),
                         f"your forward in all its {len(blocks)} attention blocks")

    return check("attention_block", fn, ref, cases, mistakes, "attention.AttentionBlock", run, demo,
                 exception_hints={"shape": "split each of q, k, v (B, H·W, C) into (B, heads, H·W, d): "
                                  "reshape(B, N, heads, d).transpose(1, 2)"})


# ============================================================================================== the skeleton
@dataclass
class UNetParts:
    """The learner's functions, one per kind of block (each a `check_<name>(...).fn`: theirs, or the library's)."""

    timestep_embedding: Fn  # (t (B,), dim) -> (B, dim)
    resblock_forward: Fn  # (block, x (B, C_in, H, W), emb (B, 4·mc)) -> (B, C_out, H, W)
    attention_block: Fn  # (block, x (B, C, H, W)) -> (B, C, H, W)
    unet_forward: Fn  # (unet, x (B, C, H, W), t (B,)) -> ε̂ (B, C, H, W)

    def unfinished(self) -> list[str]:
        """The parts that are the library's stand-ins (their exercise has not passed yet)."""
        return [name for name, fn in vars(self).items() if getattr(fn, "is_library_fallback", False)]


class LearnerResBlock(nn.Module):
    """`ll.unet.ResBlock`'s parameters (norm1, conv1, emb, norm2, dropout, conv2, skip); forward: the learner's."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, c: UNetConfig, parts: UNetParts):
        super().__init__()
        self.parts = parts
        self.norm1 = nn.GroupNorm(c.norm_groups, c_in, eps=c.norm_eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(c.norm_groups, c_out, eps=c.norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # starts as its skip path, as the library's
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.parts.resblock_forward(self, x, emb)


class LearnerSelfAttention(nn.Module):
    """`ll.attention.Attention`'s parameters for self-attention: to_qkv (C -> 3C), to_out, and the head count."""

    def __init__(self, channels: int, c: UNetConfig):
        super().__init__()
        self.heads = c.num_heads or channels // c.head_dim
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=c.attention_qkv_bias)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)  # the block starts as the identity, as the library's
        nn.init.zeros_(self.to_out.bias)


class LearnerAttentionBlock(nn.Module):
    """`ll.attention.AttentionBlock`'s parameters (norm, attn); forward: the learner's `attention_block`."""

    def __init__(self, channels: int, c: UNetConfig, parts: UNetParts):
        super().__init__()
        self.parts = parts
        self.norm = nn.GroupNorm(c.norm_groups, channels, eps=c.norm_eps)
        self.attn = LearnerSelfAttention(channels, c)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.parts.attention_block(self, x)


class LearnerBlock(nn.Module):
    """`ll.unet.Block`: a ResBlock, then (optionally) attention; called as blk(h, emb, None) by `unet_forward`."""

    def __init__(self, res: LearnerResBlock, attn: LearnerAttentionBlock | None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class Resample(nn.Module):
    """The skeleton's own down/upsampling (a strided conv, or nearest ×2 then a conv), as `ll.unet.Downsample` /
    `Upsample`: (B, C, H, W) -> (B, C, H/2, W/2) or (B, C, 2H, 2W)."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class LearnerUNet(nn.Module):
    """ε_θ(z_t, t) built from the learner's parts, module for module the layout of `ll.unet.UNet(config)` (an
    unconditional UNet: no context, additive time injection, convolutional resampling). (B, C, H, W), (B,) ->
    (B, C, H, W). Inside its forward, `ll.unet.timestep_embedding` is the learner's, so a `unet_forward` that calls
    it (as notebook 03 says) embeds t with their own function."""

    def __init__(self, config: UNetConfig, parts: UNetParts):
        super().__init__()
        c = config
        unsupported = {"context_dim": c.context_dim is not None, "scale_shift_norm": c.scale_shift_norm,
                       "resblock_updown": c.resblock_updown, "use_checkpoint": c.use_checkpoint}
        if any(unsupported.values()):
            raise ValueError(f"LearnerUNet builds unconditional UNets with additive time injection; config has "
                             f"{[k for k, v in unsupported.items() if v]} set: use ll.unet.UNet for those")
        c.validate()
        self.config, self.parts = c, parts
        mc, emb_dim = c.model_channels, 4 * c.model_channels
        self.time_mlp = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(c.in_channels + c.concat_channels, mc, 3, padding=1)

        def block(c_in: int, c_out: int, attend: bool) -> LearnerBlock:
            return LearnerBlock(LearnerResBlock(c_in, c_out, emb_dim, c, parts),
                                LearnerAttentionBlock(c_out, c, parts) if attend else None)

        widths = [mc * m for m in c.channel_mult]
        skip_widths, ch = [mc], mc  # the channels of every skip, in the order the down path keeps them
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                blocks.append(block(ch, width, 2**level in c.attention_resolutions))
                ch = width
                skip_widths.append(ch)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(Resample(ch, up=False))
                skip_widths.append(ch)
        self.mid1, self.mid2 = block(ch, ch, True), block(ch, ch, False)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                blocks.append(block(ch + skip_widths.pop(), width, 2**level in c.attention_resolutions))
                ch = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(Resample(ch, up=True))
        self.norm_out = nn.GroupNorm(c.norm_groups, ch, eps=c.norm_eps)
        self.conv_out = nn.Conv2d(ch, c.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # ε̂ = 0 at initialisation, as the library's
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            raise ValueError("LearnerUNet is unconditional: call it with context=None")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        with patched(unet_module, "timestep_embedding", self.parts.timestep_embedding):
            return self.parts.unet_forward(self, x, t)


# ============================================================================================== the check
def _library_twin(config: UNetConfig, seed: int = 0) -> UNet:
    """A library UNet with every parameter nonzero (the zero inits would hide a missing path)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        u = UNet(config).eval()
        for p in u.parameters():
            if p.abs().sum() == 0:
                nn.init.normal_(p, std=0.05)
    return u


@torch.no_grad()
def compare_with_library(mine: nn.Module, library: UNet, batch: int = 4, seed: int = 0) -> float:
    """Load `library`'s state_dict into `mine` (strict: every name and shape must match) and return the largest
    |ε̂_mine − ε̂_library| on random latents at t = 10 .. 990. Raises RuntimeError naming the keys that differ."""
    mine.load_state_dict(library.state_dict(), strict=True)
    c = library.config
    side = 2 ** (len(c.channel_mult) - 1) * 4
    x = rand(batch, c.in_channels + c.concat_channels, side, side, seed=seed)
    t = torch.linspace(10, 990, batch).long()
    was = mine.training
    mine.eval()
    try:
        return float((mine(x, t) - library.eval()(x, t)).abs().max())
    finally:
        mine.train(was)


def build_unet(config: UNetConfig, parts: UNetParts, atol: float = 1e-5) -> Verdict:
    """Build the learner's UNet for `config` from `parts` and check it against `ll.unet.UNet(config)`: it must load
    that UNet's state_dict (the same module names and shapes) and predict the same ε̂ within `atol`. Prints and
    returns a Verdict whose `.fn` is the freshly initialised UNet to train: the learner's when every part is theirs
    and it matched, else a library `UNet(config)`, and the message says why."""
    missing = parts.unfinished()
    if missing:
        msg = (f"… your UNet: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} still the library's (the "
               "exercise has not passed), so this notebook trains the library's UNet (ll.unet.UNet) instead. Solve "
               "it, run its check again (`f = ex.check_f(f).fn`), then this cell.")
        print(msg)
        return Verdict("unet", False, False, msg, fn=UNet(config))
    try:
        mine = LearnerUNet(config, parts)
        diff = compare_with_library(mine, _library_twin(config))
    except Exception as e:  # noqa: BLE001 - the learner's code may fail in any way; say how
        msg = (f"✗ your UNet: it raised {type(e).__name__}: {str(e)[:300]}. This notebook trains the library's UNet "
               "instead.")
        print(msg)
        return Verdict("unet", False, True, msg, fn=UNet(config))
    n = sum(p.numel() for p in mine.parameters())
    if not diff <= atol:
        msg = (f"✗ your UNet: with the library UNet's weights it predicts a different ε̂ (max difference "
               f"{diff:.2e} > {atol:g}). This notebook trains the library's UNet instead.")
        print(msg)
        return Verdict("unet", False, True, msg, fn=UNet(config))
    msg = (f"✓ your UNet ({n / 1e6:.2f} M parameters): it loads ll.unet.UNet's state_dict (every name and shape "
           f"match) and predicts the same ε̂ from the same weights (max difference {diff:.1e} ≤ {atol:g}). It is the "
           "one this notebook trains, freshly initialised.")
    print(msg)
    return Verdict("unet", True, True, msg, fn=LearnerUNet(config, parts), demo={"max_diff": diff})

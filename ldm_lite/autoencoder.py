"""Perceptual compression (LDM paper §3.1): an autoencoder with a 2-D latent, regularized by KL or VQ.

    x (B, 3, H, W) in [-1, 1] --E--> z (B, c, H/f, W/f) --D--> x_hat (B, 3, H, W)

Notation: f = 2^k the downsampling factor, c = `latent_channels`, z_e the encoder output, z_q its quantized
version (VQ), mean/logvar the diagonal Gaussian posterior q(z|x) (KL). The diffusion model sees
`scale_factor * z`, with scale_factor = 1/std(z) estimated on data (paper §4.3.2 and App. D.1), so that its
latents have unit variance; `to_latent` / `from_latent` apply and undo it.

Which z the diffusion model sees (`latent`): KL: a sample of q(z|x). VQ: by default z_e, the latent *before*
quantization, and `decode` snaps it to the codebook: the reference's way (CompVis `VQModelInterface.encode` returns
the pre-quantization latent, its `decode` quantizes), so the decoder absorbs the quantization of generated latents.
`AutoencoderConfig(vq_latent="quantized")` hands the diffusion model z_q instead.

The layer layout follows CompVis/diffusers (conv_in, down levels of ResNet blocks + stride-2 conv, a middle
ResNet-attention-ResNet, GroupNorm + SiLU + conv_out, then 1x1 quant convs), so a KL model converts to and from
diffusers' `AutoencoderKL` by renaming keys (`to_diffusers` / `from_diffusers`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checkpoint import Pretrained, rename_key
from .errors import UsageError, UsageTypeError
from .validation import check_int

# ----------------------------------------------------------------------------------------------- config


@dataclass
class AutoencoderConfig:
    in_channels: int = 3  # image channels
    base_channels: int = 32  # channels of the first (full-resolution) level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per level; f = 2 ** (len(channel_mult) - 1)
    num_res_blocks: int = 1  # ResNet blocks per level in the encoder (the decoder has one more, as in LDM)
    latent_channels: int = 3  # c: channels of z
    attention: bool = False  # self-attention in the middle block (LDM has it; costly at high resolution)
    attention_resolutions: tuple[int, ...] = ()  # downsampling rates (1 = full size) whose ResNet blocks each end in
    #   self-attention too: the reference's attn_resolutions (kl-f16/f32, vq-f8/f16); () = the middle block only
    norm_groups: int = 16  # GroupNorm groups; must divide every level's channel count
    regularizer: str = "kl"  # "kl" (diagonal Gaussian posterior) or "vq" (vector-quantized codebook)
    codebook_size: int = 512  # VQ: number of codebook vectors K
    vq_beta: float = 0.25  # VQ: commitment weight beta in beta * ||sg[z_q] - z_e||^2
    vq_legacy: bool = False  # VQ: beta on the codebook term instead (taming's legacy=True, how LDM's VQ models trained)
    vq_latent: str = "pre_quant"  # VQ: what the diffusion model sees: "pre_quant" z_e (reference) or "quantized" z_q
    dead_code_threshold: float = 0.1  # VQ: restart codes whose EMA usage (vectors/batch) falls below; 0 = never

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.regularizer not in ("kl", "vq"):
            raise UsageError(f"regularizer must be 'kl' or 'vq', got {self.regularizer!r}")
        if self.vq_latent not in ("pre_quant", "quantized"):
            raise UsageError(f"vq_latent must be 'pre_quant' (the reference's) or 'quantized', got {self.vq_latent!r}")
        if not 1 <= len(self.channel_mult) <= 6:
            raise UsageError(f"channel_mult needs 1..6 levels (f = 1..32), got {self.channel_mult}")
        rates = [2**i for i in range(len(self.channel_mult))]
        if any(r not in rates for r in self.attention_resolutions):
            raise UsageError(f"attention_resolutions {self.attention_resolutions} must be downsampling rates of this "
                             f"autoencoder, some of {rates}")
        bad = [self.base_channels * m for m in self.channel_mult if (self.base_channels * m) % self.norm_groups]
        if bad:
            raise UsageError(f"channels {bad} are not divisible by norm_groups={self.norm_groups}; change norm_groups")

    @property
    def f(self) -> int:
        """Downsampling factor H / h."""
        return 2 ** (len(self.channel_mult) - 1)

    def compression(self) -> float:
        """Numbers per image / numbers per latent: C f^2 / c."""
        return self.in_channels * self.f**2 / self.latent_channels

    @staticmethod
    def _mult(f: int) -> tuple[int, ...]:
        check_int("f", f)
        k = int(math.log2(f)) if f >= 1 else -1
        if f < 1 or 2**k != f or k > 5:
            raise UsageError(f"f must be a power of two between 1 and 32, got {f}")
        return (1, 2, 2, 2, 4, 4)[: k + 1]

    @classmethod
    def kl(cls, f: int = 4, latent_channels: int = 3, **overrides) -> AutoencoderConfig:
        """KL-regularized autoencoder (paper's `kl-f{f}`), sized for 32x32-64x64 images on a CPU."""
        return cls(channel_mult=cls._mult(f), latent_channels=latent_channels, regularizer="kl", **overrides)

    @classmethod
    def vq(cls, f: int = 4, codebook_size: int = 512, latent_channels: int = 3, **overrides) -> AutoencoderConfig:
        """VQ-regularized autoencoder (paper's `vq-f{f}`)."""
        return cls(channel_mult=cls._mult(f), latent_channels=latent_channels, regularizer="vq",
                   codebook_size=codebook_size, **overrides)

    @classmethod
    def preset(cls, name: str, **overrides) -> AutoencoderConfig:
        """`"kl-f4"`, `"vq-f8"`, ... -> the matching `kl(f=...)` / `vq(f=...)` config."""
        m = re.fullmatch(r"(kl|vq)-f(\d+)", name)
        if m is None:
            raise UsageError(f"unknown preset {name!r}; use 'kl-f<f>' or 'vq-f<f>' with f in 1, 2, 4, 8, 16, 32")
        make = cls.kl if m.group(1) == "kl" else cls.vq
        return make(f=int(m.group(2)), **overrides)


# ----------------------------------------------------------------------------------------------- blocks


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1x1 skip when the channel count changes."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the h*w positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v, self.proj = (nn.Linear(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = rearrange(self.norm(x), "b c h w -> b (h w) c")
        a = F.scaled_dot_product_attention(self.q(t), self.k(t), self.v(t))  # softmax(q k^T / sqrt(c)) v
        return x + rearrange(self.proj(a), "b (h w) c -> b c h w", h=h, w=w)


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.res1 = ResBlock(channels, channels, groups)
        self.attn = SelfAttention(channels, groups) if attention else nn.Identity()
        self.res2 = ResBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with (0, 1, 0, 1) padding, as in CompVis/diffusers."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """ResNet blocks, each followed by self-attention when `attns` is given (one per block), then the resampling."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module, attns: list[nn.Module] = ()):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)  # empty: no attention at this level (and no state-dict keys)
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return self.resample(x)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, out_channels, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        levels, cin = [], chs[0]
        for i, ch in enumerate(chs):
            blocks = [ResBlock(cin if j == 0 else ch, ch, g) for j in range(cfg.num_res_blocks)]
            attns = [SelfAttention(ch, g) for _ in blocks] if 2**i in cfg.attention_resolutions else []
            levels.append(Level(blocks, Downsample(ch) if i < len(chs) - 1 else nn.Identity(), attns))
            cin = ch
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(chs[-1], g, cfg.attention)
        self.norm_out = _norm(chs[-1], g)
        self.conv_out = nn.Conv2d(chs[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """(B, c, h, w) -> (B, C, h*f, w*f); mirror of the encoder with num_res_blocks + 1 blocks per level."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in reversed(cfg.channel_mult)]  # lowest resolution first
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, chs[0], 3, padding=1)
        self.mid = MidBlock(chs[0], g, cfg.attention)
        levels, cin = [], chs[0]
        for i, ch in enumerate(chs):
            blocks = [ResBlock(cin if j == 0 else ch, ch, g) for j in range(cfg.num_res_blocks + 1)]
            rate = 2 ** (len(chs) - 1 - i)  # levels run from the lowest resolution up
            attns = [SelfAttention(ch, g) for _ in blocks] if rate in cfg.attention_resolutions else []
            levels.append(Level(blocks, Upsample(ch) if i < len(chs) - 1 else nn.Identity(), attns))
            cin = ch
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(chs[-1], g)
        self.conv_out = nn.Conv2d(chs[-1], cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.up:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------- regularizers


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), from moments (B, 2c, h, w) = [mean, logvar] along channels."""

    def __init__(self, moments: torch.Tensor, deterministic: bool = False):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, c, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I) (the reparameterization trick)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) summed over (c, h, w): 0.5 * sum(mean^2 + var - 1 - logvar). Shape (B,)."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


@dataclass
class QuantizedLatent:
    """VQ 'posterior': z_q with the same `sample()` / `mode()` interface as `DiagonalGaussian`, plus VQ stats."""

    z_q: torch.Tensor  # (B, c, h, w) quantized latent, straight-through gradient to z_e
    indices: torch.Tensor  # (B, h, w) codebook indices
    codebook_loss: torch.Tensor  # ||z_q - sg[z_e]||^2 (moves the codebook; x beta with legacy=True)
    commitment_loss: torch.Tensor  # beta * ||sg[z_q] - z_e||^2 (moves the encoder; x 1 with legacy=True)
    perplexity: torch.Tensor  # exp(entropy of code usage in the batch); K when all codes are used equally
    usage: torch.Tensor  # fraction of the codebook used in this batch
    z_e: torch.Tensor  # (B, c, h, w) the latent before quantization (what LDM diffuses)

    @property
    def loss(self) -> torch.Tensor:
        return self.codebook_loss + self.commitment_loss

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.z_q

    def mode(self) -> torch.Tensor:
        return self.z_q


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with the straight-through estimator (van den Oord et al. 2017, eq. 3).

    Loss = ||z_q - sg[z_e]||^2 + beta * ||sg[z_q] - z_e||^2: the codebook term moves the codes towards the
    encoder outputs, the commitment term (weighted by beta) keeps the encoder close to its codes (van den Oord et
    al.; taming's `VectorQuantizer2(legacy=False)`). `legacy=True` is taming's default, with which LDM's VQ
    autoencoders were trained: beta * ||z_q - sg[z_e]||^2 + ||sg[z_q] - z_e||^2, beta on the codebook term (taming
    calls it a bug kept for old checkpoints). Codes whose usage (an EMA of assignments per batch)
    drops below `dead_code_threshold` are restarted at random encoder outputs of the current batch.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, dead_code_threshold: float = 0.1,
                 decay: float = 0.99, legacy: bool = False):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.beta, self.dead_code_threshold, self.decay, self.legacy = beta, dead_code_threshold, decay, legacy
        self.register_buffer("ema_count", torch.ones(codebook_size))  # assignments per batch, EMA

    @property
    def codebook_size(self) -> int:
        return self.codebook.num_embeddings

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, h, w) of the nearest code for each vector of z (B, c, h, w)."""
        flat = rearrange(z, "b c h w -> (b h w) c")
        e = self.codebook.weight
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]  # ||z - e||^2
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for indices (B, h, w) -> (B, c, h, w)."""
        return rearrange(self.codebook(indices), "b h w c -> b c h w")

    @torch.no_grad()
    def _restart_dead_codes(self, z_e: torch.Tensor) -> None:
        dead = (self.ema_count < self.dead_code_threshold).nonzero().flatten()
        if len(dead) == 0:
            return
        flat = rearrange(z_e, "b c h w -> (b h w) c")
        pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
        self.codebook.weight[dead] = flat[pick].to(self.codebook.weight.dtype)
        self.ema_count[dead] = self.ema_count.mean()

    def forward(self, z_e: torch.Tensor) -> QuantizedLatent:
        learning = self.training and torch.is_grad_enabled()  # no codebook changes during inference
        if learning and self.dead_code_threshold > 0:
            self._restart_dead_codes(z_e.detach())
        idx = self.nearest(z_e.detach())
        z_q = self.lookup(idx)
        w_codebook, w_commit = (self.beta, 1.0) if self.legacy else (1.0, self.beta)
        codebook_loss = w_codebook * F.mse_loss(z_q, z_e.detach())
        commitment_loss = w_commit * F.mse_loss(z_e, z_q.detach())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).float()
        if learning:
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        z_q = z_e + (z_q - z_e).detach()  # straight-through: forward z_q, gradient to z_e
        return QuantizedLatent(z_q, idx, codebook_loss, commitment_loss, perplexity, (counts > 0).float().mean(), z_e)


# ----------------------------------------------------------------------------------------------- the autoencoder


@dataclass
class AutoencoderOutput:
    sample: torch.Tensor  # (B, C, H, W) reconstruction x_hat
    posterior: DiagonalGaussian | QuantizedLatent  # q(z|x) (KL) or the quantized latent with its losses (VQ)
    z: torch.Tensor  # (B, c, h, w) the latent that was decoded


def _check_images(x: torch.Tensor, channels: int, f: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise UsageTypeError(f"images must be a float tensor (B, {channels}, H, W) in [-1, 1], got {got}"
                             + ("; convert with x.float() / 127.5 - 1" if getattr(x, "dtype", None) == torch.uint8 else ""))
    if x.ndim != 4:
        raise UsageError(f"expected a batch of images (B, {channels}, H, W), got shape {tuple(x.shape)}; "
                         "add a batch dimension with x[None]")
    if x.shape[1] != channels:
        hint = " (grayscale? use x.expand(-1, 3, -1, -1))" if x.shape[1] == 1 and channels == 3 else ""
        raise UsageError(f"expected {channels} image channels, got {x.shape[1]} (shape {tuple(x.shape)}){hint}")
    for size in x.shape[2:]:
        if size % f:
            raise UsageError(f"image size {size} is not divisible by f={f}; use {math.ceil(size / f) * f} or pad")


class Autoencoder(Pretrained, nn.Module):
    """KL or VQ autoencoder: `encode(x)` -> posterior with `.sample()` / `.mode()`, `decode(z)` -> image."""

    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or AutoencoderConfig()
        c = cfg.latent_channels
        moments = 2 * c if cfg.regularizer == "kl" else c  # KL: mean and logvar; VQ: z_e
        self.encoder = Encoder(cfg, moments)
        self.quant_conv = nn.Conv2d(moments, moments, 1)
        self.quantizer = (VectorQuantizer(cfg.codebook_size, c, cfg.vq_beta, cfg.dead_code_threshold,
                                          legacy=cfg.vq_legacy) if cfg.regularizer == "vq" else None)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(cfg)
        self.register_buffer("scale_factor", torch.tensor(1.0))  # 1/std(z); see estimate_scale_factor

    @classmethod
    def from_pretrained(cls, directory, map_location: str | torch.device = "cpu") -> Autoencoder:
        """Load a `save_pretrained` folder; the model comes back in eval mode (call .train() to fine-tune)."""
        return super().from_pretrained(directory, map_location).eval()

    @property
    def f(self) -> int:
        return self.config.f

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (self.config.latent_channels, height // self.f, width // self.f)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian | QuantizedLatent:
        """x (B, C, H, W) in [-1, 1] -> q(z|x) over z (B, c, H/f, W/f) (KL) or the quantized latent (VQ)."""
        _check_images(x, self.config.in_channels, self.f)
        h = self.quant_conv(self.encoder(x))
        return DiagonalGaussian(h) if self.quantizer is None else self.quantizer(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, c, h, w) -> x_hat (B, C, h*f, w*f). VQ: z is snapped to the codebook first (as LDM's decoder
        absorbs the quantization), which leaves an already-quantized latent unchanged."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise UsageError(f"expected latents (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}; "
                             "did you pass an image instead of ae.encode(x).sample()?")
        if self.quantizer is not None:
            z = z + (self.quantizer.lookup(self.quantizer.nearest(z.detach())) - z).detach()
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> AutoencoderOutput:
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return AutoencoderOutput(self.decoder(self.post_quant_conv(z)), posterior, z)

    def latent(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """The (unscaled) latent the diffusion model sees, (B, c, h, w): a sample (or the mode) of q(z|x) for KL;
        for VQ z_e before quantization (`vq_latent="pre_quant"`, the reference's) or z_q (`"quantized"`)."""
        posterior = self.encode(x)
        if isinstance(posterior, QuantizedLatent) and self.config.vq_latent == "pre_quant":
            return posterior.z_e
        return posterior.sample(generator) if sample else posterior.mode()

    # the latent the diffusion model sees: scale_factor * z
    def to_latent(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latent(x, sample, generator) * self.scale_factor

    def from_latent(self, z_scaled: torch.Tensor) -> torch.Tensor:
        return self.decode(z_scaled / self.scale_factor)

    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last conv: where the adaptive GAN weight compares gradients."""
        return self.decoder.conv_out.weight


@dataclass
class IdentityAutoencoderConfig:
    in_channels: int = 3  # image channels (= latent channels)


class IdentityAutoencoder(Pretrained, nn.Module):
    """f = 1, z = x: the pixel-space baseline (LDM-1) behind the same encode/decode interface. No weights."""

    config_class = IdentityAutoencoderConfig
    f = 1

    def __init__(self, config: IdentityAutoencoderConfig | None = None):
        super().__init__()
        self.config = config or IdentityAutoencoderConfig()
        self.register_buffer("scale_factor", torch.tensor(1.0), persistent=False)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (self.config.in_channels, height, width)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        _check_images(x, self.config.in_channels, 1)
        return DiagonalGaussian(torch.cat([x, torch.zeros_like(x)], dim=1), deterministic=True)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> AutoencoderOutput:
        return AutoencoderOutput(x, self.encode(x), x)

    def latent(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.encode(x).mode()

    def to_latent(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latent(x)

    def from_latent(self, z_scaled: torch.Tensor) -> torch.Tensor:
        return z_scaled


# ----------------------------------------------------------------------------------------------- helpers


def _image_batches(data, batch_size: int, max_images: int):
    """Yield image batches (B, C, H, W) from a tensor, a dataset of dicts/tensors, or an iterable of batches."""
    if isinstance(data, torch.Tensor):
        for i in range(0, min(len(data), max_images), batch_size):
            yield data[i: min(i + batch_size, max_images)]
        return
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        n = min(len(data), max_images)
        for i in range(0, n, batch_size):
            items = [data[j] for j in range(i, min(i + batch_size, n))]
            yield torch.stack([it["image"] if isinstance(it, dict) else it for it in items])
        return
    seen = 0
    for batch in data:
        x = batch["image"] if isinstance(batch, dict) else batch
        yield x[: max_images - seen]
        seen += len(x)
        if seen >= max_images:
            return


@torch.no_grad()
def estimate_scale_factor(ae: Autoencoder, data, max_images: int = 512, batch_size: int = 64,
                          generator: torch.Generator | None = None, set_buffer: bool = True) -> float:
    """scale_factor = 1 / std(z) over up to `max_images` images (LDM App. D.1); stored in `ae.scale_factor`.

    `data`: an image tensor (N, C, H, W), a dataset of dicts with "image", or an iterable of such batches.
    """
    was_training = ae.training
    ae.eval()
    device = ae.scale_factor.device
    zs = [ae.latent(x.to(device), True, generator).flatten() for x in _image_batches(data, batch_size, max_images)]
    ae.train(was_training)
    scale = 1.0 / torch.cat(zs).float().std().item()
    if set_buffer:
        ae.scale_factor.fill_(scale)
    return scale


@dataclass
class Reconstruction:
    x: torch.Tensor  # (B, C, H, W) input in [-1, 1]
    x_hat: torch.Tensor  # (B, C, H, W) reconstruction, clamped to [-1, 1]
    z: torch.Tensor  # (B, c, h, w) latent (posterior mode, unscaled); one image per channel to plot
    indices: torch.Tensor | None = None  # (B, h, w) VQ codebook indices
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def reconstruct(ae: Autoencoder | IdentityAutoencoder, x: torch.Tensor) -> Reconstruction:
    """Deterministic round trip x -> mode(q(z|x)) -> D(z) for display and metrics."""
    was_training = ae.training
    ae.eval()
    x = x.to(ae.scale_factor.device)
    posterior = ae.encode(x)
    z = posterior.mode()
    x_hat = ae.decode(z).clamp(-1, 1)
    ae.train(was_training)
    return Reconstruction(x, x_hat, z, getattr(posterior, "indices", None))


@torch.no_grad()
def codebook_usage(ae: Autoencoder, data, max_images: int = 1024, batch_size: int = 64) -> torch.Tensor:
    """How often each VQ code is used over up to `max_images` images: counts (K,), e.g. for a usage bar plot.
    Perplexity of the whole set: exp(-sum p log p) with p = counts / counts.sum()."""
    if ae.quantizer is None:
        raise UsageError("codebook_usage needs a VQ autoencoder (AutoencoderConfig.vq(...))")
    was_training = ae.training
    ae.eval()
    device = ae.scale_factor.device
    counts = torch.zeros(ae.quantizer.codebook_size, dtype=torch.long)
    for x in _image_batches(data, batch_size, max_images):
        idx = ae.encode(x.to(device)).indices
        counts += torch.bincount(idx.flatten().cpu(), minlength=len(counts))
    ae.train(was_training)
    return counts


# ----------------------------------------------------------------------------------------------- diffusers interop

# ours -> diffusers AutoencoderKL, applied to the key with re.sub in order
_TO_DIFFUSERS = [
    (r"^(encoder|decoder)\.mid\.res1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.res2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
    (r"^(encoder|decoder)\.mid\.attn\.(q|k|v)\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn\.proj\.", r"\1.mid_block.attentions.0.to_out.0."),
    (r"^encoder\.down\.(\d+)\.blocks\.", r"encoder.down_blocks.\1.resnets."),
    (r"^encoder\.down\.(\d+)\.resample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.blocks\.", r"decoder.up_blocks.\1.resnets."),
    (r"^decoder\.up\.(\d+)\.resample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"\.skip\.", r".conv_shortcut."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
]


def diffusers_config(config: AutoencoderConfig, scale_factor: float = 1.0, sample_size: int = 32) -> dict:
    """Keyword arguments for `diffusers.AutoencoderKL` matching a KL `AutoencoderConfig`."""
    if config.regularizer != "kl":
        raise ValueError("only KL autoencoders convert to diffusers.AutoencoderKL (VQ has no AutoencoderKL twin)")
    if config.attention_resolutions:
        raise ValueError(f"attention_resolutions={config.attention_resolutions} (attention inside the levels) has no "
                         "conversion to diffusers.AutoencoderKL here; only middle-block attention converts")
    n = len(config.channel_mult)
    return dict(in_channels=config.in_channels, out_channels=config.in_channels,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(config.base_channels * m for m in config.channel_mult),
                layers_per_block=config.num_res_blocks, act_fn="silu", latent_channels=config.latent_channels,
                norm_num_groups=config.norm_groups, sample_size=sample_size, scaling_factor=scale_factor,
                mid_block_add_attention=config.attention)


def to_diffusers(ae: Autoencoder, sample_size: int = 32):
    """An equivalent `diffusers.AutoencoderKL` (same weights; scaling_factor = ae.scale_factor)."""
    from diffusers import AutoencoderKL  # local: diffusers is an optional (test) dependency

    vae = AutoencoderKL(**diffusers_config(ae.config, float(ae.scale_factor), sample_size))
    state = {rename_key(k, _TO_DIFFUSERS): v for k, v in ae.state_dict().items() if k != "scale_factor"}
    vae.load_state_dict(state, strict=True)
    return vae.to(ae.scale_factor.device)


def from_diffusers(vae) -> Autoencoder:
    """An `Autoencoder` with the weights of a `diffusers.AutoencoderKL` (e.g. a Stable Diffusion VAE)."""
    c = vae.config
    chs = list(c.block_out_channels)
    if any(t != "DownEncoderBlock2D" for t in c.down_block_types) or any(
            t != "UpDecoderBlock2D" for t in c.up_block_types) or c.act_fn != "silu":
        raise ValueError("only AutoencoderKL with DownEncoderBlock2D/UpDecoderBlock2D blocks and SiLU converts")
    if any(ch % chs[0] for ch in chs) or not (c.use_quant_conv and c.use_post_quant_conv):
        raise ValueError(f"block_out_channels {chs} must be multiples of the first, with quant convs, to convert")
    config = AutoencoderConfig(in_channels=c.in_channels, base_channels=chs[0],
                               channel_mult=tuple(ch // chs[0] for ch in chs), num_res_blocks=c.layers_per_block,
                               latent_channels=c.latent_channels, attention=c.mid_block_add_attention,
                               norm_groups=c.norm_num_groups, regularizer="kl")
    ae = Autoencoder(config)
    theirs = vae.state_dict()
    state = {k: theirs[rename_key(k, _TO_DIFFUSERS)] for k in ae.state_dict() if k != "scale_factor"}
    state["scale_factor"] = torch.tensor(float(c.scaling_factor))
    ae.load_state_dict(state, strict=True)
    return ae


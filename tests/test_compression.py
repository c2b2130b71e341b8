"""ldm_lite.compression: the f panel's recon_fn, effective SNR, model-zoo rows (notebook 01)."""

import torch

import ldm_lite as ll
from ldm_lite import compression as C
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, reconstruct

IMAGES = torch.stack([ll.datasets.shapes(resolution=16, n=8, seed=0)[i]["image"] for i in range(8)])  # (8, 3, 16, 16)


def tiny(kind="kl", f=4):
    return Autoencoder(AutoencoderConfig.preset(f"{kind}-f{f}", base_channels=16, codebook_size=16))


def test_recon_fn_returns_scaled_latent_and_metrics_or_none():
    torch.manual_seed(0)
    ae = tiny("kl", 4).eval()
    ae.scale_factor.fill_(2.0)
    fn = C.recon_fn({(4, "kl"): ae, (8, "kl"): None}, lpips_net=None)
    assert fn(2, "kl", IMAGES) is None and fn(8, "kl", IMAGES) is None and fn(4, "vq", IMAGES) is None
    r = fn(4, "kl", IMAGES)
    ref = reconstruct(ae, IMAGES)
    assert r["recon"].shape == IMAGES.shape and r["latent"].shape == (8, 3, 4, 4)
    assert torch.allclose(r["latent"], 2.0 * ref.z)
    assert abs(r["psnr"] - float(ll.metrics.psnr(IMAGES, ref.x_hat).mean())) < 1e-5
    assert r["lpips"] is None


def test_recon_fn_plugs_into_the_f_panel():
    torch.manual_seed(0)
    panel = ll.widgets.f_panel(C.recon_fn({(4, "kl"): tiny("kl", 4).eval()}, lpips_net=None), IMAGES,
                               fs=(2, 4), kinds=("kl", "vq"))
    readout = ll.widgets.find(panel, ll.widgets.READOUT_CLASS).value
    assert "latent (3, 4, 4)" in readout and "compression 16×" in readout


def test_effective_log_snr_is_the_snr_of_unscaled_data():
    sched = ll.schedule.Schedule.scaled_linear(T=1000)
    ab = sched.alpha_bar.double()
    std = 1.9
    expected = torch.log(std**2 * ab / (1 - ab))
    got = C.effective_log_snr(sched.log_snr.double(), std)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    # empirically: noising data of std 1.9 at t leaves the signal share of an effective SNR, not the schedule's
    t = 500
    z0 = std * torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zt = ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * torch.randn(z0.shape, dtype=torch.float64)
    signal = ab[t] * z0.var()
    noise = (zt - ab[t].sqrt() * z0).var()
    assert abs(float(torch.log(signal / noise)) - float(got[t])) < 0.02


def test_zoo_rows_follow_the_paper_table_columns():
    rows = ll.compression.reconstruction_table({"kl-f4": tiny("kl", 4).eval()}, IMAGES[:4], lpips_net=None)
    out = C.zoo_rows(rows, "shapes")
    assert list(out[0]) == ["f", "c", "latent", "compression", "psnr", "ssim", "model", "data"]
    assert out[0]["f"] == 4 and out[0]["latent"] == "3x4x4" and out[0]["compression"] == 16.0

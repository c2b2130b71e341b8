"""UNet and attention: shapes, initialisation, conditioning, checkpoints, errors; attention against a reference."""

from __future__ import annotations

import math

import pytest
import torch

from ldm_lite.attention import Attention, AttentionBlock, SpatialTransformer
from ldm_lite.checkpoint import CheckpointError
from ldm_lite.unet import ResBlock, UNet, UNetConfig, timestep_embedding


def tiny(**kw) -> UNetConfig:
    base = dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(2, 4), head_dim=16, norm_groups=8)
    return UNetConfig(**{**base, **kw})


def randomise_output(unet: UNet) -> UNet:
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    for m in unet.modules():  # every zero-initialised residual branch too, so t, x and the context matter
        if isinstance(m, SpatialTransformer):
            torch.nn.init.normal_(m.proj_out.weight, std=0.1)
        elif isinstance(m, ResBlock):
            torch.nn.init.normal_(m.conv2.weight, std=0.05)
        elif isinstance(m, AttentionBlock):
            torch.nn.init.normal_(m.attn.to_out.weight, std=0.1)
    return unet


def test_shapes_at_every_level():
    unet = UNet(tiny()).eval()
    shapes = {}
    for name in ("conv_in", "down.0.0", "downsample.0", "down.1.0", "downsample.1", "down.2.0", "mid2", "up.0.1",
                 "upsample.0", "up.1.1", "upsample.1", "up.2.1", "conv_out"):
        unet.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
    out = unet(torch.randn(2, 4, 16, 16), torch.tensor([0, 999]))
    assert out.shape == (2, 4, 16, 16) and out.is_contiguous()
    expected = {"conv_in": (2, 32, 16, 16), "down.0.0": (2, 32, 16, 16), "downsample.0": (2, 32, 8, 8),
                "down.1.0": (2, 64, 8, 8), "downsample.1": (2, 64, 4, 4), "down.2.0": (2, 64, 4, 4),
                "mid2": (2, 64, 4, 4), "up.0.1": (2, 64, 4, 4), "upsample.0": (2, 64, 8, 8), "up.1.1": (2, 64, 8, 8),
                "upsample.1": (2, 64, 16, 16), "up.2.1": (2, 32, 16, 16), "conv_out": (2, 4, 16, 16)}
    assert {k: tuple(v) for k, v in shapes.items()} == expected
    # attention exactly at the requested downsampling rates (2 and 4), plus the middle block
    attends = {name.split(".attn")[0] for name, _ in unet.named_modules() if name.endswith(".attn")}
    assert attends == {"down.1.0", "down.2.0", "mid1", "up.0.0", "up.0.1", "up.1.0", "up.1.1"}


def test_zero_initialised_output_and_presets():
    for cfg, shape in ((UNetConfig.small(), (2, 3, 8, 8)), (UNetConfig.pixel32(), (1, 3, 32, 32))):
        out = UNet(cfg)(torch.randn(*shape), torch.tensor([5] * shape[0]))
        assert out.shape == shape and torch.count_nonzero(out) == 0


def test_output_depends_on_t_and_x():
    unet = randomise_output(UNet(tiny())).eval()
    x = torch.randn(2, 4, 8, 8)
    a, b = unet(x, torch.tensor([10, 10])), unet(x, torch.tensor([900, 900]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, unet(x * 0.5, torch.tensor([10, 10])))


def test_cross_attention_changes_output_only_when_context_differs():
    unet = randomise_output(UNet(tiny(context_dim=24))).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([300, 300])
    ctx = torch.randn(2, 5, 24)
    a, a2 = unet(x, t, ctx), unet(x, t, ctx.clone())
    torch.testing.assert_close(a, a2)
    b = unet(x, t, ctx + torch.randn_like(ctx))
    assert (a - b).abs().max() > 1e-4
    # changing sample 1's context leaves sample 0 alone
    ctx2 = ctx.clone()
    ctx2[1] += 1.0
    c = unet(x, t, ctx2)
    torch.testing.assert_close(c[0], a[0])
    assert (c[1] - a[1]).abs().max() > 1e-4
    # no context: cross-attention is skipped (documented), still a valid forward
    assert unet(x, t, None).shape == x.shape


def test_attention_maps_are_probabilities_and_match_fused_kernel():
    unet = randomise_output(UNet(tiny(context_dim=24))).eval()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.randn(2, 5, 24)
    fused = unet(x, t, ctx)
    unet.store_attention(True)
    explicit = unet(x, t, ctx)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-4)
    maps = unet.attention_maps()
    assert len(maps) == 7
    m = maps["down.1.0.attn.blocks.0.attn2"]  # 4×4 level, 64 channels, head_dim 16 -> 4 heads
    assert m.shape == (2, 4, 16, 5)
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 4, 16))
    unet.store_attention(False)
    assert unet.attention_maps() == {}


def test_attention_against_reference_formula():
    torch.manual_seed(0)
    attn = Attention(32, head_dim=8, context_dim=12)
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 3, 12)
    q = attn.to_q(x).view(2, 10, 4, 8).transpose(1, 2)
    k, v = attn.to_kv(ctx).view(2, 3, 2, 4, 8).permute(2, 0, 3, 1, 4)
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1)  # LDM §3.3
    ref = attn.to_out((p @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(attn(x, ctx), ref, atol=1e-5, rtol=1e-5)


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 17, 999])
    ref = get_timestep_embedding(t, 64, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 64), ref)


def test_concat_conditioning_channels():
    unet = UNet(tiny(concat_channels=3))
    assert unet(torch.randn(1, 7, 8, 8), torch.tensor([3])).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"torch.cat\(\[z_t, c_concat\], 1\)"):
        unet(torch.randn(1, 4, 8, 8), torch.tensor([3]))


def test_save_load_round_trip(tmp_path):
    unet = randomise_output(UNet(tiny(context_dim=24, scale_shift_norm=True))).eval()
    unet.save_pretrained(tmp_path / "unet")
    loaded = UNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config == unet.config
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 5, 24)
    torch.testing.assert_close(loaded(x, t, ctx), unet(x, t, ctx), atol=0, rtol=0)
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        UNet.from_pretrained(tmp_path / "unet")


def test_errors_say_what_to_change():
    unet = UNet(tiny(context_dim=24))
    with pytest.raises(ValueError, match=r"not divisible by 2\^2=4.*pad or crop to 12×12"):
        unet(torch.randn(1, 4, 10, 10), torch.tensor([1]))
    with pytest.raises(ValueError, match="context_dim=24"):
        unet(torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\)"):
        unet(torch.randn(2, 4, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="no cross-attention"):
        UNet(tiny())(torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 5, 24))
    with pytest.raises(ValueError, match=r"downsampling rates.*\[1, 2, 4\]"):
        UNet(tiny(attention_resolutions=(8,)))
    with pytest.raises(ValueError, match="head_dim"):
        UNet(tiny(head_dim=24))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = randomise_output(UNet(tiny(context_dim=24)))
    b = UNet(tiny(context_dim=24, use_checkpoint=True))
    b.load_state_dict(a.state_dict())
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 5, 24)
    for m in (a, b):
        m(x, t, ctx).square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-4, msg=n)

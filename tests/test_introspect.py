"""introspect: trace_shapes lists every block's output shape in running order; activations returns the outputs of
the named blocks, equal to running those blocks by hand."""

import pytest
import torch

from ldm_lite.introspect import activations, format_shapes, trace_shapes
from ldm_lite.unet import UNet, UNetConfig


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(2,), head_dim=32)).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    return unet


def test_trace_shapes_follows_the_unet_down_and_up():
    unet, x, t = tiny_unet(), torch.randn(2, 3, 8, 8), torch.tensor([1, 500])
    rows = trace_shapes(unet, x, t, depth=1)
    names = [r[0] for r in rows]
    assert names[0] == "time_mlp" and names[1] == "conv_in" and names[-1] == "conv_out"
    shapes = dict((r[0], r[2]) for r in rows)
    assert shapes["conv_in"] == (2, 32, 8, 8) and shapes["mid2"] == (2, 64, 4, 4) and shapes["conv_out"] == (2, 3, 8, 8)
    assert "conv_in" in format_shapes(rows).splitlines()[2]


def test_activations_equal_the_blocks_run_by_hand():
    unet, x, t = tiny_unet(), torch.randn(2, 3, 8, 8), torch.tensor([1, 500])
    acts = activations(unet, x, t, names=["conv_out", "conv_in", "downsample.0"])
    assert list(acts) == ["conv_out", "conv_in", "downsample.0"]
    assert torch.equal(acts["conv_in"], unet.conv_in(x))
    assert torch.allclose(acts["conv_out"], unet(x, t)) and acts["downsample.0"].shape == (2, 32, 4, 4)
    with pytest.raises(ValueError, match="no submodules"):
        activations(unet, x, t, names=["nope"])

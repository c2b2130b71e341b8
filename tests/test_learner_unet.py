"""Notebook 03's learner-built UNet (`ldm_lite.exercises.learner_unet`): built from the reference solutions it
mirrors `ll.unet.UNet` module for module (it loads the library's state_dict, strict) and predicts the same ε̂ to
1e-5, trains inside `LatentDiffusion` like the library's; a wrong or unfinished part makes `build_unet` fall back to
the library UNet and say why."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ldm_lite as ll
from ldm_lite import exercises as ex
from ldm_lite.exercises.learner_unet import compare_with_library

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("solutions_exercises", ROOT / "solutions" / "exercises.py")
SOL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SOL)


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("LDM_LITE_SMOKE", raising=False)


def parts(**replace):
    names = ("timestep_embedding", "resblock_forward", "attention_block", "unet_forward")
    return ex.UNetParts(**{n: replace.get(n, getattr(SOL, n)) for n in names})


def test_the_learner_unet_of_the_solutions_matches_the_shipped_unet_to_1e5():
    shipped = ll.ldm.LatentDiffusion.from_pretrained(ll.paths.PRETRAINED_DIR / "ldm-kl-f4-shapes32").eval()
    mine = ex.LearnerUNet(shipped.unet.config, parts())
    assert set(mine.state_dict()) == set(shipped.unet.state_dict())
    assert compare_with_library(mine, shipped.unet) <= 1e-5


@pytest.mark.parametrize("config", [ll.unet.UNetConfig.small(3, model_channels=32),
                                    ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32,
                                                       channel_mult=(1, 2, 2), num_res_blocks=1,
                                                       attention_resolutions=(2,), head_dim=16)],
                         ids=["small", "three-levels-two-heads"])
def test_build_unet_passes_with_the_solutions_and_hands_back_the_learner_unet(config, capsys):
    v = ex.build_unet(config, parts())
    assert v.passed and isinstance(v.fn, ex.LearnerUNet) and v.demo["max_diff"] <= 1e-5
    assert capsys.readouterr().out.startswith("✓ your UNet")


def test_the_learner_embedding_is_the_one_used_inside_the_learner_unet():
    calls = []

    def counted(t, dim):
        calls.append(dim)
        return SOL.timestep_embedding(t, dim)

    mine = ex.LearnerUNet(ll.unet.UNetConfig.small(3, model_channels=32), parts(timestep_embedding=counted))
    mine(torch.randn(2, 3, 8, 8), torch.tensor([1, 500]))
    assert calls == [32]
    assert ll.unet.timestep_embedding is not counted  # restored after the forward


def _resblock_without_skip(block, x, emb):
    h = block.conv1(F.silu(block.norm1(x))) + block.emb(F.silu(emb))[:, :, None, None]
    return block.conv2(F.silu(block.norm2(h)))


def _embedding_sin_first(t, dim):
    return SOL.timestep_embedding(t, dim).roll(dim // 2, dims=-1)


@pytest.mark.parametrize("wrong", [{"resblock_forward": _resblock_without_skip},
                                   {"timestep_embedding": _embedding_sin_first},
                                   {"attention_block": lambda block, x: x}], ids=["no-skip", "sin-first", "no-attn"])
def test_a_wrong_part_fails_the_1e5_check_and_falls_back_to_the_library_unet(wrong, capsys):
    v = ex.build_unet(ll.unet.UNetConfig.small(3, model_channels=32), parts(**wrong))
    assert not v.passed and v.attempted and type(v.fn) is ll.unet.UNet
    assert "different ε̂" in capsys.readouterr().out


def test_an_unfinished_part_falls_back_with_a_note_naming_it(capsys):
    stub = ex.check_attention_block(lambda b, x: (_ for _ in ()).throw(NotImplementedError())).fn  # not attempted
    capsys.readouterr()
    v = ex.build_unet(ll.unet.UNetConfig.small(3, model_channels=32), parts(attention_block=stub))
    assert not v.passed and not v.attempted and type(v.fn) is ll.unet.UNet
    assert "attention_block is still the library's" in capsys.readouterr().out


def test_a_config_it_cannot_mirror_is_a_value_error():
    with pytest.raises(ValueError, match="context_dim"):
        ex.LearnerUNet(ll.unet.UNetConfig.small(3, context_dim=32), parts())


def test_the_learner_unet_trains_inside_latent_diffusion_like_the_library_unet():
    """Same initial weights, same data and draws: two steps of train_ldm give the same loss and weights."""
    ae = ll.autoencoder.Autoencoder.from_pretrained(ll.paths.PRETRAINED_DIR / "ae-kl-f4-shapes32")
    ds = ll.datasets.shapes(resolution=32, n=16, seed=0, max_shapes=1)
    config = ll.unet.UNetConfig.small(3, model_channels=32)
    torch.manual_seed(0)
    lib = ll.unet.UNet(config)
    mine = ex.LearnerUNet(config, parts())
    mine.load_state_dict(lib.state_dict())
    out = {}
    for name, unet in (("library", lib), ("yours", mine)):
        ldm = ll.ldm.LatentDiffusion(ae, unet, image_size=32)
        h = ll.train.train_ldm(ldm, ds, steps=2, batch_size=8, lr=1e-3, warmup=1, ema=None, device="cpu",
                               progress=False, log_every=1, latent_cache=True)
        out[name] = (h["loss"], {k: v.clone() for k, v in unet.state_dict().items()})
    assert out["yours"][0] == pytest.approx(out["library"][0], abs=1e-5)
    assert all(torch.allclose(out["yours"][1][k], v, atol=1e-5) for k, v in out["library"][1].items())

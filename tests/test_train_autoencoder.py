"""train_autoencoder: exact resume, no pickle in checkpoints, deterministic batches, NaN guard, learning."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig
from ldm_lite.checkpoint import CheckpointError, _flatten_optimizer, _unflatten_optimizer, load_training_state
from ldm_lite.fit import EMA, TrainingDiverged, batch_indices
from ldm_lite.losses import AutoencoderLossConfig
from ldm_lite.train import train_autoencoder


def _cfg(kind: str = "kl") -> AutoencoderConfig:
    make = AutoencoderConfig.kl if kind == "kl" else AutoencoderConfig.vq
    return make(f=4, base_channels=8, norm_groups=4, **({"codebook_size": 8} if kind == "vq" else {}))


# LPIPS-vgg works at 16x16; a 2-layer PatchGAN fits 16x16 images; the GAN switches on at step 3.
LOSS = AutoencoderLossConfig(perceptual_weight=1.0, lpips_net="vgg", disc_start=2, disc_channels=8, disc_layers=2)
DATA = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _train(cfg, out_dir, steps, seed_model=1, **kw):
    torch.manual_seed(seed_model)
    ae = Autoencoder(cfg)
    kw = {"batch_size": 4, "loss_config": LOSS, "ema": 0.9, "progress": False, "checkpoint_every": 2, **kw}
    history = train_autoencoder(ae, DATA, steps=steps, out_dir=out_dir, **kw)
    return ae, history


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_resume_is_bit_identical(tmp_path, kind: str) -> None:
    loss = LOSS if kind == "kl" else replace(LOSS, perceptual_weight=0.0)  # LPIPS is frozen: once is enough
    full, h_full = _train(_cfg(kind), tmp_path / "full", steps=5, loss_config=loss)
    _train(_cfg(kind), tmp_path / "part", steps=4, loss_config=loss)  # "interrupted" at step 4 (GAN already on)
    resumed, h_res = _train(_cfg(kind), tmp_path / "part", steps=5, seed_model=123, resume=True, loss_config=loss)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    dump = lambda h: json.dumps(h, sort_keys=True)  # NaN-aware comparison
    assert dump(h_full) == dump(h_res)  # the history continues seamlessly too
    assert h_full["step"] == list(range(5)) and "lam" in h_full and "d" in h_full


def test_checkpoint_layout_has_no_pickle(tmp_path) -> None:
    _train(_cfg(), tmp_path / "run", steps=3, loss_config=replace(LOSS, perceptual_weight=0.0))
    ckpt = tmp_path / "run" / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "state.json",
                                                      "training.safetensors"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 3 and set(state["optimizers"]) == {"ae", "d"}
    assert Autoencoder.from_pretrained(tmp_path / "run" / "model").config == _cfg()
    for p in ckpt.iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # no pickle protocol header anywhere
    # resuming into a model of another config is refused with a clear error
    with pytest.raises(CheckpointError, match="trained with"):
        _train(_cfg("vq"), tmp_path / "run", steps=4, resume=True)


def test_optimizer_state_round_trips_through_tensors_and_json() -> None:
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([w], lr=1e-3, betas=(0.5, 0.9))
    w.sum().backward()
    opt.step()
    tensors, meta = _flatten_optimizer("opt", opt)
    meta = json.loads(json.dumps(meta))
    opt2 = torch.optim.Adam([torch.nn.Parameter(w.detach().clone())], lr=5.0)
    opt2.load_state_dict(_unflatten_optimizer("opt", tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for k in a["state"][0]:
        assert torch.equal(a["state"][0][k], b["state"][0][k])


def test_batch_order_is_a_function_of_seed_and_step() -> None:
    n, bs = 10, 3  # 3 batches per epoch, the last item of each epoch dropped
    epoch0 = torch.cat([batch_indices(n, bs, seed=5, step=s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9
    assert torch.equal(epoch0, torch.randperm(n, generator=torch.Generator().manual_seed(5))[:9])
    assert torch.equal(batch_indices(n, bs, 5, 4), batch_indices(n, bs, 5, 4))
    assert not torch.equal(batch_indices(n, bs, 5, 3), batch_indices(n, bs, 5, 0))  # a new epoch, a new order
    with pytest.raises(ValueError, match="lower batch_size"):
        batch_indices(2, 3, 0, 0)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    data = DATA.clone()
    bad = {int(i) for s in range(4, 8) for i in batch_indices(len(data), 4, 0, s)} - {
        int(i) for s in range(4) for i in batch_indices(len(data), 4, 0, s)}
    data[sorted(bad)] = float("nan")  # the first batches are clean, a later one is poisoned
    torch.manual_seed(0)
    ae = Autoencoder(_cfg())
    with pytest.raises(TrainingDiverged, match="last good checkpoint") as err:
        train_autoencoder(ae, data, steps=8, batch_size=4, loss_config=AutoencoderLossConfig(perceptual_weight=0),
                          out_dir=tmp_path / "run", checkpoint_every=2, progress=False)
    ckpt = err.value.last_checkpoint
    assert ckpt == tmp_path / "run" / "checkpoint" and len(err.value.history["step"]) >= 2
    good = Autoencoder.from_pretrained(ckpt)
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_training_lowers_the_reconstruction_error() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(_cfg())
    smooth = torch.nn.functional.interpolate(DATA[:8, :, :4, :4], size=16, mode="bilinear")  # learnable images
    history = train_autoencoder(ae, smooth, steps=25, batch_size=8, lr=3e-3, progress=False,
                                loss_config=AutoencoderLossConfig(perceptual_weight=0, disc_start=None))
    assert sum(history["l1"][-5:]) / 5 < 0.8 * sum(history["l1"][:5]) / 5
    assert not ae.training  # returned in eval mode


def test_ema_tracks_the_weights() -> None:
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up: d = min(0.5, 2/11)
    torch.testing.assert_close(ema.shadow["weight"], start + 9 / 11)
    for _ in range(10):
        ema.update(model)  # d = min(0.5, (1+n)/(10+n)) = 0.5 from n = 8 on
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.shadow["weight"].clone()
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.5 * before + 0.5 * model.weight)
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    torch.testing.assert_close(target.weight, ema.shadow["weight"])


def test_load_training_state_restores_rng(tmp_path) -> None:
    _train(_cfg(), tmp_path / "run", steps=2, loss_config=replace(LOSS, perceptual_weight=0.0))
    torch.manual_seed(0)
    ae = Autoencoder(_cfg())
    opt = torch.optim.Adam(ae.parameters())
    meta = load_training_state(tmp_path / "run" / "checkpoint", ae, optimizers={})
    a = torch.rand(3)
    load_training_state(tmp_path / "run" / "checkpoint", ae, optimizers={})
    assert torch.equal(a, torch.rand(3)) and meta["step"] == 2 and opt is not None

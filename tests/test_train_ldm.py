"""train_ldm: exact resume, DistributedDataParallel equals one process, the NaN guard keeps the last checkpoint."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ldm_lite as ll
from ldm_lite.fit import TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ddp_train import tiny_ldm  # noqa: E402

DS = ll.datasets.shapes(16, n=32, seed=0)
KW = dict(batch_size=8, warmup=2, progress=False, device="cpu", log_every=1)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    a = tiny_ldm()
    hist = ll.train.train_ldm(a, DS, steps=6, **KW)
    b = tiny_ldm()
    ll.train.train_ldm(b, DS, steps=3, out_dir=tmp_path, **KW)  # "stopped" after 3 steps
    c = tiny_ldm()
    hist_c = ll.train.train_ldm(c, DS, steps=6, out_dir=tmp_path, resume=True, **KW)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), k
    assert hist["loss"] == hist_c["loss"]
    # the EMA weights end up in the model, and they differ from the raw weights
    d = tiny_ldm()
    ll.train.train_ldm(d, DS, steps=6, **{**KW, "ema": None})
    assert not torch.equal(next(iter(a.unet.parameters())), next(iter(d.unet.parameters())))


@pytest.mark.slow
def test_training_lowers_the_loss():
    ldm = tiny_ldm()
    hist = ll.train.train_ldm(ldm, ll.datasets.shapes(16, n=64, seed=0), steps=40, batch_size=16, warmup=5, lr=1e-3,
                              ema=None, progress=False, device="cpu", log_every=1)
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert last < 0.7 * first


class NaNAfter(torch.utils.data.Dataset):
    """Clean items for the first `k` steps' worth of indices, then NaN images (a corrupt data shard)."""

    def __init__(self, base, bad_from_step):
        self.base, self.bad = base, bad_from_step
        self.step = 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        if self.step >= self.bad:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_nan_guard_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    data = NaNAfter(DS, bad_from_step=4)
    with pytest.raises(TrainingDiverged, match=r"at step 4; stopped.*checkpoint \(step 4\) is kept"):
        ll.train.train_ldm(tiny_ldm(), data, steps=8, out_dir=tmp_path, checkpoint_every=2,
                           step_callback=lambda step, loss: setattr(data, "step", step + 1), **KW)
    state = ll.checkpoint.read_json(tmp_path / "checkpoint" / "state.json")
    assert state["step"] == 4
    ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "checkpoint")  # the kept checkpoint loads


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    script = Path(__file__).parent / "helpers" / "ddp_train.py"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "two")],
                   check=True, env=env, timeout=240, capture_output=True)
    a = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_time_budget_stops_early_and_resume_finishes_the_same_run(tmp_path):
    a = tiny_ldm()
    hist = ll.train.train_ldm(a, DS, steps=5, out_dir=tmp_path, max_seconds=0.0, **KW)  # stops after one step
    assert hist["step"] == [0]
    assert ll.checkpoint.read_json(tmp_path / "checkpoint" / "state.json")["step"] == 1
    ll.train.train_ldm(a, DS, steps=5, out_dir=tmp_path, resume=True, **KW)
    b = tiny_ldm()
    ll.train.train_ldm(b, DS, steps=5, **KW)
    assert all(torch.equal(x, y) for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()))


def test_a_cpu_budget_counts_this_runs_cpu_seconds_over_resumed_segments(tmp_path, monkeypatch):
    """budget_clock="cpu": max_seconds counts the process's CPU clock (here a stand-in that advances 10 s per step
    while the wall clock stands still), the seconds spent are kept in the checkpoint and a resumed segment counts
    on from them; a spent budget trains nothing; the weights are still those of an uninterrupted run."""
    cpu = {"t": 0.0}
    monkeypatch.setitem(ll.fit.CLOCKS, "cpu", lambda: cpu["t"])
    monkeypatch.setitem(ll.fit.CLOCKS, "wall", lambda: 0.0)
    tick = dict(step_callback=lambda step, loss: cpu.__setitem__("t", cpu["t"] + 10.0))
    state = lambda: ll.checkpoint.read_json(tmp_path / "checkpoint" / "state.json")  # noqa: E731

    wall = ll.train.train_ldm(tiny_ldm(), DS, steps=4, max_seconds=25, **tick, **KW)  # the wall clock: no stop
    assert wall["step"] == [0, 1, 2, 3]
    a = tiny_ldm()
    hist = ll.train.train_ldm(a, DS, steps=8, out_dir=tmp_path, max_seconds=25, budget_clock="cpu", **tick, **KW)
    assert hist["step"] == [0, 1, 2] and state()["step"] == 3 and state()["extra"]["cpu_seconds"] == 30.0
    cpu["t"] = 0.0  # a new process: its CPU clock starts afresh
    hist = ll.train.train_ldm(a, DS, steps=8, out_dir=tmp_path, resume=True, max_seconds=55, budget_clock="cpu",
                              **tick, **KW)
    assert hist["step"][-3:] == [3, 4, 5] and state()["step"] == 6 and state()["extra"]["cpu_seconds"] == 60.0
    cpu["t"] = 0.0
    ll.train.train_ldm(a, DS, steps=8, out_dir=tmp_path, resume=True, max_seconds=55, budget_clock="cpu", **tick, **KW)
    assert state()["step"] == 6 and cpu["t"] == 0.0  # spent: not one step more
    ll.train.train_ldm(a, DS, steps=8, out_dir=tmp_path, resume=True, **KW)  # no budget: to the end
    b = tiny_ldm()
    ll.train.train_ldm(b, DS, steps=8, **KW)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="budget_clock='gpu' is unknown"):
        ll.train.train_ldm(tiny_ldm(), DS, steps=1, max_seconds=1, budget_clock="gpu", **KW)


def test_min_steps_is_a_floor_under_the_time_budget(tmp_path, caplog):
    """A spent budget stops a run only once min_steps are done (the main job on a busy machine), with a warning."""
    hist = ll.train.train_ldm(tiny_ldm(), DS, steps=6, out_dir=tmp_path, max_seconds=0.0, min_steps=3, **KW)
    assert hist["step"] == [0, 1, 2]
    assert "before the minimum of 3" in caplog.text
    assert ll.checkpoint.read_json(tmp_path / "checkpoint" / "state.json")["step"] == 3


@pytest.mark.slow
def test_compiled_step_trains_the_same_model_and_falls_back_when_compilation_fails(tmp_path, caplog):
    """compile= wires torch.compile around the training step (the 'eager' backend checks the plumbing on a CPU);
    a compiler that fails leaves an eager run with a warning, with the same weights."""
    eager, comp, broken = tiny_ldm(), tiny_ldm(), tiny_ldm()
    ll.train.train_ldm(eager, DS, steps=3, **KW)
    ll.train.train_ldm(comp, DS, steps=3, compile={"backend": "eager"}, **KW)
    ll.train.train_ldm(broken, DS, steps=3, compile={"backend": "no-such-backend"}, **KW)
    assert "training eagerly" in caplog.text
    for m in (comp, broken):
        assert m.state_dict().keys() == eager.state_dict().keys()
        for (k, a), b in zip(eager.state_dict().items(), m.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), k


def test_deferred_nan_checks_on_an_accelerator_keep_the_last_good_checkpoint(tmp_path):
    """With deferred checks (what a GPU run does: sync every few steps) a NaN at step 4 still stops the run, names
    step 4, and never writes a checkpoint from the broken weights (the step-4 checkpoint flushes the checks first)."""
    from ldm_lite.fit import StepContext, fit

    model = tiny_ldm()
    opt = torch.optim.SGD(model.unet.parameters(), lr=0.0)

    def step_fn(ctx: StepContext) -> dict:
        value = torch.tensor(float("nan") if ctx.step == 4 else 1.0)
        ctx.pending.append((ctx.step, "loss", value))  # as check() does on an accelerator
        return {"loss": value}

    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4.*checkpoint \(step 4\)"):
        fit(model, step_fn, steps=10, optimizers={"unet": opt}, dataset_size=8, batch_size=4, out_dir=tmp_path,
            checkpoint_every=4, progress=False, device=torch.device("cpu"))
    assert ll.checkpoint.read_json(tmp_path / "checkpoint" / "state.json")["step"] == 4


def _kl_ldm():
    torch.manual_seed(0)
    ae = ll.autoencoder.Autoencoder(ll.autoencoder.AutoencoderConfig.kl(f=4, base_channels=8, norm_groups=4))
    ae.scale_factor.fill_(0.8)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_dim=32)
    return ll.ldm.LatentDiffusion(ae, ll.unet.UNet(cfg), image_size=16)


def test_latent_cache_gives_the_loss_of_the_images_and_resumes_exactly(tmp_path):
    from ldm_lite.latents import LatentCache, fingerprint

    ldm = _kl_ldm()
    cache = LatentCache(DS, ldm.autoencoder, progress=False)
    assert set(cache.fields) >= {"latent_mean", "latent_std", "caption", "label"} and len(cache) == len(DS)
    idx = torch.tensor([3, 0, 7, 5])
    images = torch.utils.data.default_collate([DS[int(i)] for i in idx])
    t, noise = torch.tensor([10, 500, 999, 0]), torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    a = ldm.loss(images, torch.Generator().manual_seed(2), t, noise)  # a fresh posterior sample from the same ε
    b = ldm.loss(cache.batch(idx), torch.Generator().manual_seed(2), t, noise)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # cached training resumes bit for bit, like training from the images
    full = _kl_ldm()
    ll.train.train_ldm(full, DS, steps=4, latent_cache=True, **KW)
    part = _kl_ldm()
    ll.train.train_ldm(part, DS, steps=2, latent_cache=True, out_dir=tmp_path, **KW)
    resumed = _kl_ldm()
    ll.train.train_ldm(resumed, DS, steps=4, latent_cache=True, out_dir=tmp_path, resume=True, **KW)
    for (k, x), y in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), k
    # the fingerprint follows the autoencoder's weights and the dataset
    before = fingerprint(DS, ldm.autoencoder)
    with torch.no_grad():
        next(ldm.autoencoder.parameters()).add_(1e-3)
    assert fingerprint(DS, ldm.autoencoder) != before != fingerprint(ll.datasets.shapes(16, n=31, seed=0), _kl_ldm().autoencoder)


def test_a_checkpoint_written_before_new_config_fields_still_resumes(tmp_path):
    """A config.json from an older ldm_lite (no schedule_params, an autoencoder config without later fields) keeps
    its meaning: it loads, and training resumes from it with the schedule it was trained with."""
    import json

    ll.train.train_ldm(_kl_ldm(), DS, steps=2, out_dir=tmp_path, **KW)
    cfg_file = tmp_path / "checkpoint" / "config.json"
    meta = json.loads(cfg_file.read_text())
    del meta["config"]["schedule_params"]
    dropped = [k for k in ("vq_latent", "vq_legacy") if k in meta["config"]["autoencoder"]]
    for k in dropped:
        del meta["config"]["autoencoder"][k]
    cfg_file.write_text(json.dumps(meta))
    old = ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "checkpoint")
    assert old.config.schedule_params == {"beta_start": 0.00085, "beta_end": 0.012}
    resumed = _kl_ldm()
    hist = ll.train.train_ldm(resumed, DS, steps=3, out_dir=tmp_path, resume=True, **KW)
    assert hist["step"][-1] == 2 and resumed.config == old.config


def test_an_accelerator_run_reads_device_values_only_every_sync_every_steps(monkeypatch):
    """No per-step device->host copy on a GPU: with sync_every=5 the loss, the NaN guard and the logged values are
    read (Tensor.item / float / tolist) only at steps 4, 9, 14, 19. Checked on the CPU by giving `fit` a CUDA
    device type (it only decides how often to sync; the tensors stay on the CPU)."""
    from ldm_lite.fit import StepContext, fit

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    now, reads = [0], set()
    for name in ("item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original: (reads.add(now[0]), _f(self, *a))[1])

    def step_fn(ctx: StepContext) -> dict:
        now[0] = ctx.step
        loss = model(x).pow(2).mean()
        ctx.check(loss)
        return {"loss": loss.detach(), "grad_norm": ctx.optimize("unet", loss)}

    hist = fit(model, step_fn, steps=20, optimizers={"unet": opt}, dataset_size=8, batch_size=4, grad_clip=1.0,
               device=torch.device("cuda"), sync_every=5, log_every=1, progress=False, max_seconds=3600.0)
    assert reads == {4, 9, 14, 19}
    assert hist["step"] == list(range(20))  # every step is still logged, read in groups

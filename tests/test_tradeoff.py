"""The compression trade-off sweep (ldm_lite.tradeoff): matched UNets, the budget plan, resumable results."""

import csv
import shutil

import numpy as np
import pytest
import torch

import ldm_lite.train
from ldm_lite import plotting, tradeoff
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig
from ldm_lite.checkpoint import read_json
from ldm_lite.unet import UNet


@pytest.mark.parametrize("latent_size,channels,levels", [(32, 3, 4), (16, 3, 3), (8, 3, 2), (4, 4, 1), (2, 16, 1)])
def test_matched_unet_hits_target_and_depth_follows_latent(latent_size, channels, levels):
    target = tradeoff.TradeoffConfig().target_params  # the sweep's default
    cfg = tradeoff.match_width(lambda mc: tradeoff.unet_for_latent(channels, latent_size, mc), target)
    n = tradeoff.count_parameters(UNet(cfg))
    assert abs(n - target) / target <= 0.10
    assert len(cfg.channel_mult) == levels
    assert cfg.in_channels == cfg.out_channels == channels
    lowest = latent_size // 2 ** (levels - 1)
    assert lowest == min(latent_size, 4)
    # attention only where the feature map is 8x8 or smaller
    assert all(latent_size // r <= 8 for r in cfg.attention_resolutions)
    # the next width up would be farther from the target (closest match, not just any within tolerance)
    wider = tradeoff.count_parameters(UNet(tradeoff.unet_for_latent(channels, latent_size, cfg.model_channels + 4)))
    assert abs(wider - target) >= abs(n - target)


def test_match_width_says_what_to_change_when_the_target_is_unreachable():
    with pytest.raises(ValueError, match="target_params"):
        tradeoff.match_width(lambda mc: tradeoff.unet_for_latent(3, 32, mc), 1_000)


def test_plan_gives_equal_time_or_equal_steps():
    cfg = tradeoff.TradeoffConfig(budget="time", budget_seconds=100.0, eval_points=4)
    assert tradeoff.plan_steps(cfg, 0.5) == [50, 100, 150, 200]  # 100 s / 0.5 s per step
    assert tradeoff.plan_steps(cfg, 2.0) == [12, 25, 38, 50]
    cfg = tradeoff.TradeoffConfig(budget="steps", steps=90, eval_points=3)
    assert tradeoff.plan_steps(cfg, 0.5) == tradeoff.plan_steps(cfg, 7.0) == [30, 60, 90]
    with pytest.raises(ValueError, match="powers of two"):
        tradeoff.TradeoffConfig(fs=(3,))


def test_the_equal_steps_protocol_matches_every_f_at_64_on_the_fair_first_stages():
    cpu, gpu = tradeoff.TradeoffConfig.equal_steps(), tradeoff.TradeoffConfig.for_device(torch.device("cuda"))
    for cfg in (cpu, gpu):
        assert cfg.fs == (1, 2, 4, 8, 16, 32) and cfg.resolution == 64 and cfg.budget == "steps"
        assert cfg.autoencoders == {2: "ae-kl-f2-c3-shapes64", 4: "ae-kl-f4-c3-shapes64", 8: "ae-kl-f8-c4-shapes64",
                                    16: "ae-kl-f16-c16-shapes64", 32: "ae-kl-f32-c64-shapes64"}
        assert cfg.n_eval >= 256 and cfg.n_sampling >= 256 and cfg.keep_all
    assert (cpu.steps, cpu.batch_size) == (2_000, 32) and gpu.steps > cpu.steps
    assert tradeoff.TradeoffConfig.for_device(torch.device("cpu")) == cpu  # the headline on every device
    assert tradeoff.TradeoffConfig.equal_compute() == tradeoff.TradeoffConfig()  # the committed 32x32 view
    # every f's UNet within 10% of the target (the channels of the shipped 64x64 first stages)
    for f, c in tradeoff.PAPER_LATENT_CHANNELS.items():
        unet = tradeoff.matched_unet(c, 64 // f, cpu.target_params)
        assert abs(tradeoff.count_parameters(UNet(unet)) - cpu.target_params) <= 0.10 * cpu.target_params


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("tradeoff")
    torch.manual_seed(0)
    tiny_f4 = Autoencoder(AutoencoderConfig.kl(f=4, base_channels=8, norm_groups=4))
    cfg = tradeoff.TradeoffConfig.smoke(fs=(1, 4), steps=4, eval_points=2, sampling_steps=(1, 2), n_eval=6,
                                        n_sampling=6, sample_batch=6, n_real=12, keep_all=True)
    kwargs = dict(device="cpu", autoencoders={4: tiny_f4}, progress=False)
    rows = tradeoff.run_tradeoff(cfg, out, **kwargs)
    return cfg, out, rows, kwargs


@pytest.mark.slow
def test_sweep_writes_every_result_with_the_csv_columns(sweep):
    cfg, out, rows, _ = sweep
    assert len(rows) == 2 * (2 + 2)  # per f: 2 training checkpoints + 2 DDIM step counts
    with open(out / "results.csv") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == tradeoff.CSV_COLUMNS
        table = list(reader)
    assert {(r["f"], r["kind"], r["step"], r["sampler_steps"]) for r in table} == {
        (f, "training", s, str(cfg.eval_sampler_steps)) for f in ("1", "4") for s in ("2", "4")} | {
        (f, "sampling", "4", s) for f in ("1", "4") for s in ("1", "2")}
    params = {int(r["f"]): int(r["unet_params"]) for r in table}
    assert all(abs(n - cfg.target_params) / cfg.target_params <= 0.10 for n in params.values())
    latents = {int(r["f"]): r["latent"] for r in table}
    assert latents == {1: "3x32x32", 4: "3x8x8"}
    assert read_json(out / "f4" / "ldm" / "checkpoint" / "state.json")["step"] == 4
    kept = tradeoff.load_samples(out / "f1" / "samples_step000004.safetensors")
    assert kept.shape == (cfg.n_keep, 3, 32, 32)
    every = tradeoff.load_samples(out / "f1" / "all_step000004.safetensors")  # keep_all: every sample, as uint8
    assert every.shape == (cfg.n_eval, 3, 32, 32)
    assert (every[: cfg.n_keep] - kept.clamp(-1, 1)).abs().max() <= 0.5 / 127.5 + 1e-6
    t6 = tradeoff.table6(rows)
    assert [r["f"] for r in t6] == [1, 4] and {"samples_per_s_ddim1", "fid", "recognisable"} <= set(t6[0])


@pytest.mark.slow
def test_a_finished_sweep_is_skipped_and_a_lost_result_is_recomputed_identically(sweep, monkeypatch):
    cfg, out, rows, kwargs = sweep
    calls = []
    real_train = ldm_lite.train.train_ldm
    monkeypatch.setattr(tradeoff, "train_ldm", lambda *a, **k: calls.append(k["steps"]) or real_train(*a, **k))
    again = tradeoff.run_tradeoff(cfg, out, **kwargs)
    assert calls == [] and again == rows  # nothing retrained, nothing resampled

    lost = out / "f4" / "eval_step000004.json"
    before = read_json(lost)
    lost.unlink()
    # a stopped clock: what this process times (loading the checkpoint) is 0 s, so the row holds exactly the
    # accounting under test, not the machine's load
    monkeypatch.setattr(tradeoff, "_clock", lambda device: (lambda: 0.0))
    tradeoff.run_tradeoff(cfg, out, **kwargs)
    after = read_json(lost)
    assert calls == [4]  # resumed at the checkpoint of step 4: no step trained twice
    assert after["fid"] == pytest.approx(before["fid"]) and after["recognisable"] == before["recognisable"]
    # the 2 steps after the previous result were trained by the first run: counted at the calibrated cost
    info = read_json(out / "f4" / "model.json")
    assert after["untimed_steps"] == 2
    assert after["train_seconds"] == pytest.approx(read_json(out / "f4" / "eval_step000002.json")["train_seconds"]
                                                   + 2 * info["seconds_per_step"], abs=0.5)

    with pytest.raises(ValueError, match="another config"):
        tradeoff.run_tradeoff(tradeoff.TradeoffConfig.smoke(fs=(1, 4), steps=8), out, **kwargs)


@pytest.mark.slow
def test_tradeoff_figures_have_one_line_per_f(sweep):
    _, out, rows, _ = sweep
    fig6 = plotting.tradeoff_training(rows)
    assert fig6.axes[0].get_legend_handles_labels()[1] == ["LDM-1", "LDM-4"]
    assert len(fig6.axes[2].lines) == 2
    fig7 = plotting.tradeoff_sampling(rows)
    assert [len(line.get_xdata()) for line in fig7.axes[0].lines] == [2, 2]  # one marker per DDIM step count
    assert len(fig7.axes) == 3 and all(np.isfinite(line.get_ydata()).all() for line in fig7.axes[1].lines)  # KID
    samples = {f: tradeoff.load_samples(out / f"f{f}" / "samples_step000004.safetensors") for f in (1, 4)}
    assert len(plotting.samples_by_f(samples, ncols=4).axes) == 8


@pytest.mark.slow
def test_report_writes_the_committed_files(sweep, tmp_path):
    _, out, rows, _ = sweep
    tradeoff.write_report(out, tmp_path / "report", command="python benchmarks/run_tradeoff.py --smoke")
    rep = tmp_path / "report"
    for name in ("results.csv", "results.json", "table6.md", "fig6_training.png", "fig7_sampling.png", "samples.png"):
        assert (rep / name).stat().st_size > 0, name
    run = read_json(rep / "run.json")
    assert run["command"].endswith("--smoke") and run["machine"] and run["config"]["budget"] == "steps"
    assert tradeoff.collect(rep) == tradeoff.collect(out)  # the copied per-f results are the sweep's
    assert "| f | latent |" in (rep / "table6.md").read_text()


@pytest.mark.slow
def test_report_of_a_sweep_still_training_has_fig6_and_no_fig7(sweep, tmp_path):
    _, out, _, _ = sweep
    partial = tmp_path / "partial"
    shutil.copytree(out, partial, ignore=shutil.ignore_patterns("sampling_ddim*.json"))
    rows = tradeoff.write_report(partial, tmp_path / "report", command="python benchmarks/run_tradeoff.py --smoke")
    assert rows and all(r["kind"] == "training" for r in rows)
    assert (tmp_path / "report" / "fig6_training.png").stat().st_size > 0
    assert not (tmp_path / "report" / "fig7_sampling.png").exists()


@pytest.mark.slow
def test_a_missing_first_stage_is_trained_once_through_the_recipe(tmp_path, monkeypatch):
    import ldm_lite.recipes

    monkeypatch.setattr(tradeoff, "OUTPUTS_DIR", tmp_path)
    monkeypatch.setattr(ldm_lite.paths, "OUTPUTS_DIR", tmp_path)
    cfg = tradeoff.TradeoffConfig(autoencoders={2: "ae-test-f2-c3"}, ae_steps=2, n_train=64)
    with pytest.raises(FileNotFoundError, match="train one"):
        tradeoff.load_first_stage(2, tradeoff.TradeoffConfig(autoencoders={2: "ae-test-f2-c3"}))
    ae = tradeoff.load_first_stage(2, cfg)
    assert ae.f == 2 and ae.latent_channels == 3 and not ae.training
    assert read_json(tmp_path / "ae" / "ae-test-f2-c3" / "checkpoint" / "state.json")["step"] == 2
    monkeypatch.setattr(ldm_lite.recipes, "train", lambda *a, **k: pytest.fail("trained twice"))
    again = tradeoff.load_first_stage(2, cfg)
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), again.state_dict().values()))

"""ldm_lite.tradeoff_views: notebook 07's computed statements must follow the data they are given."""

import json
import shutil

import pytest

from ldm_lite import paths
from ldm_lite import tradeoff_views as views

RESULTS = paths.REPO_ROOT / "benchmarks" / "results"
REJUDGE = json.loads((RESULTS / "rejudge" / "results.json").read_text())


def row(f, step, fid, kind="training", sampler_steps=20, sps=10.0, rec=0.5, train_sps=100.0):
    return {"kind": kind, "f": f, "step": step, "fid": fid, "fid_lo": fid - 1, "fid_hi": fid + 1, "n": 256,
            "recognisable": rec, "sampler_steps": sampler_steps, "samples_per_second": sps, "clock": "cpu",
            "train_samples_per_second": train_sps, "latent": f"3x{64 // f}x{64 // f}", "unet_params": 1_800_000,
            "flops_per_train_step": 1e9, "total_steps": 2000}


def test_ends_takes_each_fs_last_training_row():
    rows = [row(4, 2000, 30.0), row(4, 500, 90.0), row(1, 1000, 80.0), row(4, 2000, 5.0, kind="sampling")]
    end = views.ends(rows)
    assert list(end) == [1, 4] and end[4]["step"] == 2000 and end[4]["fid"] == 30.0


def test_summary_names_the_best_and_says_when_the_papers_direction_fails():
    fids = {1: 50.0, 4: 60.0, 8: 20.0, 16: 90.0}  # LDM-4 worse than LDM-1: the direction must not hold
    rows = [row(f, 2000, fid, train_sps=30.0 * f) for f, fid in fids.items()]
    text = views.summary(rows, 1000, "a caveat", "some judge", "equal steps")
    assert "lowest FID here is **LDM-8**: 20.0" in text
    assert "LDM-8 (20) < LDM-1 (50) < LDM-4 (60) < LDM-16 (90)" in text
    assert "**does not hold**" in text and "LDM-4 60 vs LDM-1 50" in text
    assert "a caveat" in text and "some judge" in text and "n = 256" in text
    assert "LDM-4 trains 4.0× the samples/s of LDM-1" in text
    fids[4] = 40.0
    assert "**holds**" in views.summary([row(f, 2000, fid) for f, fid in fids.items()], 1000, "c", "j", "b")
    with pytest.raises(ValueError, match="training rows"):
        views.summary([row(4, 0, 1.0, kind="sampling")], 1000, "c", "j", "b")


def test_sampling_summary_picks_the_lowest_fid_and_the_fastest_per_step_count():
    rows = [row(1, 0, 80.0, "sampling", 10, sps=2.0), row(4, 0, 30.0, "sampling", 10, sps=20.0),
            row(16, 0, 70.0, "sampling", 10, sps=90.0)]
    text = views.sampling_summary(rows)
    assert "DDIM-10: lowest FID LDM-4 (30 at 20.0 samples/s); fastest LDM-16 (90.0 samples/s)" in text


def test_headline_falls_back_to_the_32x32_sweep_and_prefers_a_committed_64x64_one(tmp_path):
    old = views.headline_sweep(RESULTS, REJUDGE) if not (RESULTS / "tradeoff64").exists() else None
    if old is not None:
        assert not old.fair and old.path.name == "tradeoff_steps" and "UNEQUAL" in old.caveat
        assert old.judge == views.OLD_JUDGE
    shutil.copytree(RESULTS / "tradeoff_steps", tmp_path / "tradeoff64", ignore=shutil.ignore_patterns("f*"))
    fair = views.headline_sweep(tmp_path, REJUDGE)
    assert fair.fair and fair.path.name == "tradeoff64" and "fair first stages" in fair.caveat
    assert fair.judge.startswith(REJUDGE["judge"])


def test_rejudged_quotes_the_committed_rejudging_of_a_sweeps_kept_samples():
    text = views.rejudged(REJUDGE, RESULTS / "tradeoff", paths.REPO_ROOT)
    entry = REJUDGE["tradeoff"]["benchmarks/results/tradeoff/f1/samples_step000153.safetensors"]
    assert f"LDM-1 {100 * entry['new']:.0f}% (was {100 * entry['old']:.0f}%)" in text
    assert views.rejudged(REJUDGE, RESULTS / "rejudge", paths.REPO_ROOT) == ""


def test_throughput_table_names_the_judge_in_its_score_column():
    table = views.throughput_table([row(4, 2000, 30.0), row(4, 0, 40.0, "sampling", 10)], views.OLD_JUDGE)
    assert "recognisable (old judge)" in table.splitlines()[0]

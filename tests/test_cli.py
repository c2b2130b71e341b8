"""The `ldm-lite` stages run end to end (smoke sizes) and write what they promise."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ldm_lite as ll
from ldm_lite import cli
from ldm_lite.autoencoder import IdentityAutoencoder


def run(*args, tmp_path, smoke=True, **env_extra):
    env = {**os.environ, "LDM_LITE_SMOKE": "1" if smoke else "0", "LDM_LITE_OUTPUTS": str(tmp_path / "outputs"),
           "MPLBACKEND": "Agg", **env_extra}
    return subprocess.run([sys.executable, "-m", "ldm_lite.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=True)


def run_here(*args, tmp_path, monkeypatch, capsys=None) -> str:
    """The same command in this process, as `run` sets it up (no second torch import): what it printed on stdout
    when `capsys` is given. The main job, sample, train-ae, train-ldm and the two error tests below still run as a
    real `python -m ldm_lite.cli` subprocess."""
    args = [str(a) for a in args]
    monkeypatch.setenv("LDM_LITE_SMOKE", "1")
    monkeypatch.setattr(ll.paths, "OUTPUTS_DIR", tmp_path / "outputs")
    monkeypatch.setattr(sys, "argv", ["ldm-lite", *args])  # what `command_line()` quotes
    threads = torch.get_num_threads()
    if capsys is not None:
        capsys.readouterr()
    try:
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out if capsys is not None else ""


@pytest.mark.slow
def test_main_job_writes_samples_curves_and_metrics(tmp_path, monkeypatch):
    out = tmp_path / "main"
    res = run("main", "--out", str(out), "--train-ae", tmp_path=tmp_path)
    # sampling and judging (~18 s at full size) show progress: a bar per reverse step, then per judging phase
    assert re.search(r"sampling 8 images \(ddim\): 100%\|.*\| 4/4 ", res.stderr), res.stderr[-2000:]
    assert re.search(r"judging: 100%\|.*\| 2/2 .*shapes score and FID", res.stderr), res.stderr[-2000:]
    for name in ("samples.png", "curves.png", "metrics.json", "tour/shapes.png", "ldm/model/model.safetensors"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["autoencoder"].startswith("trained now (5 steps") and metrics["config"]["ldm_steps"] == 6
    assert metrics["final_loss_mean_last_100_steps"] > 0
    model = ll.ldm.LatentDiffusion.from_pretrained(out / "ldm" / "model")
    assert model.latent_shape == (3, 8, 8)
    # resuming the same run does no extra training and reproduces the same weights
    before = (out / "ldm" / "model" / "model.safetensors").read_bytes()
    run_here("main", "--out", str(out), "--train-ae", tmp_path=tmp_path, monkeypatch=monkeypatch)
    assert (out / "ldm" / "model" / "model.safetensors").read_bytes() == before
    again = json.loads((out / "metrics.json").read_text())
    assert again["autoencoder"].startswith("trained here earlier")
    assert again["ldm_steps_done"] == 6 and again["ldm_steps_this_run"] == 0 and again["train_steps_per_second"] == 0


@pytest.mark.slow
def test_sample_and_evaluate_a_saved_model(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=32).save_pretrained(tmp_path / "m")
    run("sample", "--model", str(tmp_path / "m"), "--n", "4", "--steps", "3", "--out", str(tmp_path / "g.png"),
        tmp_path=tmp_path)
    assert (tmp_path / "g.png").stat().st_size > 1000
    run_here("sample", "--model", tmp_path / "m", "--n", "2", "--steps", "2", tmp_path=tmp_path,  # default: outputs
             monkeypatch=monkeypatch)
    assert (tmp_path / "outputs" / "samples" / "m-ddim2-seed0.png").stat().st_size > 1000
    printed = run_here("evaluate", "--model", tmp_path / "m", "--samplers", "ddim:3,dpm_solver_pp:2", "--n", "16",
                       "--n-real", "32", "--n-boot", "5", "--out", tmp_path / "e.json", tmp_path=tmp_path,
                       monkeypatch=monkeypatch, capsys=capsys)
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data) >= {"ddim:3", "dpm_solver_pp:2"} and "evaluate" in data["command"]
    if "note" not in data["ddim:3"]:  # a shipped classifier judged them
        r = data["ddim:3"]
        assert 0 <= r["recognisable"] <= 1 and r["fid_lo"] <= r["fid_hi"]
    assert json.loads(printed) == data  # what it prints is what it wrote


@pytest.mark.slow
def test_evaluate_a_conditional_model_judges_held_out_captions_per_guidance_scale(tmp_path, monkeypatch, capsys):
    from ldm_lite import recipes

    torch.manual_seed(0)
    recipes.build_ldm(recipes.config("ldm-kl-f4-shapes32-text", context_dim=32, model_channels=32, resolution=16), IdentityAutoencoder()).save_pretrained(tmp_path / "t2i")
    printed = run_here("evaluate", "--model", tmp_path / "t2i", "--samplers", "ddim:2", "--n", "4", "--n-real", "8",
                       "--guidance", "1", "3", "--out", tmp_path / "e.json", tmp_path=tmp_path,
                       monkeypatch=monkeypatch, capsys=capsys)
    data = json.loads((tmp_path / "e.json").read_text())
    r = data["ddim:2"]
    assert r["condition_kind"] == "shapes-text" and r["n"] == 4 and r["sample_options"] == {"sampler": "ddim",
                                                                                           "steps": 2}
    assert r["scorer_on_real"] == {"classifier_kind_and_color": 1.0, "segmenter_two_shapes": 1.0}
    for s in ("guidance_1", "guidance_3"):
        assert 0 <= r[s]["single_kind_and_color"] <= r[s]["single_kind"] <= 1
        assert 0 <= r[s]["two_all_and_relation"] <= r[s]["two_all_attributes"] <= 1
    assert "--guidance 1 3" in data["command"] and json.loads(printed) == data


def test_bad_model_path_gives_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ldm_lite.cli", "sample", "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and f"--model {tmp_path / 'nope'}: no such folder" in proc.stderr


@pytest.mark.slow
def test_train_ae_ships_with_readme_and_train_ldm_takes_an_image_folder(tmp_path, monkeypatch):
    from PIL import Image

    data = tmp_path / "data"
    run("train-ae", "--preset", "kl-f4", "--steps", "2", "--batch-size", "2", "--n-train", "8", "--loss", "short",
        "--base-channels", "16", "--ship", "ae-test", tmp_path=tmp_path, LDM_LITE_DATA=str(data))
    shipped = data / "pretrained" / "ae-test"
    assert "ldm-lite train-ae --preset kl-f4" in (shipped / "README.md").read_text()
    assert {"psnr", "ssim", "scale_factor"} <= set(json.loads((shipped / "metrics.json").read_text()))
    ae = ll.autoencoder.Autoencoder.from_pretrained(shipped)
    assert (tmp_path / "outputs" / "ae" / "ae-test" / "checkpoint" / "state.json").exists()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (40, 40), (20 * i, 100, 0)).save(folder / f"{i:02d}.png")
    run_here("train-ldm", "--ae", shipped, "--dataset", folder, "--steps", "2", "--batch-size", "4",
             "--model-channels", "32", tmp_path=tmp_path, monkeypatch=monkeypatch)
    model = ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "outputs" / "ldm" / "imgs-ae-test" / "model")
    assert model.latent_shape == (ae.latent_channels, 8, 8)


def test_unknown_dataset_names_the_choices(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ldm_lite.cli", "train-ldm", "--ae", "data/pretrained/ae-kl-f4-shapes32",
                           "--dataset", "cifar"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown dataset 'cifar'" in proc.stderr and "hub:" in proc.stderr


@pytest.mark.slow
def test_conditional_stages_train_sample_and_experiment(tmp_path, monkeypatch, capsys):
    """train-ldm --condition / sample --labels and --lowres / experiment tradeoff are wired to the library."""
    out = tmp_path / "cls"
    run("train-ldm", "--condition", "class", "--steps", "2", "--batch-size", "4", "--n-train", "16",
        "--model-channels", "32", "--out", str(out), tmp_path=tmp_path)
    model = ll.ldm.LatentDiffusion.from_pretrained(out / "model")
    assert type(model.conditioner).__name__ == "ClassConditioner"
    run_here("sample", "--model", out / "model", "--labels", "0,1", "--steps", "2", "--guidance", "2",
             "--out", tmp_path / "cls.png", tmp_path=tmp_path, monkeypatch=monkeypatch)
    assert (tmp_path / "cls.png").stat().st_size > 1000
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "low.png")
    run_here("sample", "--lowres", tmp_path / "low.png", "--steps", "2", "--out", tmp_path / "sr.png",
             tmp_path=tmp_path, monkeypatch=monkeypatch)
    assert Image.open(tmp_path / "sr.png").size == (32, 32)
    # report only (`--fs` without values) from the committed sweep: the figures and Table 6 without training
    committed = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "tradeoff"
    printed = run_here("experiment", "tradeoff", "--fs", "--out", committed, "--report", tmp_path / "report",
                       tmp_path=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert (tmp_path / "report" / "results.csv").exists() and "| 4 | 3x8x8 |" in printed  # Table 6, row f=4


@pytest.mark.slow
def test_train_ldm_fine_tunes_an_image_to_image_model_from_saved_weights(tmp_path, monkeypatch):
    """train-ldm --condition semantic --init <model> --latent-cache: the run starts from the saved weights."""
    shipped = ll.paths.pretrained("ldm-semantic-shapes32")
    out = tmp_path / "ft"
    run_here("train-ldm", "--condition", "semantic", "--init", shipped, "--latent-cache", "--steps", "1",
             "--batch-size", "4", "--n-train", "16", "--lr", "1e-9", "--threads", "1", "--out", out, tmp_path=tmp_path,
             monkeypatch=monkeypatch)
    tuned = ll.ldm.LatentDiffusion.from_pretrained(out / "model").state_dict()
    start = ll.ldm.LatentDiffusion.from_pretrained(shipped).state_dict()
    assert max(float((tuned[k].float() - start[k].float()).abs().max()) for k in start) < 1e-6


@pytest.mark.slow
def test_train_segmenter_saves_a_validated_model(tmp_path, monkeypatch):
    out = tmp_path / "seg"
    run_here("train-segmenter", "--steps", "2", "--batch-size", "4", "--n-eval", "10", "--threads", "1", "--out", out,
             tmp_path=tmp_path, monkeypatch=monkeypatch)
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "train_config.json").read_text())["steps"] == 2 and metrics["held_out_32"]["n"] == 10 and metrics["held_out_64_canvas"]["n"] == 2
    assert 0 <= metrics["held_out_32"]["mean_iou"] <= 1
    assert ll.segmenter.ShapesSegmenter.from_pretrained(out / "model").training is False

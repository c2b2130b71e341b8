"""The `ldm-lite` stages run end to end (smoke sizes) and write what they promise."""

import json
import os
import subprocess
import sys

import torch

import ldm_lite as ll
from ldm_lite.autoencoder import IdentityAutoencoder


def run(*args, tmp_path, smoke=True):
    env = {**os.environ, "LDM_LITE_SMOKE": "1" if smoke else "0", "LDM_LITE_OUTPUTS": str(tmp_path / "outputs"),
           "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "ldm_lite.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=True)


def test_main_job_writes_samples_curves_and_metrics(tmp_path):
    out = tmp_path / "main"
    run("main", "--out", str(out), "--train-ae", tmp_path=tmp_path)
    for name in ("samples.png", "curves.png", "metrics.json", "tour/shapes.png", "ldm/model/model.safetensors"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["autoencoder"].startswith("trained here") and metrics["config"]["ldm_steps"] == 6
    assert metrics["final_loss_mean_last_100_steps"] > 0
    model = ll.ldm.LatentDiffusion.from_pretrained(out / "ldm" / "model")
    assert model.latent_shape == (3, 8, 8)
    # resuming the same run does no extra training and reproduces the same weights
    before = (out / "ldm" / "model" / "model.safetensors").read_bytes()
    run("main", "--out", str(out), "--train-ae", tmp_path=tmp_path)
    assert (out / "ldm" / "model" / "model.safetensors").read_bytes() == before


def test_sample_and_evaluate_a_saved_model(tmp_path):
    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=32).save_pretrained(tmp_path / "m")
    run("sample", "--model", str(tmp_path / "m"), "--n", "4", "--steps", "3", "--out", str(tmp_path / "g.png"),
        tmp_path=tmp_path)
    assert (tmp_path / "g.png").stat().st_size > 1000
    res = run("evaluate", "--model", str(tmp_path / "m"), "--samplers", "ddim:3,dpm_solver_pp:2", "--n", "16",
              "--n-real", "32", "--n-boot", "5", "--out", str(tmp_path / "e.json"), tmp_path=tmp_path)
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data) >= {"ddim:3", "dpm_solver_pp:2"} and "evaluate" in data["command"]
    if "note" not in data["ddim:3"]:  # a shipped classifier judged them
        r = data["ddim:3"]
        assert 0 <= r["recognisable"] <= 1 and r["fid_lo_classifier_features"] <= r["fid_hi_classifier_features"]
    assert json.loads(res.stdout) == data  # what it prints is what it wrote


def test_bad_model_path_gives_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ldm_lite.cli", "sample", "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "is not a folder" in proc.stderr

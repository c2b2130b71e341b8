"""evaluation: FID on ShapesClassifier features behaves like a distance (≈ 0 for a set against itself, small for
two real sets, large for noise), its bootstrap is reproducible, and evaluate_samples counts known images right."""

import pytest
import torch

import ldm_lite as ll
from ldm_lite.classifier import ShapesClassifier
from ldm_lite.datasets import KINDS
from ldm_lite.evaluation import classifier_features, evaluate_samples, fid_bootstrap, sampler_sweep
from ldm_lite.metrics import fid
from ldm_lite.paths import PRETRAINED_DIR


@pytest.fixture(scope="module")
def classifier() -> ShapesClassifier:
    return ShapesClassifier.from_pretrained(PRETRAINED_DIR / "shapes-classifier-32")


def real(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ll.datasets.shapes(resolution=32, n=n, seed=seed, max_shapes=1)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["attrs"][0, :2] for it in items])


@pytest.fixture(scope="module")
def features(classifier):
    a, b = real(200, seed=11)[0], real(200, seed=12)[0]
    noise = torch.rand(200, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {k: classifier_features(v, classifier, batch_size=64) for k, v in {"a": a, "b": b, "noise": noise}.items()}


def test_classifier_features_match_the_model_in_batches(classifier):
    x = real(10, seed=13)[0]
    f = classifier_features(x, classifier, batch_size=3)
    assert f.shape == (10, 128) and torch.allclose(f, classifier.features(x), atol=1e-5)


def test_fid_of_a_set_against_itself_is_zero_and_noise_is_far(features):
    assert fid(features["a"], features["a"]) < 1e-3
    same_source = fid(features["a"], features["b"])
    assert 0.5 < same_source < 50  # two samples of the same data: only sampling noise (12.0 measured at n=200)
    assert fid(features["a"], features["noise"]) > 20 * same_source
    assert fid(features["a"], features["b"]) == pytest.approx(fid(features["b"], features["a"]), rel=1e-6)


def test_fid_bootstrap_is_reproducible_and_ordered(features):
    r = fid_bootstrap(features["a"], features["b"], n_boot=8, seed=3)
    assert r["fid"] == pytest.approx(fid(features["a"], features["b"]))
    assert r["fid_lo"] <= r["fid_hi"] and r["n_boot"] == 8 and r["level"] == 0.9
    assert fid_bootstrap(features["a"], features["b"], n_boot=8, seed=3) == r
    assert fid_bootstrap(features["a"], features["b"], n_boot=8, seed=4) != r


def test_fid_bootstrap_interval_contains_the_estimate(features):
    r = fid_bootstrap(features["a"], features["b"], n_boot=10)
    assert r["fid_lo"] <= r["fid"] <= r["fid_hi"]
    assert r["fid_boot_bias"] > 0  # resampling with replacement inflates FID: the shift is real, not zero


def test_evaluate_samples_counts_known_images(classifier):
    x, attrs = real(20, seed=14)
    images = torch.cat([x, -torch.ones(4, 3, 32, 32)])  # 20 real shapes + 4 black images
    out = evaluate_samples(images, real(40, seed=15)[0], classifier)
    assert out["recognisable"] == pytest.approx(20 / 24) and out["n"] == 24
    assert out["kinds"] == dict(zip(KINDS, torch.bincount(attrs[:, 0], minlength=len(KINDS)).tolist()))
    assert sum(out["colors"].values()) == 20
    assert out["fid_n_fake"] == 24 and out["fid_n_real"] == 40 and out["fid"] > 0 and out["fid_features"].startswith("ShapesClassifier")
    assert "train-classifier" in evaluate_samples(images, x, None)["note"]


def test_sampler_sweep_rows(classifier):
    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_dim=32)
    ldm = ll.ldm.LatentDiffusion(ll.autoencoder.IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=32).eval()
    rows = sampler_sweep(ldm, ["ddim", "dpm_solver_pp"], [1, 2], n=4, real=real(8, seed=16)[0], classifier=classifier,
                         progress=False)
    assert [(r["sampler"], r["steps"], r["n"]) for r in rows] == [("ddim", 1, 4), ("ddim", 2, 4),
                                                                   ("dpm_solver_pp", 1, 4), ("dpm_solver_pp", 2, 4)]
    assert all(0 <= r["recognisable"] <= 1 and r["fid"] > 0 for r in rows)

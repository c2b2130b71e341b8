"""The shipped ShapesClassifier (`data/pretrained/shapes-classifier-32`, frozen: every FID and shapes score in the
README depends on it) judges held-out real shapes, rejects corrupted and blank images, and its score counts right."""

import pytest
import torch

import ldm_lite as ll
from ldm_lite.classifier import HEADS, ShapesClassifier, corrupt, evaluate_classifier, shapes_score
from ldm_lite.datasets import COLOR_NAMES, KINDS
from ldm_lite.paths import PRETRAINED_DIR

SHIPPED = PRETRAINED_DIR / "shapes-classifier-32"


@pytest.fixture(scope="module")
def classifier() -> ShapesClassifier:
    return ShapesClassifier.from_pretrained(SHIPPED)


def real_single_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out images (the classifier was trained on seed 0) and their first shape's (kind, colour, size)."""
    ds = ll.datasets.shapes(resolution=32, n=n, seed=seed, max_shapes=1)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["attrs"][0, :3] for it in items])


def test_loads_in_eval_mode_with_the_documented_heads(classifier):
    assert not classifier.training
    out = classifier(torch.zeros(2, 3, 32, 32))
    assert {k: v.shape for k, v in out.items()} == {k: (2, n) for k, n in HEADS.items()}
    assert classifier.features(torch.zeros(2, 3, 64, 64)).shape == (2, 128)  # other sizes are resized
    with pytest.raises(ValueError, match=r"expected RGB images \(B, 3, H, W\)"):
        classifier(torch.zeros(2, 1, 32, 32))


def test_held_out_real_shapes_are_recognised_with_their_attributes(classifier):
    m = evaluate_classifier(classifier, n=300, seed=777)
    assert m["recognisable_real"] >= 0.99, m
    assert m["kind_acc"] >= 0.99 and m["color_acc"] >= 0.99 and m["size_acc"] >= 0.97, m
    assert m["recognisable_corrupted"] <= 0.10, m  # blends, blurred blobs, two-coloured shapes, smooth noise


# (A "two-colour" corruption of a shape that lies in one half of the image stays a valid one-colour shape, so that
# kind is bounded only in aggregate, by the test above.)
@pytest.mark.parametrize("kind", ["blend", "blob", "smooth_noise"])
def test_each_corruption_is_rejected(classifier, kind):
    x, _ = real_single_shapes(200, seed=778)
    bad = corrupt(x, torch.Generator().manual_seed(0))
    # corrupt() draws its choice of corruption first: replay that draw to pick one kind at a time
    which = torch.randint(4, (len(x),), generator=torch.Generator().manual_seed(0))
    chosen = bad[which == ["blend", "blob", "two_colour", "smooth_noise"].index(kind)]
    assert len(chosen) > 20
    assert classifier.judge(chosen)["recognisable"].float().mean() <= 0.05


def test_blank_and_uniform_noise_images_are_not_recognisable(classifier):
    g = torch.Generator().manual_seed(0)
    images = {"black": -torch.ones(40, 3, 32, 32), "grey": torch.zeros(40, 3, 32, 32),
              "white": torch.ones(40, 3, 32, 32), "uniform noise": torch.rand(40, 3, 32, 32, generator=g) * 2 - 1}
    rates = {k: float(classifier.judge(v)["recognisable"].float().mean()) for k, v in images.items()}
    assert all(r <= 0.10 for r in rates.values()), rates


@pytest.mark.xfail(strict=True, reason="known defect of the frozen shipped classifier: saturated per-pixel Gaussian "
                   "noise (std 1, clamped) is judged a recognisable 'cross' with valid_prob ~1; its valid head never "
                   "saw white noise. Retraining changes every FID in the README (lead's decision).")
def test_gaussian_noise_is_not_recognisable(classifier):
    noise = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert classifier.judge(noise)["recognisable"].float().mean() <= 0.10


def test_shapes_score_counts_kinds_and_colours_of_known_images(classifier):
    x, attrs = real_single_shapes(24, seed=779)
    blanks = -torch.ones(8, 3, 32, 32)
    score = shapes_score(torch.cat([x, blanks]), classifier)
    assert score["n"] == 32 and score["recognisable"] == pytest.approx(24 / 32)
    assert score["kinds"] == dict(zip(KINDS, torch.bincount(attrs[:, 0], minlength=len(KINDS)).tolist()))
    assert score["colors"] == dict(zip(COLOR_NAMES, torch.bincount(attrs[:, 1], minlength=len(COLOR_NAMES)).tolist()))

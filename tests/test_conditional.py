"""`conditional.evaluate`: conditions from held-out data, judged by frozen scorers, one result per guidance scale.

The sampler is replaced by a stand-in that returns *real* held-out images for the requested conditions (or the
images of other conditions): the accuracies must then be exactly what the scorers read on real data."""

import pytest
import torch

from ldm_lite import conditional, datasets, recipes
from ldm_lite.autoencoder import IdentityAutoencoder
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.unet import UNet, UNetConfig

N, N_REAL = 24, 48  # conditions, FID reference images (the conditions are the held-out items after these)
RECIPE_OF = {"text": "ldm-kl-f4-shapes32-text", "layout": "ldm-kl-f4-shapes32-layout",
             "class": "ldm-kl-f4-mnist32-class", "mnist-text": "ldm-kl-f4-mnist32-text",
             "shapes-class": "ldm-kl-f4-shapes32-class"}


def tiny(kind: str, resolution: int = 32, **overrides) -> LatentDiffusion:
    """The recipe's model of `kind` at width 32 on an identity first stage (its sampler is replaced in each test)."""
    return recipes.build_ldm(recipes.config(RECIPE_OF[kind], context_dim=32, model_channels=32,
                                            resolution=resolution, **overrides), IdentityAutoencoder())


def real_shapes_sampler(shift: int = 0, resolution: int = 32):
    """A stand-in for `sample_many`: for each requested caption, the real held-out image with that caption (of
    the caption `shift` places later when shift > 0: a model that ignores its condition)."""
    lookup = {}
    for k in (1, 2):
        b = conditional.heldout_shapes(N_REAL + N, k, resolution=resolution)
        lookup.update(zip(b["caption"], b["image"]))

    def sample_many(ldm, batch, **options):
        captions = list(batch["caption"])
        return torch.stack([lookup[c] for c in captions[shift:] + captions[:shift]])

    return sample_many


def test_text_model_real_images_of_the_requested_captions_score_100_percent(monkeypatch):
    ldm = tiny("text")
    assert conditional.condition_kind(ldm) == "shapes-text"
    monkeypatch.setattr(conditional, "sample_many", real_shapes_sampler())
    out = conditional.evaluate(ldm, n=N, guidance_scales=(1, 3), n_real=N_REAL, steps=2)
    assert out["condition_kind"] == "shapes-text" and "ShapesClassifier" in out["judge"]
    assert out["scorer_on_real"] == {"classifier_kind_and_color": 1.0, "segmenter_two_shapes": 1.0}
    for s in ("guidance_1", "guidance_3"):
        row = out[s]
        assert row["single_kind_and_color"] == 1.0 and row["two_all_and_relation"] == 1.0
        # real vs other real images: disjoint sets of 24 and 48 (singular covariances) measure 90-130 here;
        # two-shape scenes ~180, noise ~790
        assert row["fid"] < 150

    monkeypatch.setattr(conditional, "sample_many", real_shapes_sampler(shift=1))  # images of other captions
    wrong = conditional.evaluate(ldm, n=N, guidance_scales=(3,), n_real=N_REAL, steps=2)["guidance_3"]
    assert wrong["single_kind_and_color"] <= 0.3 and wrong["two_all_and_relation"] <= 0.3


def test_layout_model_real_scenes_of_the_requested_layouts_are_all_found(monkeypatch):
    ldm = tiny("layout")
    scenes = conditional.heldout_shapes(8, 2)["image"]
    monkeypatch.setattr(conditional, "sample_many", lambda ldm, batch, **o: scenes[: len(batch["boxes"])])
    out = conditional.evaluate(ldm, n=8, guidance_scales=(2,), steps=2)
    assert out["condition_kind"] == "layout" and out["guidance_2"]["objects_found"] == 1.0
    monkeypatch.setattr(conditional, "sample_many", lambda ldm, batch, **o: scenes.roll(1, 0))
    assert conditional.evaluate(ldm, n=8, guidance_scales=(2,), steps=2)["guidance_2"]["objects_found"] < 0.5


def test_a_64x64_model_is_judged_through_the_32x32_view_of_its_judges(monkeypatch):
    """A model at 64×64 (e.g. `--autoencoder ae-kl-f4-c3-shapes64 --resolution 64`): its real held-out scenes at
    64×64 score as at 32×32 once resized to the judges' side (the segmenter, trained on 32×32 scenes, finds every
    shape and relation of 200 held-out two-shape scenes in 72.5% of them at raw 64×64, 99% resized)."""
    text = tiny("text", resolution=64)
    monkeypatch.setattr(conditional, "sample_many", real_shapes_sampler(resolution=64))
    out = conditional.evaluate(text, n=N, guidance_scales=(3,), n_real=N_REAL, steps=2)
    assert out["scorer_on_real"] == {"classifier_kind_and_color": 1.0, "segmenter_two_shapes": 1.0}
    assert out["guidance_3"]["single_kind_and_color"] == 1.0 and out["guidance_3"]["two_all_and_relation"] == 1.0
    assert out["guidance_3"]["fid"] < 150  # as at 32x32 (test above)
    layout = tiny("layout", resolution=64)
    scenes = conditional.heldout_shapes(8, 2, resolution=64)["image"]
    assert scenes.shape[-1] == 64 and conditional.judge_view(scenes).shape[-2:] == (32, 32)
    monkeypatch.setattr(conditional, "sample_many", lambda ldm, batch, **o: scenes[: len(batch["boxes"])])
    out = conditional.evaluate(layout, n=8, guidance_scales=(2,), steps=2)
    assert out["scorer_on_real"] == 1.0 and out["guidance_2"]["objects_found"] == 1.0


def test_layout_token_model_is_judged_like_the_layout_model(monkeypatch):
    ldm = tiny("layout", condition="layout-tokens")
    assert type(ldm.conditioner).__name__ == "LayoutTokenConditioner"
    assert ldm.conditioner.config.max_objects == 2 and ldm.unet.config.context_dim == 32
    scenes = conditional.heldout_shapes(8, 2)["image"]
    monkeypatch.setattr(conditional, "sample_many", lambda ldm, batch, **o: scenes[: len(batch["boxes"])])
    out = conditional.evaluate(ldm, n=8, guidance_scales=(2,), steps=2)
    assert out["condition_kind"] == "layout" and out["guidance_2"]["objects_found"] == 1.0


def test_shapes_class_model_is_asked_for_every_kind_and_judged_by_the_shapes_classifier(monkeypatch):
    """Class-conditional shapes (class = kind): real held-out images of the requested kinds score 100%, images of
    the next kind 0%; the classifier reads the kind of >= 95% of real held-out images (here all)."""
    ldm = tiny("shapes-class")
    assert ldm.conditioner.config.num_classes == len(datasets.KINDS)
    assert conditional.condition_kind(ldm) == "shapes-class"
    pool = conditional.heldout_shapes(60, 1, start=1_000)  # beyond the FID reference
    first = {k: pool["image"][pool["label"].tolist().index(k)] for k in range(len(datasets.KINDS))}
    asked = []

    def real_kinds(shift):
        def sample_many(ldm, batch, **options):
            asked.append(batch["label"])
            return torch.stack([first[(k + shift) % len(first)] for k in batch["label"].tolist()])
        return sample_many

    monkeypatch.setattr(conditional, "sample_many", real_kinds(0))
    out = conditional.evaluate(ldm, n=12, guidance_scales=(1, 3), n_real=64, steps=2)
    assert out["condition_kind"] == "shapes-class" and "ShapesClassifier" in out["judge"]
    assert out["n"] == 12 and out["scorer_on_real"] >= 0.95
    assert asked[0].tolist() == [k for k in range(6) for _ in range(2)]
    assert out["guidance_1"]["accuracy"] == out["guidance_3"]["accuracy"] == 1.0
    assert out["guidance_1"]["fid"] > 0 and out["guidance_1"]["recognisable"] == 1.0
    monkeypatch.setattr(conditional, "sample_many", real_kinds(1))
    assert conditional.evaluate(ldm, n=12, guidance_scales=(3,), n_real=64, steps=2)["guidance_3"]["accuracy"] == 0.0
    assert conditional.example_conditions(ldm)["label"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]


@pytest.fixture(scope="module")
def mnist_test():
    from ldm_lite.datasets import mnist

    return mnist(32, channels=3, split="test", source="offline")  # loaded once (seconds)


@pytest.mark.parametrize("condition", ["class", "mnist-text"])
def test_mnist_models_are_asked_for_every_digit_and_judged_by_the_mnist_classifier(monkeypatch, mnist_test,
                                                                                   condition):

    monkeypatch.setattr(datasets, "mnist", lambda *a, **k: mnist_test)
    digit = {k: mnist_test[mnist_test.labels.tolist().index(k)]["image"] for k in range(10)}
    asked = []

    def real_digits(ldm, batch, **options):  # a real test digit of the requested class
        labels = (batch["label"].tolist() if "label" in batch
                  else [datasets.NUMBER_WORDS.index(c.split()[-1]) for c in batch["caption"]])
        asked.append(batch)
        return torch.stack([digit[k] for k in labels])

    ldm = tiny(condition)
    monkeypatch.setattr(conditional, "sample_many", real_digits)
    out = conditional.evaluate(ldm, n=20, guidance_scales=(1, 3), steps=2)
    assert out["condition_kind"] == ("mnist-class" if condition == "class" else "mnist-text")
    assert out["n"] == 20 and out["scorer_on_real"] >= 0.95
    assert out["guidance_1"]["accuracy"] == out["guidance_3"]["accuracy"] == 1.0
    if condition == "mnist-text":  # held-out captions, two per digit
        assert asked[0]["caption"][:3] == ["a handwritten zero", "a handwritten zero", "a handwritten one"]
    else:
        assert asked[0]["label"].tolist() == [k for k in range(10) for _ in range(2)]


def test_unconditional_models_get_a_clear_error():
    cfg = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(), head_dim=32)
    with pytest.raises(ValueError, match="no judge for a model conditioned by nothing"):
        conditional.evaluate(LatentDiffusion(IdentityAutoencoder(), UNet(cfg), image_size=16), n=4)

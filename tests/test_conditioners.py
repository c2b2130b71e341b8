"""Text, layout and class conditioners behind the one `Condition` interface, through `LatentDiffusion`."""

import json
import warnings

import pytest
import torch
from torch.utils.data import default_collate

from ldm_lite import datasets
from ldm_lite.autoencoder import IdentityAutoencoder
from ldm_lite.conditioning import (
    ClassConditioner,
    ClassConditionerConfig,
    LayoutConditioner,
    LayoutConditionerConfig,
)
from ldm_lite.datasets import boxes_from_attrs, shapes_vocabulary
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.text import (
    FrozenTextConditioner,
    FrozenTextConditionerConfig,
    PromptTokenizer,
    TextConditioner,
    TextConditionerConfig,
    bert_tokenizer,
)
from ldm_lite.unet import UNet, UNetConfig

D = 32


def tiny_ldm(conditioner) -> LatentDiffusion:
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                           attention_resolutions=(1,), head_dim=32, context_dim=D))
    for p in unet.parameters():  # a non-trivial UNet so conditions and guidance change the output
        torch.nn.init.normal_(p, std=0.05)
    return LatentDiffusion(IdentityAutoencoder(), unet, conditioner, "cosine", image_size=8)


def text(max_length: int = 12) -> TextConditioner:
    torch.manual_seed(0)
    return TextConditioner(TextConditionerConfig(dim=D, depth=1, max_length=max_length, vocabulary=shapes_vocabulary()))


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ------------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_round_trip_padding_and_vocabulary():
    tok = PromptTokenizer(16, shapes_vocabulary())
    caption = "a large red circle left of a small cyan star"  # 11 WordPieces ("cy", "##an")
    ids, mask = tok([caption, ""])
    assert ids.shape == mask.shape == (2, 16) and mask[0].sum() == 13
    bert = bert_tokenizer()
    assert bert.decode(ids[0][mask[0]], skip_special_tokens=True) == caption  # WordPiece round trip
    assert ids[0, 0] == bert.cls_token_id and mask[1].sum() == 2  # "" = [CLS] [SEP] + padding
    assert tok.tokens("a cyan star") == ["[CLS]", "a", "cy", "##an", "star", "[SEP]"]
    # every word of 3-shape captions is in the shapes vocabulary: no warning
    captions = [datasets.shapes(32, n=20, seed=3)[i]["caption"] for i in range(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PromptTokenizer(32, shapes_vocabulary())(captions)


def test_unseen_words_warn_and_long_prompts_truncate_with_a_warning():
    tok = PromptTokenizer(6, shapes_vocabulary())
    with pytest.warns(UserWarning, match=r"never seen in training: \['blob', 'huge'\]"):
        tok(["a huge red blob"])
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = tok(["a large red circle left of a small blue star"])
    assert mask.all() and ids[0, -1] == bert_tokenizer().sep_token_id
    with pytest.raises(ValueError, match="list of strings"):
        tok("a red circle")


# ------------------------------------------------------------------------------------------------ text
def test_text_conditioner_shapes_null_is_the_empty_prompt_and_words_matter():
    cond = text()
    c = cond({"caption": ["a red circle", "a blue square", ""]})
    assert c.context.shape == (3, 12, D) and c.concat is None
    null = cond.null(2).context
    assert null.shape == (2, 12, D)
    assert torch.allclose(c.context[2], null[0], atol=1e-6)  # the empty prompt is ∅
    assert not torch.allclose(c.context[0], c.context[1])
    # padding never leaks into the real tokens: a padded prompt encodes like the same prompt at full length
    short = TextConditioner(TextConditionerConfig(dim=D, depth=1, max_length=5, vocabulary=shapes_vocabulary()))
    short.load_state_dict({k: v[:5] if k == "position_embedding" else v for k, v in cond.state_dict().items()})
    assert torch.allclose(short.encode(["a red circle"]), cond.encode(["a red circle"])[:, :5], atol=1e-5)


def test_text_dropout_guidance_and_negative_prompts():
    ldm = tiny_ldm(text())
    prompts = ["a red circle", "a blue star"]
    dropped = ldm.condition({"caption": prompts}, 2, drop_prob=1.0)
    assert torch.equal(dropped.context, ldm.conditioner.null(2).context)
    plain = ldm.sample(prompts=prompts, steps=3, generator=g())
    assert plain.shape == (2, 3, 8, 8)
    assert torch.equal(plain, ldm.sample(batch={"caption": prompts}, steps=3, generator=g()))
    guided = ldm.sample(prompts=prompts, steps=3, generator=g(), guidance_scale=3.0)
    assert not torch.allclose(plain, guided)
    # a negative prompt of "" is exactly ∅; another negative prompt changes the result
    assert torch.allclose(guided, ldm.sample(prompts=prompts, negative_prompts=["", ""], steps=3, generator=g(),
                                             guidance_scale=3.0), atol=1e-5)
    away = ldm.sample(prompts=prompts, negative_prompts=["a green cross"] * 2, steps=3, generator=g(),
                      guidance_scale=3.0)
    assert not torch.allclose(guided, away)
    assert not torch.allclose(plain, ldm.sample(prompts=["a green cross", "a blue star"], steps=3, generator=g()))


def test_text_model_save_load_round_trip(tmp_path):
    ldm = tiny_ldm(text())
    ldm.save_pretrained(tmp_path / "t2i")
    back = LatentDiffusion.from_pretrained(tmp_path / "t2i")
    assert not back.training and isinstance(back.conditioner, TextConditioner)
    assert back.conditioner.config.vocabulary == shapes_vocabulary()
    a = ldm.sample(prompts=["a red circle"], steps=3, generator=g(), guidance_scale=2.0)
    assert torch.equal(a, back.sample(prompts=["a red circle"], steps=3, generator=g(), guidance_scale=2.0))


def test_frozen_text_encoder_saves_only_its_projection(tmp_path):
    torch.manual_seed(0)
    cond = FrozenTextConditioner(FrozenTextConditionerConfig(dim=D, max_length=8, vocabulary=shapes_vocabulary()))
    assert set(cond.state_dict()) == {"proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias"}
    c = cond({"caption": ["a red circle", ""]})
    assert c.context.shape == (2, 8, D)
    assert torch.allclose(c.context[1], cond.null(1).context[0], atol=1e-5)
    ldm = tiny_ldm(cond)
    ldm.save_pretrained(tmp_path / "frozen")
    back = LatentDiffusion.from_pretrained(tmp_path / "frozen")
    assert torch.allclose(back.conditioner.encode(["a red circle"]), cond.encode(["a red circle"]), atol=1e-6)


# ------------------------------------------------------------------------------------------------ layout
def shapes_batch(n: int = 4) -> dict:
    ds = datasets.shapes(32, n=n, seed=0, max_shapes=2)
    return default_collate([ds[i] for i in range(n)])


def test_boxes_from_attrs_enclose_each_shape_mask():
    ds = datasets.shapes(32, n=16, seed=0, max_shapes=1)
    b = default_collate([ds[i] for i in range(16)])
    boxes, labels = boxes_from_attrs(b["attrs"])
    assert boxes.shape == (16, 1, 4) and torch.equal(labels[:, 0], b["label"])
    for i in range(16):
        x0, y0, x1, y1 = (boxes[i, 0] * 32).tolist()
        ys, xs = torch.nonzero(b["mask"][i] > 0, as_tuple=True)
        assert x0 - 0.5 <= xs.min() + 0.5 and xs.max() + 0.5 <= x1 + 0.5  # every pixel centre inside the box
        assert y0 - 0.5 <= ys.min() + 0.5 and ys.max() + 0.5 <= y1 + 0.5
        assert (x1 - x0) * (y1 - y0) < 4 * len(ys)  # and the box is tight (a circumscribed square)
    two = shapes_batch(8)
    boxes, labels = boxes_from_attrs(two["attrs"])
    assert torch.equal(labels >= 0, two["attrs"][..., 0] >= 0) and boxes[labels < 0].eq(0).all()


def test_layout_conditioner_tokens_null_guidance_and_round_trip(tmp_path):
    torch.manual_seed(0)
    cond = LayoutConditioner(LayoutConditionerConfig(dim=D, depth=1, max_objects=3))
    b = shapes_batch()
    c = cond(b)
    assert c.context.shape == (4, 3, D)
    explicit = {"boxes": [[[0.1, 0.1, 0.5, 0.5]]], "box_labels": [[2]]}  # one object, padded to 3 slots
    assert cond(explicit).context.shape == (1, 3, D)
    empty = {"boxes": torch.zeros(1, 3, 4), "box_labels": torch.full((1, 3), -1)}
    assert torch.allclose(cond(empty).context, cond.null(1).context)  # the empty layout is ∅
    moved = {"boxes": [[[0.5, 0.5, 0.9, 0.9]]], "box_labels": [[2]]}
    assert not torch.allclose(cond(explicit).context, cond(moved).context)
    ldm = tiny_ldm(cond)
    x = ldm.sample(batch=explicit, steps=3, generator=g(), guidance_scale=3.0)
    assert not torch.allclose(x, ldm.sample(batch=moved, steps=3, generator=g(), guidance_scale=3.0))
    ldm.save_pretrained(tmp_path / "layout")
    back = LatentDiffusion.from_pretrained(tmp_path / "layout")
    assert torch.equal(x, back.sample(batch=explicit, steps=3, generator=g(), guidance_scale=3.0))


@pytest.mark.parametrize("boxes, labels, match", [
    ([[[0.1, 0.1, 1.2, 0.5]]], [[0]], r"inside \[0, 1\]"),
    ([[[-0.1, 0.1, 0.5, 0.5]]], [[0]], r"inside \[0, 1\]"),
    ([[[0.3, 0.1, 0.3, 0.5]]], [[0]], "zero area"),
    ([[[0.1, 0.1, 0.5, 0.5]]], [[6]], r"0\.\.5"),
    ([[[0.1, 0.1, 0.5, 0.5]] * 4], [[0] * 4], "max_objects=3"),
])
def test_bad_layouts_get_clear_errors(boxes, labels, match):
    cond = LayoutConditioner(LayoutConditionerConfig(dim=D, depth=1, max_objects=3))
    with pytest.raises(ValueError, match=match):
        cond({"boxes": boxes, "box_labels": labels})


# ------------------------------------------------------------------------------------------------ wrong calls
def test_conditional_and_unconditional_calls_are_checked():
    uncond = LatentDiffusion(IdentityAutoencoder(), UNet(UNetConfig(
        in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
        attention_resolutions=(1,))), None, image_size=8)
    with pytest.raises(ValueError, match="unconditional"):
        uncond.sample(labels=[1, 2], steps=2)
    with pytest.raises(ValueError, match="unconditional"):
        uncond.sample(prompts=["a red circle"], steps=2)
    t2i = tiny_ldm(text())
    with pytest.raises(ValueError, match=r"prompts=\["):
        t2i.sample(2, steps=2)
    with pytest.raises(ValueError, match=r"prompts=\["):
        t2i.sample(labels=[1, 2], steps=2)  # labels given to a text model
    with pytest.raises(ValueError, match="2 items"):
        t2i.sample(3, prompts=["a red circle", "a blue star"], steps=2)
    with pytest.raises(ValueError, match="one per image"):
        t2i.sample(prompts=["a red circle", "a blue star"], negative_prompts=["a red circle"] * 3, steps=2,
                   guidance_scale=2.0)
    cls = tiny_ldm(ClassConditioner(ClassConditionerConfig(num_classes=10, dim=D)))
    with pytest.raises(ValueError, match=r"labels=\["):
        cls.sample(prompts=["a handwritten seven"], steps=2)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        cls.sample(labels=[12], steps=2)


# ------------------------------------------------------------------------------------------------ training recipe
def test_text_recipe_trains_from_the_one_latent_cache_drawing_z_from_the_posterior(tmp_path):
    """The text model trains through `recipes.train` on `latents.LatentCache`: every step draws z ~ q(z|x) (the
    posterior's mean and std are cached, not the mean alone), resumes, and saves the full model."""
    from ldm_lite import recipes
    from ldm_lite.latents import LatentCache

    kw = {"steps": 2, "n_train": 8, "batch_size": 4, "model_channels": 32, "context_dim": 32, "device": "cpu"}
    run = recipes.train("ldm-kl-f4-shapes32-text", tmp_path / "t2i", progress=False, **kw)
    ldm, data = run.model, recipes.ldm_data(run.config)
    cache = LatentCache(data, ldm.autoencoder, progress=False)
    assert {"latent_mean", "latent_std", "caption"} <= set(cache[0]) and cache[3]["caption"] == data[3]["caption"]
    batch = cache.batch(torch.arange(2))
    z1, z2 = (ldm.first_stage_latent(batch, torch.Generator().manual_seed(s)) for s in (1, 2))
    assert not torch.allclose(z1, z2)  # a fresh draw each time ...
    mean = batch["latent_mean"] * ldm.autoencoder.scale_factor
    assert (z1 - mean).abs().max() < 6 * float(batch["latent_std"].max() * ldm.autoencoder.scale_factor)  # ... of q
    back = LatentDiffusion.from_pretrained(tmp_path / "t2i" / "model")  # the full model: autoencoder included
    assert back.config.autoencoder == ldm.config.autoencoder and back.config.image_size == 32
    recipes.train("ldm-kl-f4-shapes32-text", tmp_path / "t2i", progress=False, **{**kw, "steps": 3})  # resumes
    assert json.loads((tmp_path / "t2i" / "checkpoint" / "state.json").read_text())["step"] == 3


@pytest.mark.slow
def test_evaluation_reports_accuracy_per_guidance_scale_and_validates_its_scorer():
    from ldm_lite import conditional, recipes
    from ldm_lite.classifier import MNISTClassifier, ShapesClassifier
    from ldm_lite.paths import pretrained

    ldm = recipes.build_ldm(recipes.config("ldm-kl-f4-shapes32-text", context_dim=32, model_channels=32, resolution=16), IdentityAutoencoder())
    clf = ShapesClassifier.from_pretrained(pretrained("shapes-classifier-32"))
    out = conditional.evaluate_text(ldm, clf, n=6, n_real=12, guidance_scales=(1.0, 3.0), steps=2)
    assert out["scorer_on_real"]["classifier_kind_and_color"] >= 0.95  # the judge reads real captions right
    for s in ("guidance_1", "guidance_3"):
        row = out[s]
        assert 0 <= row["single_kind_and_color"] <= row["single_kind"] <= 1
        assert row["fid"] > 0  # an untrained model is far from real images
    labels_model = recipes.build_ldm(recipes.config("ldm-kl-f4-mnist32-class", context_dim=32, model_channels=32, resolution=16), IdentityAutoencoder())
    res = conditional.evaluate_class(labels_model, MNISTClassifier(), n_per_class=1, guidance_scales=(2.0,), steps=2)
    assert res["n"] == 10 and 0 <= res["guidance_2"]["accuracy"] <= 1 and res["n_real"] == 500


def test_layout_evaluation_checks_its_scorer_on_real_layouts_and_gives_fid_against_real_scenes():
    from ldm_lite import conditional, recipes
    from ldm_lite.classifier import ShapesClassifier
    from ldm_lite.paths import pretrained
    from ldm_lite.segmenter import load_segmenter

    ldm = recipes.build_ldm(recipes.config("ldm-kl-f4-shapes32-layout", context_dim=32, model_channels=32), IdentityAutoencoder())
    out = conditional.evaluate_layout(ldm, load_segmenter(), n=4, guidance_scales=(3.0,), steps=2)
    assert out["scorer_on_real"] == 1.0  # the segmenter finds every object of the real scenes in its box
    assert 0 <= out["guidance_3"]["objects_found"] <= 1 and out["guidance_3"]["n_objects"] >= 4
    assert "fid" not in out["guidance_3"]  # no classifier, no FID
    clf = ShapesClassifier.from_pretrained(pretrained("shapes-classifier-32"))
    with_fid = conditional.evaluate_layout(ldm, load_segmenter(), n=4, guidance_scales=(3.0,), steps=2,
                                           classifier=clf, n_real=8)
    # the same layouts are judged with or without the FID reference (it is drawn after them): same objects found
    assert with_fid["guidance_3"]["objects_found"] == out["guidance_3"]["objects_found"]
    assert with_fid["n_real"] == 8 and with_fid["guidance_3"]["fid"] > 0  # an untrained model is far from real
    # the FID reference is real two-shape scenes: against themselves (a second draw of the same kind) it is small
    from ldm_lite.metrics import fid
    real = conditional.heldout_shapes(64, 2, start=4)["image"]
    other = conditional.heldout_shapes(64, 2, start=68)["image"]
    with torch.no_grad():
        assert fid(clf.features(real), clf.features(other)) < with_fid["guidance_3"]["fid"]

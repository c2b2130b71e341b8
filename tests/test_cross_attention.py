"""Cross-attention maps recorded during sampling, and the two notebook-05 panels (prompt box, token/step maps)."""

import pytest
import torch

from ldm_lite import conditional, recipes, widgets
from ldm_lite.autoencoder import IdentityAutoencoder


@pytest.fixture(scope="module")
def t2i():
    torch.manual_seed(0)
    ldm = recipes.build_ldm(recipes.config("ldm-kl-f4-shapes32-text", context_dim=32, model_channels=32, resolution=8), IdentityAutoencoder())
    for p in ldm.unet.parameters():  # non-trivial weights: attention that differs between tokens and steps
        torch.nn.init.normal_(p, std=0.1)
    return ldm


def test_attention_over_steps_is_a_distribution_over_tokens_per_pixel(t2i):
    rec = conditional.attention_over_steps(t2i, "a large red circle", steps=4, guidance_scale=3.0)
    assert rec.tokens == ["[CLS]", "a", "large", "red", "circle", "[SEP]"]
    assert rec.maps.shape == (4, 6, 8, 8) and rec.image.shape == (3, 8, 8) and len(rec.timesteps) == 4
    assert rec.timesteps == sorted(rec.timesteps, reverse=True)
    # softmax over all L = max_length keys: the real tokens' weights sum to at most 1 at every pixel
    assert (rec.maps >= 0).all() and (rec.maps.sum(1) <= 1 + 1e-5).all() and rec.maps.sum(1).min() > 0
    assert not torch.allclose(rec.maps[0], rec.maps[-1])  # the maps change with the step
    assert all(m.store_attention is False for m in t2i.unet.cross_attentions().values())  # switched off again
    again = conditional.attention_over_steps(t2i, "a large red circle", steps=4, guidance_scale=3.0)
    assert torch.equal(rec.image, again.image)
    plain = t2i.sample(prompts=["a large red circle"], steps=4, guidance_scale=3.0,
                       generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plain[0], rec.image, atol=1e-5)  # recording does not change the sample


def test_cross_attention_panel_token_and_step_controls_change_the_picture(t2i):
    rec = conditional.attention_over_steps(t2i, "a blue star", steps=3)
    panel = widgets.cross_attention_panel(rec.image, rec.maps, rec.tokens, rec.timesteps)
    image = widgets.find(panel, widgets.IMAGE_CLASS)
    token = widgets.find(panel, widgets.MAIN_CONTROL_CLASS)
    before = image.value
    token.value = 3
    assert image.value != before and "star" in widgets.find(panel, widgets.READOUT_CLASS).value
    step = panel.children[1].children[1]
    before = image.value
    step.value = 1
    assert image.value != before and "t = " in widgets.find(panel, widgets.READOUT_CLASS).value
    with pytest.raises(ValueError, match="tokens"):
        widgets.cross_attention_panel(rec.image, rec.maps, rec.tokens[:-1], rec.timesteps)


def test_the_attention_readout_gives_each_tokens_share_of_all_attention_and_where_it_falls():
    """`attention_on_objects` on a made-up record over a real scene: a token spread evenly scores the covered share
    of the cells; one that looks only at covered cells scores ~1; the padding row takes what the tokens leave."""
    from ldm_lite.datasets import shapes
    from ldm_lite.segmenter import load_segmenter

    item = shapes(32, n=1, seed=3, max_shapes=1)[0]
    cover = torch.nn.functional.avg_pool2d((item["mask"] > 0).float()[None, None], 4)[0, 0]  # (8, 8)
    even = torch.full((8, 8), 0.25)
    on = 0.5 * (cover > 0.5).float()  # only on covered cells; each query's weights still sum to <= 1
    maps = torch.stack([torch.stack([even, on])] * 2)  # (S=2, L=2, 8, 8)
    rec = conditional.AttentionRecord(item["image"], maps, ["[CLS]", "star"], [999, 0])
    rows = conditional.attention_on_objects(rec, load_segmenter())
    assert [r["token"] for r in rows] == ["[CLS]", "star", "(padding)"]
    assert abs(rows[0]["object_cells"] - float(cover.mean())) < 0.03  # the segmenter finds the shape's cells
    assert abs(rows[0]["mass_last"] - 0.25) < 1e-6 and abs(rows[1]["mass_first"] - float(on.mean())) < 1e-6
    assert abs(rows[0]["on_objects_last"] - rows[0]["object_cells"]) < 1e-5 and rows[1]["on_objects_last"] > 0.6
    assert abs(rows[2]["mass_last"] - (1 - 0.25 - float(on.mean()))) < 1e-5
    panel = widgets.cross_attention_panel(rec.image, rec.maps, rec.tokens, rec.timesteps, note="measured: 42%")
    readout = widgets.find(panel, widgets.READOUT_CLASS).value
    assert f"share of all attention {float(on.mean()):.1%} (padding positions: {1 - 0.25 - float(on.mean()):.0%})" \
        in readout  # the token shown first: 'star'
    assert "measured: 42%" in panel.children[0].value


def test_each_panel_can_state_the_measured_accuracy_of_the_shipped_model(tmp_path, monkeypatch):
    from ldm_lite import paths

    (tmp_path / "ldm-x").mkdir()
    (tmp_path / "ldm-x" / "metrics.json").write_text(
        '{"n": 100, "sample_options": {"sampler": "dpm_solver_pp", "steps": 20}, '
        '"guidance_1": {"single_kind_and_color": 0.65, "two_all_and_relation": 0.06, "fid": 44.7}, '
        '"guidance_3": {"single_kind_and_color": 0.91, "two_all_and_relation": 0.13}}')
    monkeypatch.setattr(paths, "PRETRAINED_DIR", tmp_path)
    note = conditional.measured_note("ldm-x", "shipped (ldm-x)")
    assert note == ("Measured for the shipped ldm-x (100 held-out conditions per scale, dpm_solver_pp 20 steps; its "
                    "metrics.json) — one shape: kind + colour / two shapes + relation: 65% / 6% at guidance 1, "
                    "91% / 13% at guidance 3.")
    assert conditional.measured_note("ldm-x", "trained now (300 steps, outputs/ldm-x)").startswith("Not measured")
    assert conditional.measured_note("ldm-y", "shipped (ldm-y)").startswith("Not measured")  # no metrics.json


def test_prompt_panel_generates_on_prompt_and_guidance_changes(t2i):
    calls = []

    def generate(prompt, scale):
        calls.append((prompt, scale))
        return t2i.sample(prompts=[prompt] * 2, steps=2, guidance_scale=scale,
                          generator=torch.Generator().manual_seed(0))

    panel = widgets.prompt_panel(generate, "a red circle", guidance=3.0)
    image = widgets.find(panel, widgets.IMAGE_CLASS)
    box = widgets.find(panel, widgets.MAIN_CONTROL_CLASS)
    before = image.value
    box.value = "a small green cross"
    assert image.value != before and calls[-1] == ("a small green cross", 3.0)
    panel.children[1].children[1].value = 0.0
    assert calls[-1] == ("a small green cross", 0.0)
    with pytest.raises(ValueError, match="generate"):
        widgets.prompt_panel(lambda p, s: torch.zeros(2, 3), "x")


def test_layout_map_and_layout_pictures_for_the_panel():
    from ldm_lite.datasets import boxes_from_attrs, shapes

    item = shapes(32, n=1, seed=5, max_shapes=2)[0]
    boxes, labels = boxes_from_attrs(item["attrs"][None])
    m = conditional.layout_map(boxes[0], labels[0])
    assert m.shape == (32, 32)
    for k in labels[0][labels[0] >= 0].tolist():  # the mask's pixels of each shape lie inside its drawn box
        assert (m[item["mask"] == k + 1] > 0).float().mean() > 0.9
    torch.manual_seed(0)
    ldm = recipes.build_ldm(recipes.config("ldm-kl-f4-shapes32-layout", context_dim=32, model_channels=32), IdentityAutoencoder())
    pictures, text = conditional.layout_pictures(ldm, 2, guidance_scale=2.0, n=2, steps=2)
    assert list(pictures) == ["requested layout", "a real scene", "sample 0 (s=2)", "sample 1 (s=2)"]
    assert pictures["requested layout"].ndim == 2 and pictures["sample 0 (s=2)"].shape == (3, 32, 32)
    assert text.startswith("requested: ")


def test_without_context_the_cross_attention_sublayer_is_skipped_where_the_reference_self_attends():
    """docs/differences.md: the reference's BasicTransformerBlock runs attn2 with `context = default(context, x)`,
    i.e. self-attention through the cross-attention weights; the kit skips the sub-layer."""
    from ldm_lite.attention import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, head_dim=16, context_dim=None).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 6, 32)
    h = x + block.attn1(block.norm1(x))
    skipped = h + block.ff(block.norm3(h))
    torch.testing.assert_close(block(x), skipped)
    h_ref = h + block.attn2(block.norm2(h), block.norm2(h))  # the reference: K, V from the (normed) image tokens
    assert not torch.allclose(block(x), h_ref + block.ff(block.norm3(h_ref)), atol=1e-3)
    c = torch.randn(2, 4, 32)  # with a context both compute the same cross-attention
    h_c = h + block.attn2(block.norm2(h), c)
    torch.testing.assert_close(block(x, c), h_c + block.ff(block.norm3(h_c)))

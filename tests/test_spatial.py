"""Spatial (concat) conditioners: shapes and values of c_concat, the UNet sees [z_t, c_concat], checkpoints round-trip,
sampling larger than the training size, clear errors, training data, and SDEdit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

import ldm_lite as ll
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig
from ldm_lite.conditioning import CONDITIONERS, Condition
from ldm_lite.datasets import InpaintingMasks, SuperResolutionPairs, inpaint_mask
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.spatial import (
    InpaintingConditioner,
    SemanticConditioner,
    SuperResolutionConditioner,
    SuperResolutionConfig,
    sdedit,
)
from ldm_lite.unet import UNet, UNetConfig


def tiny_ldm(conditioner, f_levels=(1, 1, 1)):
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(base_channels=16, channel_mult=f_levels, norm_groups=8))  # f = 4
    ae.scale_factor.fill_(0.7)
    unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(2,), head_dim=16, norm_groups=8,
                           concat_channels=conditioner.concat_channels))
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)  # not the zero init: the output depends on the input
    return LatentDiffusion(ae, unet, conditioner, image_size=16, cond_drop_prob=0.0).eval()


def shapes_batch(n=2, res=16):
    ds = ll.datasets.shapes(res, n=n, seed=3)
    return default_collate([ds[i] for i in range(n)])


def test_conditioners_are_registered():
    for cls in (SuperResolutionConditioner, InpaintingConditioner, SemanticConditioner):
        assert CONDITIONERS[cls.__name__] is cls


def test_super_resolution_is_a_no_op_resize_when_factor_equals_f():
    ldm = tiny_ldm(SuperResolutionConditioner())  # factor 4 on f = 4
    lowres = torch.rand(2, 3, 4, 4) * 2 - 1
    cond = ldm.conditioner({"lowres": lowres})
    assert cond.context is None and torch.equal(cond.concat, lowres)
    # factor 2 on f = 4: an 8x8 low-res image for a 16x16 output is resized (bicubic) to the 4x4 latent
    ldm2 = tiny_ldm(SuperResolutionConditioner(SuperResolutionConfig(factor=2)))
    y = torch.rand(2, 3, 8, 8) * 2 - 1
    c2 = ldm2.conditioner({"lowres": y}).concat
    ref = F.interpolate(y, size=(4, 4), mode="bicubic", align_corners=False, antialias=True)
    assert c2.shape == (2, 3, 4, 4) and torch.allclose(c2, ref)


def test_inpainting_condition_is_masked_latent_and_pooled_mask():
    ldm = tiny_ldm(InpaintingConditioner())
    b = shapes_batch()
    m = torch.zeros(2, 16, 16)
    m[:, :8, :4] = 1  # top-left: latent cells (0,0), (1,0) fully missing
    cond = ldm.conditioner({"image": b["image"], "inpaint_mask": m})
    assert cond.concat.shape == (2, 4, 4, 4)
    z = ldm.autoencoder.to_latent(b["image"] * (1 - m[:, None]), sample=False)
    assert torch.allclose(cond.concat[:, :3], z)
    expected = torch.zeros(2, 4, 4)
    expected[:, :2, 0] = 1
    assert torch.equal(cond.concat[:, 3], expected)
    # the hole's content does not reach the condition
    other = b["image"].clone()
    other[:, :, :8, :4] = 0.5
    assert torch.allclose(ldm.conditioner({"image": other, "inpaint_mask": m}).concat, cond.concat)


def test_semantic_condition_is_area_pooled_one_hot():
    ldm = tiny_ldm(SemanticConditioner())
    seg = torch.zeros(1, 16, 16, dtype=torch.long)
    seg[0, :2, :4] = 3  # half of latent cell (0, 0) is class 3 (triangle)
    c = ldm.conditioner({"mask": seg}).concat
    assert c.shape == (1, 7, 4, 4)
    assert c[0, 3, 0, 0] == 0.5 and c[0, 0, 0, 0] == 0.5 and c[0, 0, 1:, :].eq(1).all()
    assert torch.allclose(c.sum(1), torch.ones(1, 4, 4))


@pytest.mark.parametrize("make", [SuperResolutionConditioner, InpaintingConditioner, SemanticConditioner])
def test_concat_reaches_the_unet_and_round_trips(tmp_path, make):
    ldm = tiny_ldm(make())
    b = shapes_batch()
    b["lowres"] = ll.datasets.bicubic_degradation(b["image"], 4)
    b["inpaint_mask"] = torch.zeros(2, 16, 16)
    b["inpaint_mask"][:, 4:12, 4:12] = 1
    cond = ldm.condition(b, 2)
    z, t = torch.randn(2, 3, 4, 4), torch.tensor([10, 500])
    assert torch.equal(ldm.denoiser(z, t, cond), ldm.unet(torch.cat([z, cond.concat], 1), t, None))
    changed = Condition(concat=cond.concat + 1)
    assert not torch.allclose(ldm.denoiser(z, t, changed), ldm.denoiser(z, t, cond))  # the condition matters
    loss = ldm.loss(b, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    ldm.save_pretrained(tmp_path / "m")
    again = LatentDiffusion.from_pretrained(tmp_path / "m")
    assert type(again.conditioner) is type(ldm.conditioner) and not again.training
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sample_batch = {k: b[k] for k in ("lowres", "image", "inpaint_mask", "mask")}
    x1 = ldm.sample(batch=sample_batch, steps=3, generator=g())
    x2 = again.sample(batch=sample_batch, steps=3, generator=g())
    assert x1.shape == (2, 3, 16, 16) and torch.allclose(x1, x2, atol=1e-5)


def test_spatial_condition_sets_the_sampling_size():
    ldm = tiny_ldm(SemanticConditioner())
    seg = torch.zeros(1, 32, 32, dtype=torch.long)  # trained at 16: sample 32 from a larger map
    seg[0, 8:20, 8:20] = 2
    z = ldm.sample(batch={"mask": seg}, steps=2, return_latents=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's f=4"):
        ldm.sample(batch={"mask": torch.zeros(1, 30, 30, dtype=torch.long)}, steps=2)
    with pytest.raises(ValueError, match="leave size out"):
        ldm.sample(batch={"mask": seg}, steps=2, size=16)
    with pytest.raises(ValueError, match="sampling size 30 is not divisible by the autoencoder's f=4; use 28"):
        ldm.sample(batch={"mask": seg}, steps=2, size=30)


def test_clear_errors_for_bad_inputs():
    sr = tiny_ldm(SuperResolutionConditioner())
    with pytest.raises(ValueError, match=r"low-res images must be \(B, 3"):
        sr.conditioner({"lowres": torch.zeros(1, 1, 4, 4)})
    with pytest.raises(ValueError, match="the low-res side must be 4"):
        sr.conditioner({"lowres": torch.zeros(1, 3, 8, 8), "image": torch.zeros(1, 3, 16, 16)})
    with pytest.raises(ValueError, match="pass batch"):
        sr.conditioner({"image": torch.zeros(1, 3, 16, 16)})
    inp = tiny_ldm(InpaintingConditioner())
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="must be binary"):
        inp.conditioner({"image": x, "inpaint_mask": torch.full((1, 16, 16), 0.5)})
    with pytest.raises(ValueError, match="like the images"):
        inp.conditioner({"image": x, "inpaint_mask": torch.zeros(1, 8, 8)})
    sem = tiny_ldm(SemanticConditioner())
    bad = torch.zeros(1, 16, 16, dtype=torch.long)
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"unknown classes \[9\].*0=background"):
        sem.conditioner({"mask": bad})
    with pytest.raises(ValueError, match="latent channels"):
        InpaintingConditioner(ll.spatial.InpaintingConfig(latent_channels=4)).attach_autoencoder(inp.autoencoder)


def test_training_data_adds_the_condition_fields():
    ds = ll.datasets.shapes(16, n=4, seed=0)
    bic = SuperResolutionPairs(ds, "bicubic")[1]
    assert torch.equal(bic["lowres"], ll.datasets.bicubic_degradation(ds[1]["image"][None], 4)[0])
    real = SuperResolutionPairs(ds, "realistic")
    assert real[1]["lowres"].shape == (3, 4, 4) and torch.equal(real[1]["lowres"], real[1]["lowres"])  # reproducible
    assert not torch.allclose(real[1]["lowres"], bic["lowres"])
    items = [InpaintingMasks(ds, kinds=(k,))[2] for k in ("box", "strokes", "shape")]
    for it in items:
        m = it["inpaint_mask"]
        assert m.shape == (16, 16) and set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0
    # "remove one shape": the mask covers every pixel of one kind present in the segmentation map
    seg = items[2]["mask"]
    covered = [k for k in seg.unique().tolist() if k > 0 and bool(items[2]["inpaint_mask"][seg == k].eq(1).all())]
    assert covered
    with pytest.raises(ValueError, match="unknown mask kind"):
        inpaint_mask("blob", 16, np.random.default_rng(0))


def test_sdedit_strength_zero_is_the_reconstruction_and_one_forgets_the_input():
    ldm = tiny_ldm(SemanticConditioner())
    b = shapes_batch()
    x = b["image"]
    rec = ldm.decode(ldm.autoencoder.to_latent(x, sample=False))
    assert torch.allclose(sdedit(ldm, x, 0.0, batch=b), rec)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    small = sdedit(ldm, x, 0.1, batch=b, steps=10, generator=g())
    big = sdedit(ldm, x, 1.0, batch=b, steps=10, generator=g())
    assert (small - rec).abs().mean() < (big - rec).abs().mean()  # more strength, further from the input
    # strength 1 starts from z_T ≈ noise: two different inputs give nearly the same image from the same noise
    other = sdedit(ldm, -x, 1.0, batch=b, steps=10, generator=g())
    assert (other - big).abs().mean() < 0.1 * (rec - ldm.decode(ldm.autoencoder.to_latent(-x, sample=False))).abs().mean()
    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\]"):
        sdedit(ldm, x, 1.5, batch=b)


def test_scene_map_and_sr_controls():
    from ldm_lite import image_to_image as i2i

    seg = i2i.scene_map([("star", 0.25, 0.25, "large"), ("circle", 0.75, 0.75, "small")], 32)
    assert seg.shape == (32, 32) and seg[8, 8] == 1 + ll.datasets.KINDS.index("star") and seg[24, 24] == 1
    assert seg[8, 24] == 0 and seg[24, 8] == 0
    big = i2i.scene_map([("circle", 0.5, 0.5, "large")], 64, canvas=2)
    small = i2i.scene_map([("circle", 0.5, 0.5, "large")], 32)
    assert int((big > 0).sum()) == pytest.approx(int((small > 0).sum()), rel=0.1)  # canvas: the same pixel size
    with pytest.raises(ValueError, match="kind in"):
        i2i.scene_map([("blob", 0.5, 0.5, "large")])
    hr = ll.datasets.shapes(32, n=2, seed=0)[0]["image"][None]
    lows = {k: i2i.sr_degrade(hr, k, 1.0) for k in i2i.SR_CONTROLS}
    assert all(v.shape == (1, 3, 8, 8) for v in lows.values())
    for k in ("blur", "noise", "jpeg"):  # each control changes the input away from plain bicubic
        assert not torch.allclose(lows[k], lows["bicubic"], atol=1e-3)
    assert torch.allclose(i2i.sr_degrade(hr, "blur", 0.0), ll.datasets.fixed_degradation(hr, blur=0.3))


def test_sample_to_file_reads_pngs_and_names_bad_inputs(tmp_path):
    from PIL import Image

    from ldm_lite import image_to_image as i2i

    for make, task in ((SuperResolutionConditioner, "sr"), (InpaintingConditioner, "inpaint"),
                       (SemanticConditioner, "semantic")):
        tiny_ldm(make()).save_pretrained(tmp_path / task)
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "low.png")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "grey.png")
    out = i2i.sample_to_file("sr", tmp_path / "sr.png", lowres=str(tmp_path / "low.png"), model=tmp_path / "sr", steps=2)
    assert Image.open(out).size == (16, 16)
    with pytest.raises(ValueError, match="has 1 channel"):
        i2i.sample_to_file("sr", tmp_path / "x.png", lowres=str(tmp_path / "grey.png"), model=tmp_path / "sr")
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "img.png")
    m = np.zeros((16, 16), np.uint8)
    m[4:12, 4:12] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    i2i.sample_to_file("inpaint", tmp_path / "in.png", image=str(tmp_path / "img.png"), mask=str(tmp_path / "mask.png"),
                       model=tmp_path / "inpaint", steps=2)
    m[0, 0] = 7
    Image.fromarray(m).save(tmp_path / "bad_mask.png")
    with pytest.raises(ValueError, match="must be binary"):
        i2i.sample_to_file("inpaint", tmp_path / "x.png", image=str(tmp_path / "img.png"),
                           mask=str(tmp_path / "bad_mask.png"), model=tmp_path / "inpaint")
    seg = np.zeros((32, 32), np.uint8)
    seg[8:16, 8:16] = 2
    Image.fromarray(seg).save(tmp_path / "map.png")
    out = i2i.sample_to_file("semantic", tmp_path / "sem.png", seg_map=str(tmp_path / "map.png"),
                             model=tmp_path / "semantic", steps=2)
    assert Image.open(out).size == (32, 32)  # a tiny model trained at 16 samples 32 from a 32x32 map
    seg[0, 0] = 12
    Image.fromarray(seg).save(tmp_path / "bad_map.png")
    with pytest.raises(ValueError, match=r"unknown classes \[12\]"):
        i2i.sample_to_file("semantic", tmp_path / "x.png", seg_map=str(tmp_path / "bad_map.png"),
                           model=tmp_path / "semantic")


def test_known_latents_keep_exactly_the_cells_without_missing_pixels():
    from ldm_lite.spatial import known_latents

    ldm = tiny_ldm(InpaintingConditioner())
    x = shapes_batch()["image"]
    m = torch.zeros(2, 16, 16)
    m[:, :5, :5] = 1  # touches latent cells (0,0), (0,1), (1,0), (1,1)
    cond = ldm.conditioner({"image": x, "inpaint_mask": m})
    z_known, keep = known_latents(cond)
    hole = torch.zeros(4, 4, dtype=torch.bool)
    hole[:2, :2] = True
    assert keep.shape == (2, 1, 4, 4) and bool((keep[:, 0, hole] == 0).all()) and bool((keep[:, 0, ~hole] == 1).all())
    assert torch.equal(z_known, cond.concat[:, :3])
    # replacement sampling: a deterministic sampler ends with the known latent on the kept cells, the rest sampled
    g = torch.Generator().manual_seed(0)
    z0 = ldm.sample(batch={"image": x, "inpaint_mask": m}, steps=4, known=(z_known, keep), generator=g,
                    return_latents=True)
    free = ldm.sample(batch={"image": x, "inpaint_mask": m}, steps=4, generator=torch.Generator().manual_seed(0),
                      return_latents=True)
    torch.testing.assert_close(z0[:, :, ~hole], z_known[:, :, ~hole], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(free[:, :, ~hole], z_known[:, :, ~hole], atol=1e-3)
    assert not torch.allclose(z0[:, :, hole], z_known[:, :, hole], atol=1e-3)
    with pytest.raises(ValueError, match="known=.*must be latents"):
        ldm.sample(batch={"image": x, "inpaint_mask": m}, steps=2, known=(z_known[:1], keep))


def test_image_to_image_training_can_start_from_saved_weights(tmp_path):
    from ldm_lite import recipes as R

    semantic = str(ll.paths.pretrained("ldm-semantic-shapes32"))
    shipped = R.load(semantic)
    kw = {"steps": 1, "n_train": 16, "batch_size": 4, "warmup": 1, "lr": 1e-9, "device": "cpu"}
    tuned = R.train("ldm-semantic-shapes32", tmp_path / "ft", progress=False, init_from=semantic, **kw).model
    fresh = R.build_ldm(R.config("ldm-semantic-shapes32"))
    w = "unet.conv_in.weight"
    assert torch.allclose(tuned.state_dict()[w], shipped.state_dict()[w], atol=1e-6)  # lr ~0: still the start
    assert not torch.allclose(fresh.state_dict()[w], shipped.state_dict()[w], atol=1e-3)
    with pytest.raises(ValueError, match="init_from=.*same recipe"):
        R.train("ldm-sr4-bicubic-shapes32", tmp_path / "bad", progress=False, init_from=semantic, **kw)
    other = R.build_ldm(R.config("ldm-semantic-shapes32"))  # the same architecture on the paper's β: refused
    LatentDiffusion(other.autoencoder, other.unet, other.conditioner, ll.schedule.Schedule.ldm(), image_size=32,
                    cond_drop_prob=0.0).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="schedule"):
        R.train("ldm-semantic-shapes32", tmp_path / "bad1", progress=False, init_from=str(tmp_path / "other"), **kw)


def test_inpainting_batch_is_the_studys_held_out_masked_images():
    from ldm_lite import image_to_image

    a, b = image_to_image.inpainting_batch(6, "box"), image_to_image.inpainting_batch(6, "box")
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["inpaint_mask"], b["inpaint_mask"])  # fixed seed
    m = a["inpaint_mask"]
    assert m.shape == (6, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert ((m.mean((1, 2)) > 0.02) & (m.mean((1, 2)) < 0.8)).all()  # every image has a hole, none is all hole
    strokes = image_to_image.inpainting_batch(6, "shape")
    assert torch.equal(strokes["image"], a["image"]) and not torch.equal(strokes["inpaint_mask"], m)
    # the held-out images and masks are the ones `datasets` draws for the one held-out seed
    item = ll.datasets.shapes(32, n=6, seed=ll.datasets.HELDOUT_SEED, max_shapes=1)[2]
    assert torch.equal(a["image"][2], item["image"])
    want = inpaint_mask("shape", 32, np.random.default_rng([ll.datasets.HELDOUT_SEED, 7, 2]), item["mask"].numpy())
    assert torch.equal(strokes["inpaint_mask"][2], torch.from_numpy(want))

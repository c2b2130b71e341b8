"""Grounding scores (does an image show its caption / layout?) checked against the dataset's own truth."""

import pytest
import torch

from ldm_lite.conditional import heldout_shapes
from ldm_lite.datasets import boxes_from_attrs
from ldm_lite.grounding import caption_agreement, components, find_objects, layout_agreement, relation_holds


def test_components_label_4_connected_regions():
    m = torch.zeros(1, 6, 6, dtype=torch.bool)
    m[0, 0:2, 0:2] = True  # a block
    m[0, 4, 0:4] = True  # an L: one component
    m[0, 2:4, 3] = True
    m[0, 0, 5] = True  # touches nothing (diagonals do not connect)
    m[0, 1, 4] = True
    lab = components(m)
    assert (lab[~m] == 0).all()
    assert len(lab[m].unique()) == 4
    assert len(lab[0, 4, 0:4].unique()) == 1 and lab[0, 2, 3] == lab[0, 4, 0]


@pytest.mark.parametrize("relation, a, b, ok", [
    ("left of", (0.2, 0.5), (0.7, 0.5), True), ("left of", (0.7, 0.5), (0.2, 0.5), False),
    ("above", (0.5, 0.2), (0.5, 0.8), True), ("below", (0.5, 0.2), (0.5, 0.8), False),
    ("left of", (0.2, 0.2), (0.6, 0.62), True),  # near the diagonal: either axis counts
    ("left of", (0.45, 0.1), (0.5, 0.8), False),  # clearly above, not left of
])
def test_relation_holds(relation, a, b, ok):
    assert relation_holds(relation, a, b) is ok


@pytest.mark.parametrize("count", [1, 2, 3])
def test_true_masks_ground_every_caption_and_layout(count):
    b = heldout_shapes(40, count)
    found = find_objects(b["image"], b["mask"])
    assert caption_agreement(b["attrs"], found)["all_and_relation"] == 1.0
    boxes, labels = boxes_from_attrs(b["attrs"])
    assert layout_agreement(boxes, labels, found)["objects_found"] == 1.0
    # a caption that states another colour, or the wrong relation, is not found
    wrong = b["attrs"].clone()
    wrong[:, 0, 1] = (wrong[:, 0, 1] + 1) % 8
    assert caption_agreement(wrong, found)["all_attributes"] == 0.0
    moved = boxes.clone()
    moved[:, 0, [0, 2]] = torch.where(moved[:, 0, :1] > 0.5, moved[:, 0, [0, 2]] - 0.45, moved[:, 0, [0, 2]] + 0.45)
    assert layout_agreement(moved, labels, found)["objects_found"] <= 1 - 1 / count + 1e-6
    if count >= 2:
        keep = torch.nonzero(b["attrs"][:, 1, 0] >= 0).flatten().tolist()  # ("no room" leaves a few with fewer)
        assert len(keep) > 30
        swapped = b["attrs"][keep].clone()
        swapped[:, [0, 1], 3:] = swapped[:, [1, 0], 3:]  # same shapes, positions exchanged: relation reversed
        assert caption_agreement(swapped, [found[i] for i in keep])["all_and_relation"] == 0.0


def test_shipped_mnist_classifier_reads_held_out_digits():
    from ldm_lite.classifier import MNISTClassifier
    from ldm_lite.datasets import mnist
    from ldm_lite.paths import pretrained

    clf = MNISTClassifier.from_pretrained(pretrained("mnist-classifier-32"))
    assert not clf.training
    test = mnist(32, channels=3, split="test", source="offline")  # RGB like the LDM's samples: channels averaged
    x = torch.stack([test[i]["image"] for i in range(len(test))])
    y = torch.tensor([test[i]["label"] for i in range(len(test))])
    assert float((clf.predict(x) == y).float().mean()) >= 0.95
    assert clf.features(x[:4]).shape == (4, 128)


def test_shipped_segmenter_grounds_held_out_two_shape_captions():
    from ldm_lite.segmenter import load_segmenter

    b = heldout_shapes(60, 2)
    found = find_objects(b["image"], load_segmenter().predict(b["image"]))
    assert caption_agreement(b["attrs"], found)["all_and_relation"] >= 0.95  # measured: 100% of 200

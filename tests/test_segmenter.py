"""ShapesSegmenter: IoU against a hand count, shapes of the net, it learns, and the shipped one is validated on
held-out real images (the judge behind semantic-synthesis scores)."""

import pytest
import torch

import ldm_lite as ll
from ldm_lite.paths import PRETRAINED_DIR
from ldm_lite.segmenter import SHIPPED, ShapesSegmenter, ShapesSegmenterConfig, iou_scores, train_segmenter


def test_iou_scores_against_a_hand_count():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 0], [0, 0, 1, 0], [2, 2, 2, 0], [0, 0, 0, 0]]])
    s = iou_scores(pred, target)
    # background: 7 shared of 8 (target) and 11 (pred) -> 7 / 12; class 1: 2 / 4; class 2: 2 / 5
    assert s["iou"]["background"] == pytest.approx(7 / 12) and s["iou"]["circle"] == pytest.approx(2 / 4)
    assert s["iou"]["square"] == pytest.approx(2 / 5) and s["iou"]["star"] is None
    assert s["mean_iou"] == pytest.approx((7 / 12 + 0.5 + 0.4) / 3)
    assert s["pixel_accuracy"] == pytest.approx(11 / 16) and s["foreground_iou"] == pytest.approx(4 / 9)
    assert iou_scores(target, target)["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        iou_scores(pred, target[:, :2])


def test_segmenter_shapes_errors_and_learning():
    seg = ShapesSegmenter(ShapesSegmenterConfig(width=8))
    assert seg(torch.zeros(2, 3, 64, 32)).shape == (2, 7, 64, 32)  # fully convolutional
    with pytest.raises(ValueError, match="divisible by 4"):
        seg(torch.zeros(1, 3, 30, 30))
    torch.set_num_threads(1)
    _, hist = train_segmenter(steps=25, batch_size=8, width=8, progress=False)
    assert hist["loss"][-1] < 0.9 * hist["loss"][0]  # cross-entropy falls from ~log 7


@pytest.mark.skipif(not (PRETRAINED_DIR / SHIPPED).is_dir(), reason="no shipped segmenter")
def test_shipped_segmenter_reads_held_out_real_images():
    seg = ll.segmenter.load_segmenter()
    assert not seg.training
    s = ll.segmenter.evaluate_segmenter(seg, n=200, seed=777)
    assert s["mean_iou"] >= 0.9 and s["pixel_accuracy"] >= 0.95

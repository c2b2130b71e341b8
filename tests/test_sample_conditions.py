"""`LatentDiffusion.sample` takes each condition by name (prompts, labels, layout, low_res, image + mask,
semantic_map) as well as `batch=`: the named form gives exactly the samples of the batch form, on every shipped
conditional model; and no image with NaN leaves `sample()`."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from ldm_lite.errors import NonFiniteError
from ldm_lite.ldm import LatentDiffusion

PRETRAINED = Path(__file__).resolve().parent.parent / "data" / "pretrained"


@functools.cache
def shipped(name: str) -> LatentDiffusion:
    return LatentDiffusion.from_pretrained(PRETRAINED / name)


def _inputs():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], [[0.2, 0.3, 0.7, 0.8], [0, 0, 0, 0]]])
    classes = torch.tensor([[0, 3], [2, -1]])
    image = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    mask = torch.zeros(2, 32, 32)
    mask[:, 8:20, 10:24] = 1
    seg = torch.zeros(2, 32, 32, dtype=torch.long)
    seg[0, 4:16, 4:16], seg[1, 10:30, 2:20] = 1, 4
    return {
        "ldm-kl-f4-shapes32-text": ({"prompts": ["a large red circle", "a small blue star"]},
                                    {"caption": ["a large red circle", "a small blue star"]}),
        "ldm-kl-f4-mnist32-class": ({"labels": [3, 7]}, {"label": torch.tensor([3, 7])}),
        "ldm-kl-f4-shapes32-layout": ({"layout": (boxes, classes)}, {"boxes": boxes, "box_labels": classes}),
        "ldm-sr4-bicubic-shapes32": ({"low_res": image[:, :, ::4, ::4]}, {"lowres": image[:, :, ::4, ::4]}),
        "ldm-inpaint-shapes32": ({"image": image, "mask": mask}, {"image": image, "inpaint_mask": mask}),
        "ldm-semantic-shapes32": ({"semantic_map": seg}, {"mask": seg}),
    }


@pytest.mark.parametrize("model", list(_inputs()))
def test_a_named_condition_samples_what_the_batch_form_samples(model):
    named, batch = _inputs()[model]
    ldm = shipped(model)
    opts = {"steps": 2, "guidance_scale": 2.0 if ldm.config.cond_drop_prob > 0 else 1.0}  # concat models: no ∅
    x = ldm.sample(**named, generator=0, **opts)
    assert x.shape == (2, 3, 32, 32) and bool(torch.isfinite(x).all())
    assert torch.equal(x, ldm.sample(batch=batch, generator=torch.Generator().manual_seed(0), **opts))
    # the condition matters: another one gives other samples from the same noise
    other = {k: (v[::-1] if isinstance(v, list) else v.flip(0) if torch.is_tensor(v) else tuple(t.flip(0) for t in v))
             for k, v in named.items()}
    assert not torch.equal(x, ldm.sample(**other, generator=0, **opts))


def test_the_named_condition_of_another_model_names_what_this_one_takes():
    with pytest.raises(ValueError, match=r"SemanticConditioner\) takes semantic_map=.*not image, mask"):
        shipped("ldm-semantic-shapes32").sample(image=torch.zeros(1, 3, 32, 32), mask=torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match=r"ClassConditioner\) takes labels=.*not prompts"):
        shipped("ldm-kl-f4-mnist32-class").sample(prompts=["a seven"])


def test_no_image_with_nan_leaves_sample(monkeypatch):
    """A decoder that returns NaN from a finite latent (broken weights loaded without from_pretrained) is an error."""
    ldm = shipped("ldm-kl-f4-shapes32")
    monkeypatch.setattr(ldm.autoencoder, "from_latent", lambda z: torch.full((z.shape[0], 3, 32, 32), float("nan")))
    with pytest.raises(NonFiniteError, match="decoder returned NaN"):
        ldm.sample(1, steps=2)


def test_nan_weights_put_in_by_hand_stop_the_sampler_at_the_first_step():
    ldm = LatentDiffusion.from_pretrained(PRETRAINED / "ldm-kl-f4-shapes32")
    with torch.no_grad():
        ldm.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"ddim: the latent became NaN/inf at step 0 of 3 \(t=666\)"):
        ldm.sample(1, steps=3)

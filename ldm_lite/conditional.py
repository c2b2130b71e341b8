"""Judging and showing the cross-attention models (LDM §3.3, §4.3): text-to-image, layout-to-image and
class-conditional (MNIST digits, `shapes` kinds), each with the frozen judge its condition needs, on held-out
conditions, at any image side (the judges see samples resized to their 32×32, `judge_view`); attention maps per
step and layout pictures for the notebook panels. Building and training them: `ldm_lite.recipes`
(`ldm-lite train ldm-kl-f4-shapes32-text`).

    ldm, _ = recipes.load_or_train("ldm-kl-f4-shapes32-text")
    results = evaluate(ldm, n=100, guidance_scales=(1, 3))   # {"condition_kind", "judge", "guidance_1": {...}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from . import grounding, paths
from .checkpoint import read_json
from .classifier import MNISTClassifier
from .conditioning import ClassConditioner, LayoutConditioner, LayoutTokenConditioner
from .datasets import HELDOUT_SEED, KINDS, NUMBER_WORDS, boxes_from_attrs, mnist, shapes
from .errors import UsageError
from .evaluation import FID_FEATURES, sample_many
from .ldm import LatentDiffusion
from .metrics import fid
from .paths import pretrained
from .recipes import get_classifier
from .segmenter import load_segmenter
from .text import FrozenTextConditioner, TextConditioner

log = logging.getLogger(__name__)


# ============================================================================================== judging samples
JUDGE_SIDE = 32  # the frozen judges (ShapesClassifier, ShapesSegmenter) were trained on 32×32 `shapes`


def heldout_shapes(n: int, shapes_per_image: int, start: int = 0, resolution: int = 32) -> dict[str, Any]:
    """A batch of held-out `shapes` items `start` .. `start + n - 1` (seed `datasets.HELDOUT_SEED`) with exactly
    `shapes_per_image` shapes (image, caption, attrs, mask); the same scenes (captions, boxes) at every
    `resolution`."""
    ds = shapes(resolution, n=start + n, seed=HELDOUT_SEED, max_shapes=shapes_per_image, min_shapes=shapes_per_image)
    return default_collate([ds[i] for i in range(start, start + n)])


def judge_view(x: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) as the judges see them: resized (anti-aliased) to JUDGE_SIDE × JUDGE_SIDE, so a 64×64
    model is judged like a 32×32 one (a `shapes` item looks the same at every resolution; the segmenter, trained
    on 32×32 scenes, would otherwise see every shape twice as large as it learnt them)."""
    if x.shape[-2:] == (JUDGE_SIDE, JUDGE_SIDE):
        return x
    return F.interpolate(x.float(), size=(JUDGE_SIDE, JUDGE_SIDE), mode="bilinear", antialias=True,
                         align_corners=False).clamp(-1, 1)


def _real_side(ldm: LatentDiffusion) -> int:
    """The side of the real held-out images a model is compared with: its own, but never below the judges' (a
    16×16 scene is not one they can read; a smaller model's samples are enlarged to JUDGE_SIDE instead)."""
    return max(ldm.config.image_size, JUDGE_SIDE)


def _fid(real: torch.Tensor, fake: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor]) -> float:
    with torch.no_grad():
        return float(fid(torch.cat([features(b) for b in real.split(256)]),
                         torch.cat([features(b) for b in fake.split(256)])))


def evaluate_text(ldm: LatentDiffusion, classifier: nn.Module, segmenter: nn.Module | None = None, n: int = 100,
                  guidance_scales: tuple[float, ...] = (1.0, 3.0), n_real: int = 1000, seed: int = 0,
                  **sample_options: Any) -> dict:
    """Text-to-image on held-out captions at each guidance scale.

    Single-shape captions: the share of samples whose kind and colour (and size) the frozen `ShapesClassifier`
    reads as asked, and FID on its features against `n_real` held-out real single-shape images (the first `n_real`
    of the held-out stream: the unconditional judge's reference too; the captions are the items after them). Two-shape
    captions (with a segmenter, `ldm_lite.grounding`): the share where every stated shape and the relation are
    found. Each scorer is first run on held-out real images (`scorer_on_real`): its agreement with the truth.
    Real images are drawn at the model's side (`_real_side`) and every image is judged through `judge_view`."""
    side = _real_side(ldm)
    real, one = heldout_shapes(n_real, 1, resolution=side), heldout_shapes(n, 1, start=n_real, resolution=side)
    real["image"] = judge_view(real["image"])
    judged = classifier.judge(judge_view(one["image"]))
    truth = one["attrs"][:, 0]
    out: dict[str, Any] = {"n": n, "n_real": n_real, "sample_options": sample_options, "scorer_on_real": {
        "classifier_kind_and_color": float(((judged["kind"] == truth[:, 0]) & (judged["color"] == truth[:, 1]))
                                           .float().mean())}}
    two = heldout_shapes(n, 2, resolution=side) if segmenter is not None else None
    if two is not None:
        two_real = judge_view(two["image"])
        found = grounding.find_objects(two_real, segmenter.predict(two_real))
        out["scorer_on_real"]["segmenter_two_shapes"] = grounding.caption_agreement(two["attrs"], found)[
            "all_and_relation"]
    for s in guidance_scales:
        row: dict[str, Any] = {}
        x = judge_view(sample_many(ldm, batch={"caption": one["caption"]}, guidance_scale=s, seed=seed,
                                   **sample_options))
        j = classifier.judge(x)
        kind, color, size = (j["kind"] == truth[:, 0]), (j["color"] == truth[:, 1]), (j["size"] == truth[:, 2])
        row.update(single_kind_and_color=float((kind & color).float().mean()),
                   single_kind_color_size=float((kind & color & size).float().mean()),
                   single_kind=float(kind.float().mean()), single_color=float(color.float().mean()),
                   recognisable=float(j["recognisable"].float().mean()),
                   fid=_fid(real["image"], x, classifier.features),
                   fid_features=FID_FEATURES["shapes"])
        if two is not None:
            x2 = judge_view(sample_many(ldm, batch={"caption": two["caption"]}, guidance_scale=s, seed=seed,
                                        **sample_options))
            agree = grounding.caption_agreement(two["attrs"], grounding.find_objects(x2, segmenter.predict(x2)))
            row.update(two_all_attributes=agree["all_attributes"], two_all_and_relation=agree["all_and_relation"])
        out[f"guidance_{s:g}"] = row
        log.info("guidance %g: %s", s, row)
    return out


def evaluate_class(ldm: LatentDiffusion, classifier: nn.Module, n_per_class: int = 10,
                   guidance_scales: tuple[float, ...] = (1.0, 3.0), seed: int = 0, captions: bool = False,
                   **sample_options: Any) -> dict:
    """Class-conditional MNIST: the share of samples the MNIST classifier reads as the requested digit, and FID on
    its features against the held-out test digits, at each guidance scale. `captions=True` asks a text model with
    the held-out digits' captions ("a handwritten seven") instead of their labels."""

    test = mnist(32, channels=3, split="test", source="offline")
    real = torch.stack([test[i]["image"] for i in range(len(test))])
    truth = test.labels
    out: dict[str, Any] = {"n": 10 * n_per_class, "n_real": len(real), "sample_options": sample_options,
                           "scorer_on_real": float((classifier.predict(real) == truth).float().mean())}
    labels = torch.arange(10).repeat_interleave(n_per_class)
    caption_of = dict(zip(test.labels.tolist(), test.captions))
    condition = {"caption": [caption_of[k] for k in labels.tolist()]} if captions else {"label": labels}
    for s in guidance_scales:
        x = sample_many(ldm, batch=condition, guidance_scale=s, seed=seed, **sample_options)
        out[f"guidance_{s:g}"] = {"accuracy": float((classifier.predict(x) == labels).float().mean()),
                                  "fid": _fid(real, x, classifier.features),
                                  "fid_features": FID_FEATURES["mnist"]}
        log.info("guidance %g: %s", s, out[f"guidance_{s:g}"])
    return out


def evaluate_shapes_class(ldm: LatentDiffusion, classifier: nn.Module, n_per_class: int = 17,
                          guidance_scales: tuple[float, ...] = (1.0, 3.0), n_real: int = 1000, seed: int = 0,
                          **sample_options: Any) -> dict:
    """Class-conditional `shapes` (class = kind): `n_per_class` samples of every kind at each guidance scale; the
    share the frozen `ShapesClassifier` reads as the requested kind (`accuracy`), the share it finds recognisable,
    and FID on its features against the first `n_real` held-out real single-shape images (at the model's side, all
    seen through `judge_view`). `scorer_on_real`: the classifier's kind accuracy on those real images."""
    real = heldout_shapes(n_real, 1, resolution=_real_side(ldm))
    real_images = judge_view(real["image"])
    out: dict[str, Any] = {"n": len(KINDS) * n_per_class, "n_real": n_real, "sample_options": sample_options,
                           "scorer_on_real": float((classifier.judge(real_images)["kind"] == real["label"])
                                                   .float().mean())}
    labels = torch.arange(len(KINDS)).repeat_interleave(n_per_class)
    for s in guidance_scales:
        x = judge_view(sample_many(ldm, batch={"label": labels}, guidance_scale=s, seed=seed, **sample_options))
        j = classifier.judge(x)
        out[f"guidance_{s:g}"] = {"accuracy": float((j["kind"] == labels).float().mean()),
                                  "recognisable": float(j["recognisable"].float().mean()),
                                  "fid": _fid(real_images, x, classifier.features),
                                  "fid_features": FID_FEATURES["shapes"]}
        log.info("guidance %g: %s", s, out[f"guidance_{s:g}"])
    return out


# ============================================================================================== attention maps
@dataclass
class AttentionRecord:
    """Cross-attention of one text-to-image sample, step by step (for `widgets.cross_attention_panel`)."""

    image: torch.Tensor  # (3, H, W) in [-1, 1]: the final sample
    maps: torch.Tensor  # (S, L, h, w): per reverse step and token, heads and finest-resolution layers averaged
    tokens: list[str]  # the L tokens ([CLS] … [SEP]; padding dropped)
    timesteps: list[int]  # t of each step


@torch.no_grad()
def attention_over_steps(ldm: LatentDiffusion, prompt: str, *, guidance_scale: float = 3.0, steps: int = 20,
                         seed: int = 0) -> AttentionRecord:
    """Sample one image for `prompt` with DDIM and keep, at every step, the cross-attention probabilities
    softmax(Q Kᵀ/√d) (§3.3) of the conditional branch, averaged over heads and over the layers that attend at
    the finest latent resolution (h × w)."""
    tokens = ldm.conditioner.tokenizer.tokens(prompt)
    maps, timesteps = [], []

    def callback(step: int, t: int, z_t: torch.Tensor, z0_hat: torch.Tensor) -> None:
        layers = list(ldm.unet.attention_maps().values())  # (B', heads, HW, L); B' = 2 with guidance ([∅; c])
        finest = max(a.shape[2] for a in layers)
        a = torch.stack([a[-1].mean(0) for a in layers if a.shape[2] == finest]).mean(0)  # (HW, L), cond branch
        side = int(round(finest ** 0.5))
        maps.append(a[:, : len(tokens)].T.reshape(len(tokens), side, side).cpu())
        timesteps.append(int(t))

    ldm.unet.store_attention(True)
    try:
        x = ldm.sample(prompts=[prompt], sampler="ddim", steps=steps, guidance_scale=guidance_scale,
                       generator=torch.Generator().manual_seed(seed), callback=callback)
    finally:
        ldm.unet.store_attention(False)
    return AttentionRecord(x[0].cpu(), torch.stack(maps), tokens, timesteps)


@torch.no_grad()
def attention_on_objects(record: AttentionRecord, segmenter: nn.Module) -> list[dict[str, Any]]:
    """What the attention maps of `attention_over_steps` show, per token, at the first and the last step: its
    `mass` (the share of all attention, over every query, that goes to it: the softmax runs over all L context
    positions, padding included, so the real tokens' masses sum to 1 − the padding's) and its `on_objects`
    (the share of its map on the latent cells the final sample's shapes cover, found by the segmenter; a map
    spread evenly scores the covered share of the cells, `object_cells`). A last row is the padding positions."""
    s, n_tok, h, w = record.maps.shape
    image = judge_view(record.image[None].float())
    cover = F.adaptive_avg_pool2d((segmenter.predict(image) > 0).float()[:, None], (h, w))[0, 0]  # (h, w) in [0, 1]
    padding = 1.0 - record.maps.sum(1)  # (S, h, w): what the padding positions receive at each query
    rows = []
    for name, maps in [*((t, record.maps[:, k]) for k, t in enumerate(record.tokens)), ("(padding)", padding)]:
        row: dict[str, Any] = {"token": name}
        for when, i in (("first", 0), ("last", s - 1)):
            m = maps[i].clamp_min(0)
            row[f"mass_{when}"] = float(m.mean())
            row[f"on_objects_{when}"] = float((m * cover).sum() / m.sum().clamp_min(1e-12))
        rows.append(row)
    rows[0]["object_cells"] = float(cover.mean())
    return rows


def measured_note(name: str, source: str) -> str:
    """One line for beside a panel: the held-out accuracy measured for the shipped model `name` (its
    data/pretrained/<name>/metrics.json, per guidance scale), or a warning when the model in use is not the
    shipped one (`source`, as `recipes.load_or_train` returns it) — so a learner knows when to expect failure."""
    labels = {"single_kind_and_color": "one shape: kind + colour", "two_all_and_relation": "two shapes + relation",
              "objects_found": "objects in their box with their class", "accuracy": "the requested class"}
    path = paths.PRETRAINED_DIR / name / "metrics.json"
    if not source.startswith("shipped") or not path.is_file():
        return (f"Not measured: this is not the shipped {name} but a model {source.split(' (')[0]}; expect it to "
                "ignore its condition often.")
    metrics = read_json(path)
    scales = sorted((float(k.removeprefix("guidance_")), v) for k, v in metrics.items() if k.startswith("guidance_"))
    shown = [k for k in labels if any(k in row for _, row in scales)]
    if not shown:
        return f"{name}: metrics.json holds no held-out accuracy per guidance scale"
    opts = metrics.get("sample_options", {})
    how = f"{metrics.get('n', '?')} held-out conditions per scale" + (
        f", {opts['sampler']} {opts['steps']} steps" if {"sampler", "steps"} <= set(opts) else "")
    cells = ", ".join(" / ".join(f"{row[k]:.0%}" if k in row else "-" for k in shown) + f" at guidance {s:g}"
                      for s, row in scales)
    return (f"Measured for the shipped {name} ({how}; its metrics.json) — {' / '.join(labels[k] for k in shown)}: "
            f"{cells}.")


def evaluate_layout(ldm: LatentDiffusion, segmenter: nn.Module, n: int = 100,
                    guidance_scales: tuple[float, ...] = (1.0, 3.0), classifier: nn.Module | None = None,
                    n_real: int = 1000, seed: int = 0, **sample_options: Any) -> dict:
    """Layout-to-image on the layouts of `n` held-out two-shape scenes: the share of requested objects for which
    the segmenter finds an object of the requested class with its centroid in the requested box
    (`grounding.layout_agreement`), first on the real images of those layouts (`scorer_on_real`), each image at
    the model's side seen through `judge_view`. With a `classifier`: FID on its features against `n_real` real
    two-shape scenes (the held-out items after the `n` layouts, so the layouts judged do not depend on `n_real`)."""
    side = _real_side(ldm)
    b = heldout_shapes(n, 2, resolution=side)
    boxes, labels = boxes_from_attrs(b["attrs"])
    scenes = judge_view(b["image"])
    real = grounding.find_objects(scenes, segmenter.predict(scenes))
    out: dict[str, Any] = {"n": n, "sample_options": sample_options,
                           "scorer_on_real": grounding.layout_agreement(boxes, labels, real)["objects_found"]}
    reference = None
    if classifier is not None:
        reference = judge_view(heldout_shapes(n_real, 2, start=n, resolution=side)["image"])
        out["n_real"] = n_real
    for s in guidance_scales:
        x = judge_view(sample_many(ldm, batch={"boxes": boxes, "box_labels": labels}, guidance_scale=s, seed=seed,
                                   **sample_options))
        found = grounding.find_objects(x, segmenter.predict(x))
        row = grounding.layout_agreement(boxes, labels, found)
        if reference is not None:
            row.update(fid=_fid(reference, x, classifier.features), fid_features=FID_FEATURES["shapes"])
        out[f"guidance_{s:g}"] = row
        log.info("guidance %g: %s", s, row)
    return out


def layout_map(boxes: torch.Tensor, labels: torch.Tensor, size: int = 32) -> torch.Tensor:
    """A layout drawn as a class map (size, size): 0 = background, 1 + class inside each box (later boxes on top).
    boxes (N, 4) as (x0, y0, x1, y1) in [0, 1], labels (N,) with -1 = no object."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    out = torch.zeros(size, size, dtype=torch.long)
    for (x0, y0, x1, y1), k in zip(boxes.tolist(), labels.tolist()):
        if k >= 0:
            out[((c[:, None] >= y0) & (c[:, None] <= y1)) & ((c[None, :] >= x0) & (c[None, :] <= x1))] = k + 1
    return out


@torch.no_grad()
def layout_pictures(ldm: LatentDiffusion, index: int, guidance_scale: float = 3.0, n: int = 3,
                    **sample_options: Any) -> tuple[dict[str, torch.Tensor], str]:
    """For `widgets.images_panel`: the layout of held-out scene `index` (as a class map), the real scene, and `n`
    samples of the layout model for it ({caption: picture}, readout)."""

    item = shapes(32, n=index + 1, seed=HELDOUT_SEED, max_shapes=2)[index]
    boxes, labels = boxes_from_attrs(item["attrs"][None])
    x = ldm.sample(batch={"boxes": boxes.expand(n, -1, -1), "box_labels": labels.expand(n, -1)},
                   guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(index), **sample_options)
    pictures = {"requested layout": layout_map(boxes[0], labels[0]), "a real scene": item["image"],
                **{f"sample {i} (s={guidance_scale:g})": img for i, img in enumerate(x.cpu())}}
    asked = [f"{KINDS[k]} in ({', '.join(f'{v:.2f}' for v in b)})" for b, k in zip(boxes[0].tolist(), labels[0].tolist())
             if k >= 0]
    return pictures, "requested: " + "; ".join(asked)


# ============================================================================================== one entry point

TWO_SHAPE_PROMPT = "a large red circle left of a small blue square"  # words a shapes text model must know
DIGIT_PROMPT = "a handwritten seven"  # words an MNIST text model knows


def condition_kind(ldm: LatentDiffusion) -> str:
    """Which held-out data and judge fit a conditional model, read from its conditioner's class (and, for text,
    the words it was trained on, for a class its number of classes): "shapes-text", "mnist-text", "layout",
    "shapes-class" or "mnist-class"."""
    cond = ldm.conditioner
    if isinstance(cond, (TextConditioner, FrozenTextConditioner)):
        if not cond.tokenizer.unseen_words(TWO_SHAPE_PROMPT):
            return "shapes-text"
        if not cond.tokenizer.unseen_words(DIGIT_PROMPT):
            return "mnist-text"
        raise UsageError(f"this text model knows neither the shapes captions nor the MNIST ones (e.g. it never saw "
                         f"the words {cond.tokenizer.unseen_words(TWO_SHAPE_PROMPT)}); judge its samples yourself")
    if isinstance(cond, (LayoutConditioner, LayoutTokenConditioner)):
        return "layout"
    if isinstance(cond, ClassConditioner) and cond.config.num_classes == 10:
        return "mnist-class"
    if isinstance(cond, ClassConditioner) and cond.config.num_classes == len(KINDS):
        return "shapes-class"
    raise UsageError(f"no judge for a model conditioned by {type(cond).__name__ if cond is not None else 'nothing'}; "
                     "`conditional.evaluate` judges text (shapes or MNIST captions), layout and class-conditional "
                     "MNIST and shapes models; an unconditional model: `evaluation.evaluate_samples` (ldm-lite evaluate)")


def evaluate(ldm: LatentDiffusion, n: int = 100, guidance_scales: tuple[float, ...] = (1.0, 3.0), n_real: int = 1000,
             seed: int = 0, **sample_options: Any) -> dict:
    """Judge a conditional model with conditions drawn from held-out data, at each guidance scale, with the frozen
    scorer its kind of condition needs (`condition_kind`), each first checked on real held-out images:

    - text on shapes: `evaluate_text` (single-shape captions: `ShapesClassifier`; two-shape captions:
      `ShapesSegmenter` + `grounding`; FID on classifier features against `n_real` real images);
    - layout (Fourier or token τ_θ): `evaluate_layout` (the segmenter finds each requested object in its box;
      FID on the classifier's features against `n_real` real two-shape scenes);
    - class-conditional shapes: `evaluate_shapes_class` (the ShapesClassifier reads the requested kind; ⌈n / 6⌉
      per kind; FID on its features against `n_real` real images);
    - class-conditional MNIST or MNIST captions: `evaluate_class` (the MNIST classifier, `n` // 10 per digit).

    Returns {"condition_kind", "judge", "scorer_on_real", "guidance_<s>": {accuracies, FID}, ...}."""

    kind = condition_kind(ldm)
    scales = tuple(float(s) for s in guidance_scales)
    if kind == "shapes-text":
        classifier = get_classifier()
        if classifier is None:
            raise FileNotFoundError("no ShapesClassifier under data/pretrained: run `ldm-lite train-classifier`")
        out = evaluate_text(ldm, classifier, load_segmenter(), n=n, guidance_scales=scales, n_real=n_real, seed=seed,
                            **sample_options)
        judge = "ShapesClassifier (1-shape captions), ShapesSegmenter + grounding (2-shape captions)"
    elif kind == "layout":
        out = evaluate_layout(ldm, load_segmenter(), n=n, guidance_scales=scales, classifier=get_classifier(),
                              n_real=n_real, seed=seed, **sample_options)
        judge = "ShapesSegmenter + grounding (each object in its box with its class; FID on ShapesClassifier features)"
    elif kind == "shapes-class":
        classifier = get_classifier()
        if classifier is None:
            raise FileNotFoundError("no ShapesClassifier under data/pretrained: run `ldm-lite train-classifier`")
        out = evaluate_shapes_class(ldm, classifier, n_per_class=math.ceil(n / len(KINDS)), guidance_scales=scales,
                                    n_real=n_real, seed=seed, **sample_options)
        judge = "ShapesClassifier (requested kind; FID on its features)"
    else:
        clf = MNISTClassifier.from_pretrained(pretrained("mnist-classifier-32"))
        out = evaluate_class(ldm, clf, n_per_class=max(1, n // 10), guidance_scales=scales, seed=seed,
                             captions=kind == "mnist-text", **sample_options)
        judge = "MNISTClassifier (requested digit)"
    return {"condition_kind": kind, "judge": judge, **out}


def example_conditions(ldm: LatentDiffusion) -> dict[str, Any]:
    """A batch of 8-10 typical conditions for a grid of samples of a conditional model (`condition_kind`)."""

    kind = condition_kind(ldm)
    if kind == "shapes-text":
        return {"caption": ["a large red circle", "a small blue square", "a large green triangle", "a small yellow star",
                            "a large white diamond", "a large purple cross", "a small orange circle",
                            "a large cyan square"]}
    if kind == "layout":
        boxes, labels = boxes_from_attrs(heldout_shapes(8, 2)["attrs"])
        return {"boxes": boxes, "box_labels": labels}
    if kind == "mnist-text":
        return {"caption": [f"a handwritten {w}" for w in NUMBER_WORDS]}
    if kind == "shapes-class":
        return {"label": torch.arange(len(KINDS)).repeat(2)[:8]}
    return {"label": torch.arange(10)}

"""Conditional LDMs end to end: build, train (resumably) and judge text-to-image, layout-to-image and
class-conditional models (LDM §3.3, §4.3; classifier-free guidance, Ho & Salimans 2022).

    ldm = build("text", autoencoder)                       # UNet with cross-attention + TextConditioner
    ldm = train("text", "outputs/t2i", steps=3000)         # resumable: run it again to continue
    x = ldm.sample(prompts=["a large red circle"], guidance_scale=3.0)

A `Recipe` per condition names the dataset, the shipped autoencoder and the conditioner; `build` never switches
inside the model: the conditioner object is the only thing that differs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .autoencoder import Autoencoder
from .conditioning import ClassConditioner, ClassConditionerConfig, LayoutConditioner, LayoutConditionerConfig
from .ldm import LatentDiffusion
from .paths import PRETRAINED_DIR
from .text import (
    FrozenTextConditioner,
    FrozenTextConditionerConfig,
    TextConditioner,
    TextConditionerConfig,
    mnist_vocabulary,
)
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    """How one kind of conditional model is made."""

    dataset: str  # "shapes" or "mnist"
    autoencoder: str  # shipped first stage under data/pretrained/
    conditioner: Callable[[int], nn.Module]  # context_dim -> a fresh conditioner
    max_shapes: int = 2  # shapes per image (shapes only)


RECIPES: dict[str, Recipe] = {
    "text": Recipe("shapes", "ae-kl-f4-shapes32",
                   lambda d: TextConditioner(TextConditionerConfig(dim=d, max_length=16))),
    "frozen-text": Recipe("shapes", "ae-kl-f4-shapes32",
                          lambda d: FrozenTextConditioner(FrozenTextConditionerConfig(dim=d, max_length=16))),
    "layout": Recipe("shapes", "ae-kl-f4-shapes32",
                     lambda d: LayoutConditioner(LayoutConditionerConfig(dim=d, max_objects=2)), max_shapes=2),
    "class": Recipe("mnist", "ae-kl-f4-mnist32",
                    lambda d: ClassConditioner(ClassConditionerConfig(num_classes=10, dim=d))),
    "mnist-text": Recipe("mnist", "ae-kl-f4-mnist32",
                         lambda d: TextConditioner(TextConditionerConfig(dim=d, max_length=6,
                                                                         vocabulary=mnist_vocabulary()))),
}


def _recipe(condition: str) -> Recipe:
    if condition not in RECIPES:
        raise ValueError(f"unknown condition {condition!r}; use one of {sorted(RECIPES)}")
    return RECIPES[condition]


def build(condition: str, autoencoder: nn.Module, *, context_dim: int = 128, model_channels: int = 64,
          image_size: int = 32, cond_drop_prob: float = 0.1, **unet_overrides: Any) -> LatentDiffusion:
    """A fresh conditional LDM: `UNetConfig.small` with cross-attention of width `context_dim` + the recipe's
    conditioner, on `autoencoder` (frozen)."""
    cond = _recipe(condition).conditioner(context_dim)
    unet = UNet(UNetConfig.small(in_channels=autoencoder.latent_channels, context_dim=context_dim,
                                 model_channels=model_channels, **unet_overrides))
    return LatentDiffusion(autoencoder, unet, cond, image_size=image_size, cond_drop_prob=cond_drop_prob)


def dataset(condition: str, n: int = 20_000, seed: int = 0, split: str = "train", resolution: int = 32):
    """The training (or held-out) data of a recipe. Held-out shapes use another seed; MNIST its test split."""
    from . import datasets

    r = _recipe(condition)
    if r.dataset == "mnist":
        return datasets.mnist(resolution, channels=3, split=split, source="offline")
    return datasets.shapes(resolution, n=n, seed=seed if split == "train" else seed + 1, max_shapes=r.max_shapes)


def shipped_autoencoder(condition: str) -> Autoencoder:
    path = PRETRAINED_DIR / _recipe(condition).autoencoder
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; train it first: ldm-lite train-ae --preset kl-f4 --dataset "
                                f"{_recipe(condition).dataset} --steps 2500 --ship {path.name} (see README)")
    return Autoencoder.from_pretrained(path)


class LatentCache(torch.utils.data.Dataset):
    """A dataset's items with "image" replaced by the scaled latent z_0 = s·E(x) (B, c, h, w), encoded once.

    The posterior mean is cached (the KL posterior's spread is small next to the latents' unit scale), so
    training skips the encoder and the shapes renderer: a step costs the UNet and the conditioner only.
    Kept fields: caption, label, attrs (what the conditioners read)."""

    KEEP = ("caption", "label", "attrs")

    def __init__(self, latents: torch.Tensor, fields: dict[str, Any]):
        self.latents, self.fields = latents, fields

    @classmethod
    @torch.no_grad()
    def build(cls, data: Any, autoencoder: nn.Module, batch_size: int = 256, path: str | os.PathLike | None = None,
              progress: bool = True) -> LatentCache:
        """Encode every item of `data` (or load `path`, a safetensors file written by an earlier call for a dataset
        of the same length)."""
        from safetensors.torch import load_file, save_file
        from torch.utils.data import default_collate
        from tqdm.auto import tqdm

        if path is not None and Path(path).exists() and Path(path).with_suffix(".json").exists():
            saved = load_file(str(path))
            if len(saved["latents"]) == len(data):  # else a cache of another dataset size: encode afresh
                meta = json.loads(Path(path).with_suffix(".json").read_text())
                return cls(saved.pop("latents"), {**saved, **meta})
        autoencoder.eval()
        zs, fields = [], {}
        for i in tqdm(range(0, len(data), batch_size), desc="latent cache", disable=not progress):
            items = default_collate([data[j] for j in range(i, min(len(data), i + batch_size))])
            zs.append(autoencoder.to_latent(items["image"], sample=False))
            for k in cls.KEEP:
                if k in items:
                    fields.setdefault(k, []).append(items[k])
        latents = torch.cat(zs)
        fields = {k: (sum(v, []) if isinstance(v[0], list) else torch.cat(v)) for k, v in fields.items()}
        if path is not None:
            tensors = {k: v for k, v in fields.items() if isinstance(v, torch.Tensor)}
            save_file({"latents": latents.contiguous(), **{k: v.contiguous() for k, v in tensors.items()}}, str(path))
            Path(path).with_suffix(".json").write_text(json.dumps({k: v for k, v in fields.items() if k not in tensors}))
        return cls(latents, fields)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.latents[i], **{k: v[i] for k, v in self.fields.items()}}


def latent_view(ldm: LatentDiffusion) -> LatentDiffusion:
    """The same UNet and conditioner (shared modules) behind an identity first stage at latent resolution:
    trains on a `LatentCache` with exactly L_LDM (eq. 2) of the full model, z_0 given."""
    from .autoencoder import IdentityAutoencoder, IdentityAutoencoderConfig

    c, h, _ = ldm.latent_shape
    return LatentDiffusion(IdentityAutoencoder(IdentityAutoencoderConfig(in_channels=c)), ldm.unet, ldm.conditioner,
                           ldm.schedule, image_size=h, prediction=ldm.config.prediction,
                           cond_drop_prob=ldm.config.cond_drop_prob)


def from_checkpoint(directory: str | os.PathLike, autoencoder: nn.Module, ema: bool = True) -> LatentDiffusion:
    """The full model from a `train` checkpoint folder (`<out_dir>/checkpoint`, a latent view): its UNet and
    conditioner (EMA weights by default) on `autoencoder`, with the schedule it was trained with."""
    from safetensors.torch import load_file

    view = LatentDiffusion.from_pretrained(directory)
    if ema:
        shadow = {k[len("ema."):]: v for k, v in load_file(str(Path(directory) / "training.safetensors")).items()
                  if k.startswith("ema.")}
        missing = view.load_state_dict(shadow, strict=False).missing_keys
        if any(k.startswith(("unet.", "conditioner.")) for k in missing):
            raise ValueError(f"{directory} holds no EMA weights for {missing[:3]}; pass ema=False")
    return LatentDiffusion(autoencoder, view.unet, view.conditioner, view.schedule,
                           image_size=view.config.image_size * autoencoder.f, prediction=view.config.prediction,
                           cond_drop_prob=view.config.cond_drop_prob).eval()


def train(condition: str, out_dir: str | os.PathLike, steps: int = 3_000, *, batch_size: int = 64, lr: float = 5e-4,
          warmup: int = 100, ema: float | None = 0.995, context_dim: int = 128, model_channels: int = 64,
          n_train: int = 20_000, seed: int = 0, resume: bool = True, max_seconds: float | None = None,
          checkpoint_every: int = 250, device: str = "auto", progress: bool = True) -> LatentDiffusion:
    """Train a conditional LDM of kind `condition` ("text", "frozen-text", "layout", "class", "mnist-text") on the
    shipped autoencoder, from latents cached once in `<out_dir>/latents.safetensors`. `<out_dir>/checkpoint` is
    written every `checkpoint_every` steps and `resume=True` continues from it (same weights as an uninterrupted
    run). The final EMA model (with its autoencoder) is saved to `<out_dir>/model`."""
    from .train import train_ldm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ldm = build(condition, shipped_autoencoder(condition), context_dim=context_dim, model_channels=model_channels)
    cache = LatentCache.build(dataset(condition, n=n_train, seed=seed), ldm.autoencoder,
                              path=out / "latents.safetensors", progress=progress)
    t0 = time.perf_counter()
    history = train_ldm(latent_view(ldm), cache, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema=ema,
                        out_dir=out, resume=resume, seed=seed, checkpoint_every=checkpoint_every,
                        max_seconds=max_seconds, device=device, progress=progress)
    ldm.save_pretrained(out / "model")  # the full model (autoencoder included) over train_ldm's latent view
    steps_done = int(history["step"][-1]) + 1 if history.get("step") else 0
    record = {"condition": condition, "steps": steps, "batch_size": batch_size, "lr": lr, "ema": ema,
              "context_dim": context_dim, "model_channels": model_channels, "n_train": n_train, "seed": seed,
              "steps_done": steps_done, "seconds_this_call": round(time.perf_counter() - t0, 1),
              "final_loss_mean_last_10_logs": float(sum(history["loss"][-10:]) / max(1, len(history["loss"][-10:])))}
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return ldm.eval()


def recipe_dict(condition: str) -> dict:
    r = _recipe(condition)
    return {k: v for k, v in asdict(r).items() if k != "conditioner"}


# ============================================================================================== judging samples
HELDOUT_SEED = 10_001  # shapes seed of held-out captions / layouts / real images (training uses seed 0)


def heldout_shapes(n: int, shapes_per_image: int, seed: int = HELDOUT_SEED) -> dict[str, Any]:
    """A batch of `n` held-out `shapes` items with exactly `shapes_per_image` shapes (image, caption, attrs, mask)."""
    from torch.utils.data import default_collate

    from .datasets import shapes

    ds = shapes(32, n=n, seed=seed, max_shapes=shapes_per_image, min_shapes=shapes_per_image)
    return default_collate([ds[i] for i in range(n)])


@torch.no_grad()
def sample_many(ldm: LatentDiffusion, batch: dict[str, Any], batch_size: int = 64, seed: int = 0,
                **sample_options: Any) -> torch.Tensor:
    """ldm.sample over a large condition batch in chunks of `batch_size` (chunk i seeded with seed + i)."""
    n = len(next(v for v in batch.values() if hasattr(v, "__len__")))
    out = []
    for i in range(0, n, batch_size):
        part = {k: v[i:i + batch_size] for k, v in batch.items()}
        out.append(ldm.sample(batch=part, generator=torch.Generator().manual_seed(seed + i), **sample_options).cpu())
    return torch.cat(out)


def _fid(real: torch.Tensor, fake: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor]) -> float:
    from .metrics import fid

    with torch.no_grad():
        return float(fid(torch.cat([features(b) for b in real.split(256)]),
                         torch.cat([features(b) for b in fake.split(256)])))


def evaluate_text(ldm: LatentDiffusion, classifier: nn.Module, segmenter: nn.Module | None = None, n: int = 100,
                  guidance_scales: tuple[float, ...] = (1.0, 3.0), n_real: int = 1000, seed: int = 0,
                  **sample_options: Any) -> dict:
    """Text-to-image on held-out captions at each guidance scale.

    Single-shape captions: the share of samples whose kind and colour (and size) the frozen `ShapesClassifier`
    reads as asked, and FID on its features against `n_real` held-out real single-shape images. Two-shape
    captions (with a segmenter, `ldm_lite.grounding`): the share where every stated shape and the relation are
    found. Each scorer is first run on held-out real images (`scorer_on_real`): its agreement with the truth."""
    from . import grounding

    one, real = heldout_shapes(n, 1), heldout_shapes(n_real, 1, seed=HELDOUT_SEED + 1)
    judged = classifier.judge(one["image"])
    truth = one["attrs"][:, 0]
    out: dict[str, Any] = {"n": n, "n_real": n_real, "sample_options": sample_options, "scorer_on_real": {
        "classifier_kind_and_color": float(((judged["kind"] == truth[:, 0]) & (judged["color"] == truth[:, 1]))
                                           .float().mean())}}
    two = heldout_shapes(n, 2) if segmenter is not None else None
    if two is not None:
        found = grounding.find_objects(two["image"], segmenter.predict(two["image"]))
        out["scorer_on_real"]["segmenter_two_shapes"] = grounding.caption_agreement(two["attrs"], found)[
            "all_and_relation"]
    for s in guidance_scales:
        row: dict[str, Any] = {}
        x = sample_many(ldm, {"caption": one["caption"]}, guidance_scale=s, seed=seed, **sample_options)
        j = classifier.judge(x)
        kind, color, size = (j["kind"] == truth[:, 0]), (j["color"] == truth[:, 1]), (j["size"] == truth[:, 2])
        row.update(single_kind_and_color=float((kind & color).float().mean()),
                   single_kind_color_size=float((kind & color & size).float().mean()),
                   single_kind=float(kind.float().mean()), single_color=float(color.float().mean()),
                   recognisable=float(j["recognisable"].float().mean()),
                   fid_classifier_features=_fid(real["image"], x, classifier.features))
        if two is not None:
            x2 = sample_many(ldm, {"caption": two["caption"]}, guidance_scale=s, seed=seed, **sample_options)
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
    from .datasets import mnist

    test = mnist(32, channels=3, split="test", source="offline")
    real = torch.stack([test[i]["image"] for i in range(len(test))])
    truth = test.labels
    out: dict[str, Any] = {"n": 10 * n_per_class, "n_real": len(real), "sample_options": sample_options,
                           "scorer_on_real": float((classifier.predict(real) == truth).float().mean())}
    labels = torch.arange(10).repeat_interleave(n_per_class)
    caption_of = dict(zip(test.labels.tolist(), test.captions))
    condition = {"caption": [caption_of[k] for k in labels.tolist()]} if captions else {"label": labels}
    for s in guidance_scales:
        x = sample_many(ldm, condition, guidance_scale=s, seed=seed, **sample_options)
        out[f"guidance_{s:g}"] = {"accuracy": float((classifier.predict(x) == labels).float().mean()),
                                  "fid_mnist_classifier_features": _fid(real, x, classifier.features)}
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


SHIPPED = {"text": "ldm-kl-f4-shapes32-text", "class": "ldm-kl-f4-mnist32-class",
           "layout": "ldm-kl-f4-shapes32-layout"}  # names under data/pretrained/


def load_or_train(condition: str, steps: int = 200, out_dir: str | os.PathLike | None = None,
                  **train_options: Any) -> tuple[LatentDiffusion, str]:
    """The shipped conditional model when present, else one trained here for `steps` steps (a quick, weak model
    for smoke runs; the shipped one took an hour). Returns (model, where it came from)."""
    from .paths import OUTPUTS_DIR

    name = SHIPPED.get(condition)
    if name is not None and (PRETRAINED_DIR / name / "model.safetensors").exists():
        return LatentDiffusion.from_pretrained(PRETRAINED_DIR / name), f"shipped ({name})"
    out = Path(out_dir) if out_dir is not None else OUTPUTS_DIR / f"quick-{condition}"
    ldm = train(condition, out, steps, **train_options)
    return ldm, f"trained here for {steps} steps ({out})"


def evaluate_layout(ldm: LatentDiffusion, segmenter: nn.Module, n: int = 100,
                    guidance_scales: tuple[float, ...] = (1.0, 3.0), seed: int = 0, **sample_options: Any) -> dict:
    """Layout-to-image on the layouts of `n` held-out two-shape scenes: the share of requested objects for which
    the segmenter finds an object of the requested class with its centroid in the requested box
    (`grounding.layout_agreement`), first on the real images of those layouts (`scorer_on_real`)."""
    from . import grounding
    from .conditioning import boxes_from_attrs

    b = heldout_shapes(n, 2)
    boxes, labels = boxes_from_attrs(b["attrs"])
    real = grounding.find_objects(b["image"], segmenter.predict(b["image"]))
    out: dict[str, Any] = {"n": n, "sample_options": sample_options,
                           "scorer_on_real": grounding.layout_agreement(boxes, labels, real)["objects_found"]}
    for s in guidance_scales:
        x = sample_many(ldm, {"boxes": boxes, "box_labels": labels}, guidance_scale=s, seed=seed, **sample_options)
        found = grounding.find_objects(x, segmenter.predict(x))
        out[f"guidance_{s:g}"] = grounding.layout_agreement(boxes, labels, found)
        log.info("guidance %g: %s", s, out[f"guidance_{s:g}"])
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
    from .conditioning import boxes_from_attrs
    from .datasets import KINDS, shapes

    item = shapes(32, n=index + 1, seed=HELDOUT_SEED + 3, max_shapes=2)[index]
    boxes, labels = boxes_from_attrs(item["attrs"][None])
    x = ldm.sample(batch={"boxes": boxes.expand(n, -1, -1), "box_labels": labels.expand(n, -1)},
                   guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(index), **sample_options)
    pictures = {"requested layout": layout_map(boxes[0], labels[0]), "a real scene": item["image"],
                **{f"sample {i} (s={guidance_scale:g})": img for i, img in enumerate(x.cpu())}}
    asked = [f"{KINDS[k]} in ({', '.join(f'{v:.2f}' for v in b)})" for b, k in zip(boxes[0].tolist(), labels[0].tolist())
             if k >= 0]
    return pictures, "requested: " + "; ".join(asked)


# ============================================================================================== one entry point
from .datasets import _NUMBER_WORDS as DIGIT_WORDS  # noqa: E402  ("zero", ..., "nine")

TWO_SHAPE_PROMPT = "a large red circle left of a small blue square"  # words a shapes text model must know
DIGIT_PROMPT = "a handwritten seven"  # words an MNIST text model knows


def condition_kind(ldm: LatentDiffusion) -> str:
    """Which held-out data and judge fit a conditional model, read from its conditioner's class (and, for text,
    the words it was trained on): "shapes-text", "mnist-text", "layout" or "mnist-class"."""
    cond = ldm.conditioner
    if isinstance(cond, (TextConditioner, FrozenTextConditioner)):
        if not cond.tokenizer.unseen_words(TWO_SHAPE_PROMPT):
            return "shapes-text"
        if not cond.tokenizer.unseen_words(DIGIT_PROMPT):
            return "mnist-text"
        raise ValueError(f"this text model knows neither the shapes captions nor the MNIST ones (e.g. it never saw "
                         f"the words {cond.tokenizer.unseen_words(TWO_SHAPE_PROMPT)}); judge its samples yourself")
    if isinstance(cond, LayoutConditioner):
        return "layout"
    if isinstance(cond, ClassConditioner) and cond.config.num_classes == 10:
        return "mnist-class"
    raise ValueError(f"no judge for a model conditioned by {type(cond).__name__ if cond is not None else 'nothing'}; "
                     "`conditional.evaluate` judges text (shapes or MNIST captions), layout and class-conditional "
                     "MNIST models; an unconditional model: `evaluation.evaluate_samples` (ldm-lite evaluate)")


def evaluate(ldm: LatentDiffusion, n: int = 100, guidance_scales: tuple[float, ...] = (1.0, 3.0), n_real: int = 1000,
             seed: int = 0, **sample_options: Any) -> dict:
    """Judge a conditional model with conditions drawn from held-out data, at each guidance scale, with the frozen
    scorer its kind of condition needs (`condition_kind`), each first checked on real held-out images:

    - text on shapes: `evaluate_text` (single-shape captions: `ShapesClassifier`; two-shape captions:
      `ShapesSegmenter` + `grounding`; FID on classifier features against `n_real` real images);
    - layout: `evaluate_layout` (the segmenter finds each requested object in its box);
    - class-conditional MNIST or MNIST captions: `evaluate_class` (the MNIST classifier, `n` // 10 per digit).

    Returns {"condition_kind", "judge", "scorer_on_real", "guidance_<s>": {accuracies, FID}, ...}."""
    from .classifier import MNISTClassifier
    from .paths import pretrained
    from .recipes import get_classifier
    from .segmenter import load_segmenter

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
        out = evaluate_layout(ldm, load_segmenter(), n=n, guidance_scales=scales, seed=seed, **sample_options)
        judge = "ShapesSegmenter + grounding (each object in its box with its class)"
    else:
        clf = MNISTClassifier.from_pretrained(pretrained("mnist-classifier-32"))
        out = evaluate_class(ldm, clf, n_per_class=max(1, n // 10), guidance_scales=scales, seed=seed,
                             captions=kind == "mnist-text", **sample_options)
        judge = "MNISTClassifier (requested digit)"
    return {"condition_kind": kind, "judge": judge, **out}


RECIPE_OF_KIND = {"shapes-text": "text", "mnist-text": "mnist-text", "layout": "layout", "mnist-class": "class"}


def load(directory: str | os.PathLike) -> LatentDiffusion:
    """A conditional model to judge or sample, in eval mode: a model folder (`save_pretrained`), or a `train`
    checkpoint folder (`<out_dir>/checkpoint`, a latent view) rebuilt with its EMA weights on the shipped
    autoencoder of its kind (`condition_kind`), so a run can be judged while it trains."""
    ldm = LatentDiffusion.from_pretrained(directory)
    if ldm.config.autoencoder_kind != "IdentityAutoencoder" or not (Path(directory) / "training.safetensors").exists():
        return ldm
    return from_checkpoint(directory, shipped_autoencoder(RECIPE_OF_KIND[condition_kind(ldm)]))


def example_conditions(ldm: LatentDiffusion) -> dict[str, Any]:
    """A batch of 8-10 typical conditions for a grid of samples of a conditional model (`condition_kind`)."""
    from .conditioning import boxes_from_attrs

    kind = condition_kind(ldm)
    if kind == "shapes-text":
        return {"caption": ["a large red circle", "a small blue square", "a large green triangle", "a small yellow star",
                            "a large white diamond", "a large purple cross", "a small orange circle",
                            "a large cyan square"]}
    if kind == "layout":
        boxes, labels = boxes_from_attrs(heldout_shapes(8, 2, seed=HELDOUT_SEED + 2)["attrs"])
        return {"boxes": boxes, "box_labels": labels}
    if kind == "mnist-text":
        return {"caption": [f"a handwritten {w}" for w in DIGIT_WORDS]}
    return {"label": torch.arange(10)}

"""Recipes: every model the kit trains or ships, by name, over one training configuration.

A `Recipe` says what a model is (how to build it, what it trains on, which trainer) and which fields of the one
`TrainConfig` it changes; every default lives in `TrainConfig`. Everything that needs a model gets it here: the
CLI (`ldm-lite train <name>`), the main job, the notebooks, the studies, the exercises and the scripts.

    cfg = config("ldm-kl-f4-shapes32-text", steps=200)    # the recipe's settings, with overrides
    run = train("ldm-kl-f4-shapes32-text", steps=200)     # resumable run under outputs/<name>/ -> TrainResult
    ldm, source = load_or_train("ldm-kl-f4-shapes32-text") # the shipped model, else trained with its recipe
    ship(run.out / "model", "ldm-kl-f4-shapes32-text", run.metrics, command_line(), "...")

Recipe names are the shipped folder names under `data/pretrained/`; `ae` and `ldm` are the generic recipes for a
user's own data (`ldm-lite train ae --dataset my_images/`, `ldm-lite train ldm --autoencoder outputs/ae-.../model
--dataset my_images/`). `TrainConfig.gpu()` is the preset for a GPU (bigger batch, more steps).
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import datasets, paths
from .autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder, estimate_scale_factor
from .checkpoint import CheckpointError, atomic_dir, read_json, write_json
from .classifier import MNISTClassifier, ShapesClassifier, evaluate_classifier
from .compression import reconstruction_metrics
from .conditioning import (
    ClassConditioner,
    ClassConditionerConfig,
    LayoutConditioner,
    LayoutConditionerConfig,
    LayoutTokenConditioner,
    LayoutTokenConditionerConfig,
)
from .errors import UsageError
from .fit import FINAL_DIR
from .ldm import LatentDiffusion
from .losses import AutoencoderLossConfig
from .runtime import pick_device
from .schedule import Schedule
from .segmenter import ShapesSegmenter, train_segmenter, validate
from .spatial import (
    InpaintingConditioner,
    InpaintingConfig,
    SemanticConditioner,
    SuperResolutionConditioner,
    SuperResolutionConfig,
)
from .text import FrozenTextConditioner, FrozenTextConditionerConfig, TextConditioner, TextConditionerConfig
from .train import train_autoencoder, train_ldm, train_mnist_classifier, train_shapes_classifier
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)

HELDOUT_SEED = datasets.HELDOUT_SEED  # re-exported: the one held-out `shapes` seed (training uses TrainConfig.seed = 0)


# ============================================================================================== the one config
@dataclass
class TrainConfig:
    """Everything a training run needs; a recipe overrides a few fields, the CLI any of them (`--steps 200`)."""

    # data
    dataset: str = "shapes"  # shapes | mnist | a folder of images | hub:<name or path>
    resolution: int = 32  # image side
    n_train: int = 20_000  # training images (shapes: drawn with seed `seed`; others: the first n_train at most)
    max_shapes: int = 1  # shapes per image (shapes only)
    max_shapes_share: float | None = None  # shapes: share of training images with max_shapes shapes (None: uniform)
    n_eval: int = 512  # held-out images for the metrics a run reports (autoencoders: PSNR / SSIM / LPIPS)
    # first stage (autoencoder recipes)
    preset: str = "kl-f4"  # kl-f<f> | vq-f<f>
    latent_channels: int = 3  # c of the latent
    base_channels: int = 32  # width of the first level
    codebook_size: int = 256  # VQ only
    loss: str = "full"  # "full" (L1 + LPIPS + KL/VQ + PatchGAN, §3.1) or "short" (L1 + KL/VQ: ~3x cheaper)
    disc_start: int | None = None  # step the PatchGAN starts (None: 3/4 of `steps`; -1: never)
    kl_weight: float = 1e-6  # weight of the KL term
    learn_logvar: bool = False  # learn the decoder's log-variance (the reference fixes it at 0)
    lpips_net: str = "vgg"  # LPIPS backbone of the loss
    perceptual_weight: float | None = None  # LPIPS weight of the full loss (None: 1.0)
    # diffusion model (LDM recipes)
    autoencoder: str = "ae-kl-f4-shapes32"  # first stage: a shipped name, a model folder, or "identity" (LDM-1)
    condition: str | None = None  # None | text | frozen-text | layout | layout-tokens | class | shapes-class | ...
    degradation: str = "bicubic"  # sr: the low-res inputs it trains on (bicubic | realistic)
    model_channels: int = 64  # UNet width
    context_dim: int = 128  # cross-attention width (text, layout, class)
    prediction: str = "eps"  # eps | v
    beta_start: float = 0.00085  # √β linear schedule from beta_start to beta_end (the kit's default: Stable
    beta_end: float = 0.012  # Diffusion's; the paper's configs: 0.0015 -> 0.0195 / 0.0205 / 0.0155, docs/differences.md)
    cond_drop_prob: float = 0.1  # ∅ in training, for classifier-free guidance (0 for concat conditions)
    latent_cache: bool = True  # encode the training set once; z ~ q(z|x) is still drawn every step
    text_cache: bool = True  # frozen-text with latent_cache: the frozen encoder's states of each caption, once
    # optimisation
    steps: int = 3_000  # training steps in total (a re-run resumes up to this)
    batch_size: int = 64
    lr: float = 5e-4  # peak learning rate (AdamW for LDMs, Adam for autoencoders)
    warmup: int = 100  # linear warm-up steps (LDMs)
    ema: float | None = 0.995  # EMA decay of the weights the model ends with (None: no EMA)
    seed: int = 0
    max_seconds: float | None = None  # a time budget (stops after a checkpoint), counted by budget_clock
    budget_clock: str = "wall"  # max_seconds counts "wall" (this call's seconds) or "cpu" (the run's CPU seconds)
    min_steps: int = 0  # ...but never before this step
    checkpoint_every: int | None = None  # default: every tenth of the run (>= 100 steps)
    init_from: str | None = None  # a model folder of the same architecture whose weights start the run
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, ...
    threads: int = 0  # CPU threads (0: torch's default)
    sync_every: int | None = None  # GPU: steps between reads of the loss (no per-step device->host copy)
    compile: str | None = None  # torch.compile mode for the LDM step ("default", "reduce-overhead"); None: eager

    def gpu(self) -> TrainConfig:
        """The same recipe for one GPU: a 4x larger batch at a lower learning rate, 5x the steps."""
        return replace(self, batch_size=self.batch_size * 4, lr=self.lr / 2, steps=self.steps * 5,
                       warmup=self.warmup * 5, n_train=max(self.n_train, 50_000), ema=0.999)


@dataclass
class TrainResult:
    """What every trainer returns: the trained model (eval mode), its history, held-out metrics, the run folder."""

    model: nn.Module
    history: dict[str, list]
    metrics: dict[str, Any]
    out: Path | None
    config: TrainConfig


@dataclass(frozen=True)
class Recipe:
    """One model: what it is and the fields of `TrainConfig` it changes."""

    name: str  # the folder name when shipped (data/pretrained/<name>)
    what: str  # one line for `ldm-lite train --list` and the README
    trainer: Callable[[TrainConfig, Path, bool, bool], TrainResult]  # (config, run folder, progress, resume)
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # how the shipped weights were made, where that differs from one run of the recipe
    gpu: dict[str, Any] = field(default_factory=dict)  # the GPU preset's sizes for this model, after TrainConfig.gpu()


# ============================================================================================== builders
def small_unet(latent_channels: int, *, model_channels: int = 64, context_dim: int | None = None,
               concat_channels: int = 0, **overrides: Any) -> UNetConfig:
    """The kit's UNet for 8×8 latents (LDM-4 at 32×32): `UNetConfig.small`, with the conditioning's widths. A width
    that 32 does not divide (e.g. 48) gets gcd(width, 32) norm groups and one head per width at the first level, as
    width 32 has."""
    if concat_channels:  # concat conditions: attention at 4×4 only and 16 groups, as the shipped models
        overrides = {"attention_resolutions": (2,), "norm_groups": 16, **overrides}
    if model_channels % 32:
        overrides = {"norm_groups": math.gcd(model_channels, 32), "head_dim": model_channels, **overrides}
    return UNetConfig.small(in_channels=latent_channels, model_channels=model_channels, context_dim=context_dim,
                            concat_channels=concat_channels, **overrides)


def first_stage(name: str) -> nn.Module:
    """An autoencoder by shipped name or folder (a run folder's `model/` is found too); "identity" for LDM-1."""
    if name == "identity":
        return IdentityAutoencoder()
    path = Path(name)
    if not path.is_dir() and (paths.PRETRAINED_DIR / name).is_dir():
        path = paths.PRETRAINED_DIR / name
    if (path / FINAL_DIR / "config.json").is_file():
        path = path / FINAL_DIR
    if not (path / "config.json").is_file():
        if name in RECIPES:
            return load_or_train(name)[0]
        raise FileNotFoundError(f"autoencoder {name!r} not found: pass a shipped name ({', '.join(shipped_names('ae-'))})"
                                f", a model folder, or 'identity'")
    return Autoencoder.from_pretrained(path)


def conditioner(cfg: TrainConfig, ae: nn.Module) -> nn.Module | None:
    """τ_θ for `cfg.condition` (None: unconditional): text (BERT tokens + transformer), frozen-text (MiniLM),
    layout (Fourier box tokens) or layout-tokens (the reference's 3 discrete tokens per object), class (MNIST
    digits) or shapes-class (the kind of a `shapes` item), mnist-text, sr, inpaint, semantic."""
    d = cfg.context_dim
    makers: dict[str | None, Callable[[], nn.Module | None]] = {
        None: lambda: None,
        "text": lambda: TextConditioner(TextConditionerConfig(dim=d, max_length=16,
                                                              vocabulary=datasets.shapes_vocabulary())),
        "frozen-text": lambda: FrozenTextConditioner(FrozenTextConditionerConfig(
            dim=d, max_length=16, vocabulary=datasets.shapes_vocabulary())),
        "layout": lambda: LayoutConditioner(LayoutConditionerConfig(dim=d, max_objects=cfg.max_shapes)),
        "layout-tokens": lambda: LayoutTokenConditioner(LayoutTokenConditionerConfig(dim=d, max_objects=cfg.max_shapes)),
        "class": lambda: ClassConditioner(ClassConditionerConfig(num_classes=10, dim=d)),
        "shapes-class": lambda: ClassConditioner(ClassConditionerConfig(num_classes=len(datasets.KINDS), dim=d)),
        "mnist-text": lambda: TextConditioner(TextConditionerConfig(dim=d, max_length=6,
                                                                    vocabulary=datasets.mnist_vocabulary())),
        "sr": lambda: SuperResolutionConditioner(SuperResolutionConfig(factor=4, channels=ae.config.in_channels)),
        "inpaint": lambda: InpaintingConditioner(InpaintingConfig(latent_channels=ae.latent_channels)),
        "semantic": lambda: SemanticConditioner(),
    }
    if cfg.condition not in makers:
        raise UsageError(f"condition={cfg.condition!r} is unknown; use one of {sorted(k for k in makers if k)} or None")
    return makers[cfg.condition]()


def build_ldm(cfg: TrainConfig, autoencoder: nn.Module | None = None) -> LatentDiffusion:
    """The untrained LDM of a config: its first stage (frozen), `small_unet` and its conditioner."""
    ae = autoencoder if autoencoder is not None else first_stage(cfg.autoencoder)
    cond = conditioner(cfg, ae)
    concat = cond.concat_channels if cond is not None else 0
    context = cond.context_dim if cond is not None else None
    unet = UNet(small_unet(ae.latent_channels, model_channels=cfg.model_channels, context_dim=context,
                           concat_channels=concat))
    schedule = Schedule.scaled_linear(beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    return LatentDiffusion(ae, unet, cond, schedule=schedule, image_size=cfg.resolution, prediction=cfg.prediction,
                           cond_drop_prob=0.0 if concat else cfg.cond_drop_prob)


def training_data(name: str, resolution: int = 32, n_train: int = 20_000, max_shapes: int = 3,
                  channels: int = 3, seed: int = 0, max_shapes_share: float | None = None) -> tuple[Any, Any]:
    """(training dataset, held-out dataset) by name: "shapes" (seed `seed` / HELDOUT_SEED, 512 held out; the
    training images with `max_shapes_share` of them holding max_shapes shapes, the held-out ones as drawn), "mnist"
    (the offline train/test split), a folder of images (the last 10% held out) or "hub:<name or path>"
    (its train/test splits). Items are dicts with "image" (C, H, W) in [-1, 1]."""
    if name == "shapes":
        return (datasets.shapes(resolution, n=n_train, seed=seed, max_shapes=max_shapes,
                                max_shapes_share=max_shapes_share),
                datasets.shapes(resolution, n=512, seed=HELDOUT_SEED, max_shapes=max_shapes))
    if name == "mnist":
        train = datasets.mnist(resolution, channels=channels, split="train", source="offline")
        return (_first(train, n_train), datasets.mnist(resolution, channels=channels, split="test", source="offline"))
    if name.startswith("hub:"):
        return (datasets.from_hub(name[4:], resolution=resolution, channels=channels, split="train"),
                datasets.from_hub(name[4:], resolution=resolution, channels=channels, split="test"))
    if Path(name).is_dir():
        ds = datasets.image_folder(name, resolution=resolution, channels=channels)
        if len(ds) < 2:
            raise UsageError(f"the image folder {name} holds {len(ds)} image(s); training needs at least 2")
        n_test = max(1, len(ds) // 10)
        log.info("%s: %d images, the last %d (10%%) held out for evaluation", name, len(ds), n_test)
        idx = list(range(len(ds)))
        return _first(torch.utils.data.Subset(ds, idx[:-n_test]), n_train), torch.utils.data.Subset(ds, idx[-n_test:])
    raise UsageError(f"unknown dataset {name!r}: use shapes, mnist, a folder of images, or hub:<name or path> "
                     "(e.g. hub:cifar10)")


def _first(ds: Any, n: int) -> Any:
    return ds if len(ds) <= n else torch.utils.data.Subset(ds, list(range(n)))


def ldm_data(cfg: TrainConfig, channels: int = 3) -> Any:
    """The training items of an LDM config, with the fields its condition reads (lowres / inpaint_mask)."""
    train, _ = training_data(cfg.dataset, cfg.resolution, cfg.n_train, cfg.max_shapes, channels, cfg.seed,
                             cfg.max_shapes_share)
    if cfg.condition == "sr":
        return datasets.SuperResolutionPairs(train, degradation=cfg.degradation, factor=4, seed=cfg.seed)
    if cfg.condition == "inpaint":
        return datasets.InpaintingMasks(train, seed=cfg.seed)
    return train


def stack_images(ds: Any, n: int | None = None) -> torch.Tensor:
    """The first n images of a dataset of dicts as one tensor (n, C, H, W)."""
    n = len(ds) if n is None else min(n, len(ds))
    return torch.stack([ds[i]["image"] for i in range(n)])


def autoencoder_loss_config(cfg: TrainConfig) -> AutoencoderLossConfig:
    """The first stage's loss of a config: the paper's (`full`) or reconstruction + regularizer only (`short`)."""
    if cfg.loss not in ("full", "short"):
        raise UsageError(f"loss={cfg.loss!r}; use 'full' or 'short'")
    if cfg.loss == "short":
        return AutoencoderLossConfig(perceptual_weight=0.0, kl_weight=cfg.kl_weight, disc_start=None,
                                     learn_logvar=cfg.learn_logvar)
    start = cfg.steps * 3 // 4 if cfg.disc_start is None else (None if cfg.disc_start < 0 else cfg.disc_start)
    weight = 1.0 if cfg.perceptual_weight is None else cfg.perceptual_weight
    return AutoencoderLossConfig(perceptual_weight=weight, lpips_net=cfg.lpips_net, kl_weight=cfg.kl_weight,
                                 disc_start=start, learn_logvar=cfg.learn_logvar)


# ============================================================================================== trainers
def _checkpoint_every(cfg: TrainConfig) -> int:
    return cfg.checkpoint_every or max(100, cfg.steps // 10)


def _train_autoencoder(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    """A KL/VQ autoencoder (§3.1): trained, scale factor 1/std(z) estimated, judged on held-out images."""
    overrides: dict[str, Any] = {"latent_channels": cfg.latent_channels, "base_channels": cfg.base_channels}
    if cfg.preset.startswith("vq"):
        overrides["codebook_size"] = cfg.codebook_size
    train, test = training_data(cfg.dataset, cfg.resolution, cfg.n_train, cfg.max_shapes, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    ae = Autoencoder(AutoencoderConfig.preset(cfg.preset, **overrides))
    _init(ae, cfg.init_from)
    history = train_autoencoder(ae, train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                loss_config=autoencoder_loss_config(cfg), ema=cfg.ema, device=cfg.device, out_dir=out,
                                checkpoint_every=_checkpoint_every(cfg), resume=resume, seed=cfg.seed,
                                progress=progress)
    ae = ae.cpu().eval()
    estimate_scale_factor(ae, stack_images(train, 1024), generator=torch.Generator().manual_seed(0))
    images = stack_images(test, cfg.n_eval)
    metrics = reconstruction_metrics(ae, images, lpips_net="alex" if images.shape[1] == 3 else None)
    metrics.update(scale_factor=float(ae.scale_factor), eval_images=len(images),
                   eval_data=f"{cfg.dataset} held out ({len(images)} images never used for training)",
                   params=sum(p.numel() for p in ae.parameters()), compression=ae.config.compression())
    return TrainResult(ae, history, metrics, out, cfg)


def _train_ldm(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    """An LDM (eq. 2; eq. 3 with a condition) on its frozen first stage, from the latent cache by default."""
    if cfg.latent_cache and cfg.condition == "inpaint":
        raise UsageError("latent_cache=True cannot serve inpainting: its conditioner encodes each masked image "
                         "during training; set latent_cache=False (on the command line: --no-latent-cache)")
    torch.manual_seed(cfg.seed)
    ldm = build_ldm(cfg)
    _init(ldm, cfg.init_from)
    data = ldm_data(cfg, channels=ldm.autoencoder.config.in_channels)
    history = train_ldm(ldm, data, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                        ema=cfg.ema, device=cfg.device, out_dir=out, checkpoint_every=_checkpoint_every(cfg),
                        resume=resume, seed=cfg.seed, max_seconds=cfg.max_seconds, budget_clock=cfg.budget_clock,
                        min_steps=cfg.min_steps,
                        latent_cache=cfg.latent_cache, text_cache=cfg.text_cache, progress=progress,
                        sync_every=cfg.sync_every,
                        compile={"mode": cfg.compile} if cfg.compile else False)
    return TrainResult(ldm.eval(), history, {}, out, cfg)


def _train_shapes_classifier(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    model, history = train_shapes_classifier(steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed, lr=cfg.lr,
                                             resolution=cfg.resolution, device=cfg.device, out_dir=out,
                                             checkpoint_every=_checkpoint_every(cfg), resume=resume,
                                             progress=progress)
    return TrainResult(model.eval(), history, evaluate_classifier(model.cpu(), n=cfg.n_eval), out, cfg)


def _train_shapes_judge(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    """The shapes judge: the shipped `shapes-classifier-32` unchanged (its features are every FID's) plus a
    `CleanImageGate` of width `base_channels`, trained on `classifier.unclean` images; judged by `evaluate_judge`."""
    from .classifier import evaluate_judge
    from .train import train_clean_gate

    base, _ = load_or_train("shapes-classifier-32", progress=progress)
    torch.manual_seed(cfg.seed)
    model = ShapesClassifier(replace(base.config, gate_width=cfg.base_channels))
    model.load_state_dict({**model.state_dict(), **base.state_dict()})  # all but the new gate: the classifier's
    history = train_clean_gate(model, steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed, lr=cfg.lr,
                               device=cfg.device, out_dir=out, checkpoint_every=_checkpoint_every(cfg), resume=resume,
                               progress=progress)
    model = model.cpu().eval()
    return TrainResult(model, history, evaluate_judge(model, n=cfg.n_eval), out, cfg)


def _train_mnist_classifier(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    model, metrics = train_mnist_classifier(epochs=max(1, cfg.steps), batch_size=cfg.batch_size, lr=cfg.lr,
                                            seed=cfg.seed, out_dir=out, resume=resume, progress=progress)
    return TrainResult(model, {}, metrics, out, cfg)


def _train_segmenter(cfg: TrainConfig, out: Path, progress: bool, resume: bool = True) -> TrainResult:
    model, history = train_segmenter(steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed, out_dir=out,
                                     resume=resume, progress=progress, device=cfg.device)
    return TrainResult(model.eval(), history, validate(model, cfg.n_eval), out, cfg)


def _init(model: nn.Module, path: str | None) -> None:
    """Copy a saved model's weights into `model` (same architecture; fine-tuning), or say what differs."""
    if path is None:
        return
    src = type(model).from_pretrained(Path(path) / FINAL_DIR if (Path(path) / FINAL_DIR).is_dir() else path)
    if src.config != model.config:
        theirs, ours = asdict(src.config), asdict(model.config)
        diff = next(k for k in ours if theirs.get(k) != ours[k])
        raise UsageError(f"init_from={str(path)!r} holds a model with {diff}={theirs.get(diff)!r}, but this recipe "
                         f"builds {diff}={ours[diff]!r}; start from a model made by the same recipe")
    model.load_state_dict(src.state_dict())


# ============================================================================================== the registry
def _ae(name: str, preset: str, what: str, **kw: Any) -> Recipe:
    return Recipe(name, what, _train_autoencoder, {"preset": preset, "batch_size": 16, "lr": 4e-4, "ema": 0.999,
                                                   "max_shapes": 3, **kw})


def _ldm(name: str, what: str, note: str = "", gpu: dict[str, Any] | None = None, **kw: Any) -> Recipe:
    return Recipe(name, what, _train_ldm, kw, note, gpu or {})


# The conditional models train at width 32 on a CPU (a width-64 step costs ~1.5x, benchmarks/results/unet_cpu.md);
# their GPU preset gives them the unconditional model's width 64 as well (a preset, not measured on a GPU).
_WIDE = {"model_channels": 64}


_TWO_RUNS = ("Shipped weights: two runs, the second started from the first with `--init-from` ({}); one run of "
             "the recipe spends about the same number of images.")
_LIST = [
    # first stages (§3.1, Tab. 8)
    _ae("ae", "kl-f4", "any KL/VQ autoencoder on any dataset (--preset, --dataset, --latent-channels)"),
    _ae("ae-kl-f4-shapes32", "kl-f4", "KL f=4 c=3 on shapes 32x32, LPIPS + PatchGAN", steps=2_500, batch_size=8,
        disc_start=2_000, learn_logvar=True),
    _ae("ae-vq-f4-shapes32", "vq-f4", "VQ f=4 c=3 on shapes 32x32, LPIPS + PatchGAN", steps=2_500, batch_size=8,
        disc_start=1_200),
    _ae("ae-kl-f2-shapes32", "kl-f2", "KL f=2 c=3 (f sweep, short loss)", steps=1_500, loss="short", learn_logvar=True),
    _ae("ae-kl-f8-shapes32", "kl-f8", "KL f=8 c=3 (f sweep, short loss)", steps=1_500, loss="short", learn_logvar=True),
    _ae("ae-kl-f16-shapes32", "kl-f16", "KL f=16 c=3 (f sweep, short loss)", steps=1_500, loss="short",
        learn_logvar=True),
    _ae("ae-kl-f8-c4-shapes32", "kl-f8", "KL f=8 c=4, the paper's (f, c) (short loss)", steps=500, loss="short",
        latent_channels=4),
    _ae("ae-kl-f16-c16-shapes32", "kl-f16", "KL f=16 c=16, the paper's (f, c) (short loss)", steps=500, loss="short",
        latent_channels=16),
    _ae("ae-kl-f4-mnist32", "kl-f4", "KL f=4 c=3 on MNIST 32x32 (short loss)", dataset="mnist", steps=750,
        loss="short", learn_logvar=True),
    # the fair first stages of the trade-off (§4.1, issue 24): the paper's (f, c) at 64x64, one loss and budget
    *(_ae(f"ae-kl-f{f}-c{c}-shapes64", f"kl-f{f}", f"KL f={f} c={c} on shapes 64x64: the trade-off's equal first "
          "stages (short loss, 1,000 steps of batch 16 each)", resolution=64, latent_channels=c, loss="short",
          steps=1_000) for f, c in ((2, 3), (4, 3), (8, 4), (16, 16), (32, 64))),
    # diffusion models (§4)
    _ldm("ldm", "an LDM on any autoencoder and dataset (--autoencoder, --dataset, --condition)"),
    _ldm("ldm-kl-f4-shapes32", "unconditional LDM-4 on shapes 32x32 (the main job's recipe)", steps=4_000, lr=1e-3),
    _ldm("ldm-kl-f4-shapes32-text", "text-to-image on captioned shapes (1-2 shapes), BERT tokens + transformer",
         condition="text", max_shapes=2, max_shapes_share=1.0, steps=30_271, batch_size=32, model_channels=32,
         gpu=_WIDE, note="Shipped weights: `--max-shapes-share 1.0 --steps 1000000 --budget-clock cpu --max-seconds "
                         "6000` on 1 thread stopped at step 30,271 (issue 25's long run of the best lever arm, balance "
                         "two-85: 85% two-shape captions); the recipe's steps are that number."),
    _ldm("ldm-kl-f4-shapes32-frozen-text", "text-to-image with the frozen MiniLM encoder (not shipped)",
         condition="frozen-text", max_shapes=2, steps=4_000, batch_size=32, model_channels=32, gpu=_WIDE),
    _ldm("ldm-kl-f4-shapes32-layout", "layout-to-image: boxes + classes of 1-2 shapes", condition="layout",
         max_shapes=2, steps=10_641, batch_size=32, n_train=10_000, model_channels=32, gpu=_WIDE,
         note="Shipped weights: the 1,800 CPU-s arm of `scripts/conditioning_levers.py --lever resolution-layout "
              "--arm f4-32` (`--steps 1000000 --budget-clock cpu --max-seconds 1800` on 1 thread stopped at step "
              "10,641; the recipe's steps are that number, the learning rate is constant after warm-up)."),
    _ldm("ldm-kl-f4-shapes32-class", "class-conditional shapes: class = kind (colour and size random)",
         condition="shapes-class", steps=11_219, batch_size=32, model_channels=32, gpu=_WIDE,
         note="Shipped weights: the 1,800 CPU-s arm of `scripts/conditioning_levers.py --lever class --arm w32` "
              "(`--steps 1000000 --budget-clock cpu --max-seconds 1800` on 1 thread stopped at step 11,219; the "
              "recipe's steps are that number, the learning rate is constant after warm-up)."),
    _ldm("ldm-kl-f4-mnist32-class", "class-conditional MNIST", condition="class", dataset="mnist",
         autoencoder="ae-kl-f4-mnist32", steps=3_000, batch_size=32, model_channels=32, gpu=_WIDE,
         note="Shipped weights: trained on the latent posterior's mean (an earlier cache); the recipe draws z ~ q(z|x)."),
    _ldm("ldm-kl-f4-mnist32-text", "MNIST from captions ('a handwritten seven'; not shipped)", condition="mnist-text",
         dataset="mnist", autoencoder="ae-kl-f4-mnist32", steps=3_000, batch_size=32, model_channels=32, gpu=_WIDE),
    _ldm("ldm-sr4-bicubic-shapes32", "x4 super-resolution trained on bicubic low-res inputs (LDM-SR)",
         condition="sr", steps=5_000, model_channels=32, note=_TWO_RUNS.format("1,000 steps of batch 16, then 4,000 "
                                                                                "of batch 64 from the latent cache")),
    _ldm("ldm-sr4-realistic-shapes32", "x4 super-resolution trained on realistic degradations (LDM-BSR)",
         condition="sr", degradation="realistic", steps=5_000, model_channels=32,
         note=_TWO_RUNS.format("1,000 steps of batch 16, then 4,000 of batch 64 from the latent cache")),
    _ldm("ldm-inpaint-shapes32", "inpainting: masked latent + mask concatenated", condition="inpaint",
         latent_cache=False, steps=13_000, batch_size=32, model_channels=32,
         note=_TWO_RUNS.format("1,409 steps of batch 16, then 12,000 of batch 32")),
    _ldm("ldm-semantic-shapes32", "semantic synthesis from shapes class maps", condition="semantic", steps=6_500,
         model_channels=32, note=_TWO_RUNS.format("1,965 steps of batch 16, then 6,000 of batch 64 from the cache")),
    # the judges
    Recipe("shapes-classifier-32", "the ShapesClassifier (shapes score, FID features; frozen)",
           _train_shapes_classifier, {"steps": 800, "batch_size": 128, "lr": 2e-3, "n_eval": 2_000}),
    Recipe("shapes-judge-32", "the shapes judge: shapes-classifier-32 unchanged + a gate that rejects noise, blanks, "
           "noisy backgrounds and several shapes (base_channels = gate width)", _train_shapes_judge,
           {"steps": 1_200, "batch_size": 64, "lr": 2e-3, "base_channels": 16, "n_eval": 300}),
    Recipe("mnist-classifier-32", "the MNIST classifier (class-conditional accuracy, FID features); steps = epochs",
           _train_mnist_classifier, {"steps": 8, "batch_size": 64, "lr": 3e-3}),
    Recipe("shapes-segmenter-32", "the shapes segmenter (mask IoU, object finding)", _train_segmenter,
           {"steps": 600, "batch_size": 32, "n_eval": 1_000}),
]
RECIPES: dict[str, Recipe] = {r.name: r for r in _LIST}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def config(name: str, gpu: bool = False, **overrides: Any) -> TrainConfig:
    """The TrainConfig of recipe `name`: defaults, the recipe's fields, the GPU preset (`gpu`: `TrainConfig.gpu()`,
    then the recipe's GPU sizes), then `overrides`."""
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise UsageError(f"{bad} are not TrainConfig fields; known: {sorted(known)}")
    cfg = TrainConfig(**recipe(name).overrides)
    return replace(replace(cfg.gpu(), **recipe(name).gpu) if gpu else cfg, **overrides)


def shipped_names(prefix: str = "") -> list[str]:
    return sorted(p.name for p in paths.PRETRAINED_DIR.glob(f"{prefix}*") if (p / "config.json").is_file())


def default_out(name: str, cfg: TrainConfig) -> Path:
    """outputs/<recipe>/; the generic recipes are keyed on what makes a run differ: outputs/ae/<preset>[-c<c>]-
    <dataset><side> and outputs/ldm/<dataset>-<autoencoder>[-<condition>]."""
    if name == "ae":
        c = f"-c{cfg.latent_channels}" if cfg.latent_channels != 3 else ""
        return paths.OUTPUTS_DIR / "ae" / f"{cfg.preset}{c}-{_tag(cfg.dataset)}{cfg.resolution}"
    if name == "ldm":
        condition = f"-{cfg.condition}" if cfg.condition else ""
        return paths.OUTPUTS_DIR / "ldm" / f"{_tag(cfg.dataset)}-{_tag(cfg.autoencoder)}{condition}"
    return paths.OUTPUTS_DIR / name


def _tag(name: str) -> str:
    p = Path(name.removeprefix("hub:"))
    return (p.parent.name if p.name == FINAL_DIR else p.name).replace("/", "-") or "data"


# ============================================================================================== train / load
def train(name: str, out: str | Path | None = None, *, progress: bool = True, gpu: bool = False, resume: bool = True,
          **overrides: Any) -> TrainResult:
    """Train recipe `name` (resumable: run it again to continue) under `out` (default `default_out`), save the
    model to `<out>/model` with `train_config.json` and `metrics.json` beside it; `resume=False` starts over from
    step 0 (the CLI's `--fresh`). A run resumed with other settings stops with one line naming the field that
    differs (`fit`). Returns a `TrainResult`."""
    cfg = config(name, gpu=gpu, **overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out) if out is not None else default_out(name, cfg)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the output folder {run} ({e.strerror or e}); choose a writable "
                              "folder (--out)") from e
    t0 = time.perf_counter()
    result = recipe(name).trainer(cfg, run, progress, resume)
    result.metrics = {**result.metrics, "recipe": name, "wall_seconds_this_call": round(time.perf_counter() - t0, 1)}
    result.model.save_pretrained(run / FINAL_DIR)
    write_json(run / "train_config.json", asdict(cfg))
    write_json(run / "metrics.json", result.metrics)
    if result.history:
        write_json(run / "history.json", result.history)
    log.info("%s: model saved to %s", name, run / FINAL_DIR)
    return result


def load(name_or_path: str | Path, device: str | torch.device = "auto") -> nn.Module:
    """Any model folder (shipped name, folder, or a run folder holding `model/`) with the class its config names,
    in eval mode on `device` ("auto": `runtime.pick_device`); `from_pretrained` of that class."""
    path = Path(name_or_path)
    if not path.exists() and (paths.PRETRAINED_DIR / str(name_or_path)).is_dir():
        path = paths.PRETRAINED_DIR / str(name_or_path)
    if (path / FINAL_DIR / "config.json").is_file():
        path = path / FINAL_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {name_or_path}: pass a shipped name ({', '.join(shipped_names())}), a "
                                "model folder (config.json + model.safetensors) or a run folder holding model/")
    kind = read_json(path / "config.json").get("kind")
    if kind not in MODEL_CLASSES:
        raise UsageError(f"{path} holds a {kind!r}; ldm_lite loads {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[kind].from_pretrained(path).to(pick_device(device)).eval()


MODEL_CLASSES: dict[str, type] = {c.__name__: c for c in (Autoencoder, IdentityAutoencoder, LatentDiffusion,
                                                         ShapesClassifier, MNISTClassifier, ShapesSegmenter)}


def load_or_train(name: str, out: str | Path | None = None, *, progress: bool = True, prefer_shipped: bool = True,
                  **overrides: Any) -> tuple[nn.Module, str]:
    """The shipped model `name` when present (and `prefer_shipped`), else one trained earlier under `out` with the
    same settings, else one trained now with its recipe and `overrides` (e.g. fewer steps for a quick model);
    returns (model, where it came from), on `device` (an override; default "auto") whichever it is."""
    cfg = config(name, **overrides)
    if prefer_shipped and (paths.PRETRAINED_DIR / name / "config.json").is_file():
        return load(name, cfg.device), f"shipped ({name})"
    run = Path(out) if out is not None else default_out(name, cfg)
    if (run / FINAL_DIR / "config.json").is_file() and _same_config(run, cfg):
        return load(run, cfg.device), f"trained here earlier ({run})"
    log.warning("no shipped %s: training one here (%d steps, %s)", name, cfg.steps, run)
    return train(name, run, progress=progress, **overrides).model, f"trained now ({cfg.steps} steps, {run})"


def _same_config(run: Path, cfg: TrainConfig) -> bool:
    """Whether `run` was trained with `cfg`; a field added to TrainConfig after the run counts as its default."""
    try:
        saved = read_json(run / "train_config.json")
    except (FileNotFoundError, ValueError):
        return False
    return {**asdict(TrainConfig()), **saved} == asdict(cfg)


def get_classifier():
    """The shapes judge: the shipped `shapes-judge-32` (the frozen `shapes-classifier-32`, whose features every FID
    in the README depends on, plus its gate against noise, blanks and several shapes); else the bare classifier
    (the judge before issue 24, with a warning); else None."""
    for name in ("shapes-judge-32", "shapes-classifier-32"):
        path = paths.PRETRAINED_DIR / name
        if path.is_dir():
            if name != "shapes-judge-32":
                log.warning("no data/pretrained/shapes-judge-32: the shapes score uses the old judge, which pure "
                            "noise can fool (`ldm-lite train shapes-judge-32 --ship` makes the new one)")
            return ShapesClassifier.from_pretrained(path)
    return None


# ============================================================================================== shipping
def command_line(prefix: str = "ldm-lite") -> str:
    """The command that is running, as a README should quote it."""
    return f"{prefix} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def ship(model: Any, dest: str | Path, metrics: dict, command: str, title: str, body: str = "",
         readme: str | None = None, half: bool = False) -> Path:
    """Write `model` (a module with save_pretrained, or a folder holding one) to `dest` (a name under
    data/pretrained/ or a path) atomically, with metrics.json and a README.md naming `command`. `half`: its
    parameters stored in float16 (a module only; measure it after `checkpoint.round_to_half` to report what ships)."""
    if half and isinstance(model, (str, Path)):
        raise UsageError(f"ship(half=True) takes a loaded model, got the folder {model}; load it first")
    dest = Path(dest) if Path(dest).is_absolute() or len(Path(dest).parts) > 1 else paths.PRETRAINED_DIR / str(dest)
    metrics = {**metrics, "shipped_at": time.strftime("%Y-%m-%d")}
    with atomic_dir(dest) as tmp:
        if isinstance(model, (str, Path)):
            for f in Path(model).iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        else:
            model.save_pretrained(tmp, half=half)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "README.md").write_text(readme or (f"# {title}\n\n{body}\n\nMade by (from the repository root):\n\n"
                                                  f"    {command}\n\nMeasured metrics of this run: metrics.json.\n"))
    log.info("shipped %s", dest)
    return dest


def recipes_table() -> str:
    """Markdown: one row per recipe with the TrainConfig fields it changes (the README's table)."""
    rows = ["| recipe | what | changes from `TrainConfig()` | GPU preset also sets |", "|---|---|---|---|"]
    for r in RECIPES.values():
        rows.append(f"| `{r.name}` | {r.what} | {', '.join(f'{k}={v}' for k, v in r.overrides.items()) or '-'} | "
                    f"{', '.join(f'{k}={v}' for k, v in r.gpu.items()) or '-'} |")
    return "\n".join(rows)


def recipes_doc() -> str:
    """docs/recipes.md: the table of recipes and the `TrainConfig` defaults."""
    defaults = "\n".join(f"| `{f.name}` | `{f.default!r}` |" for f in fields(TrainConfig))
    return f"""# Recipes: every model the kit trains, by name

`ldm-lite train <recipe>` (or `ldm_lite.recipes.train("<recipe>")`) trains it; every field below is also a flag
(`--batch-size 32`). This file is `recipes.recipes_doc()`; `tests/test_recipes.py` fails when it and the code
disagree (regenerate: `python -c "from ldm_lite import recipes; print(recipes.recipes_doc(), end='')" > docs/recipes.md`).

## What each recipe changes

{recipes_table()}

## The defaults (`TrainConfig`)

| field | default |
|---|---|
{defaults}

On a GPU, `ldm-lite train <recipe> --gpu` (`recipes.config(name, gpu=True)`, `TrainConfig.gpu()`): a 4x larger batch
at half the learning rate, 5x the steps and warm-up, at least 50,000 training images, EMA 0.999, and the sizes in
the recipe's last column (the conditional models' width 64 instead of their CPU width 32). A preset, not measured on
a GPU.
"""


"""Recipes: where every model comes from, in one place.

"The shipped model when present, else train it with this recipe" for autoencoders (per kind, f and dataset), the
unconditional LDM and the shapes classifier; the first stage's loss presets; the datasets a training stage takes
by name; and `ship`, which writes a model to `data/pretrained/<name>/` with metrics.json and a README naming the
command that made it. The CLI, the main job and the notebooks get their models from here.

    ae, source = get_autoencoder("kl", 4, "shapes")                   # shipped ae-kl-f4-shapes32, else trained
    train, held_out = training_data("mnist", resolution=32)           # shapes | mnist | <image folder> | hub:<name>
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import datasets
from .autoencoder import Autoencoder, AutoencoderConfig, estimate_scale_factor
from .checkpoint import atomic_dir, write_json
from .fit import FINAL_DIR
from .losses import AutoencoderLossConfig
from .paths import OUTPUTS_DIR, PRETRAINED_DIR

log = logging.getLogger(__name__)

SHIPPED_LDM = "ldm-kl-f4-shapes32"
SHIPPED_CLASSIFIER = "shapes-classifier-32"


# ----------------------------------------------------------------------------------------------- loss presets
def short_loss(kl_weight: float = 1e-6, learn_logvar: bool = False) -> AutoencoderLossConfig:
    """L1 reconstruction + KL / VQ terms; no LPIPS, no GAN (`disc_start=None`). A 32x32 step then costs ~0.1-0.3 s
    on a CPU instead of ~1 s: the f sweep and the main job's fallback. `learn_logvar`: see `AutoencoderLossConfig`."""
    return AutoencoderLossConfig(perceptual_weight=0.0, kl_weight=kl_weight, disc_start=None, learn_logvar=learn_logvar)


def full_loss(steps: int, disc_start: int | None = None, lpips_net: str = "vgg",
              kl_weight: float = 1e-6, learn_logvar: bool = False) -> AutoencoderLossConfig:
    """The paper's first-stage loss (§3.1, App. G): L1 + LPIPS + KL / VQ + PatchGAN; the GAN switches on at
    `disc_start` (default: after three quarters of `steps`, so the autoencoder reconstructs before D judges it)."""
    return AutoencoderLossConfig(perceptual_weight=1.0, lpips_net=lpips_net, kl_weight=kl_weight,
                                 disc_start=steps * 3 // 4 if disc_start is None else disc_start,
                                 learn_logvar=learn_logvar)


def loss_tag(loss: AutoencoderLossConfig, steps: int) -> str:
    return "full-loss" if loss.perceptual_weight > 0 or loss.gan_within(steps) else "short-loss"


# ----------------------------------------------------------------------------------------------- datasets
def training_data(name: str, resolution: int = 32, n_train: int = 20_000, max_shapes: int = 3,
                  channels: int = 3) -> tuple[Any, Any]:
    """(training dataset, held-out dataset) by name: "shapes" (seed 0 / held-out seed 1, 512 images), "mnist"
    (the offline train/test split), a folder of images (the last 10% held out) or "hub:<name or path>"
    (its train/test splits). Items are dicts with "image" (C, H, W) in [-1, 1]."""
    if name == "shapes":
        return (datasets.shapes(resolution, n=n_train, seed=0, max_shapes=max_shapes),
                datasets.shapes(resolution, n=512, seed=1, max_shapes=max_shapes))
    if name == "mnist":
        return (datasets.mnist(resolution, channels=channels, split="train", source="offline"),
                datasets.mnist(resolution, channels=channels, split="test", source="offline"))
    if name.startswith("hub:"):
        return (datasets.from_hub(name[4:], resolution=resolution, channels=channels, split="train"),
                datasets.from_hub(name[4:], resolution=resolution, channels=channels, split="test"))
    if Path(name).is_dir():
        ds = datasets.image_folder(name, resolution=resolution, channels=channels)
        n_test = max(1, len(ds) // 10)
        if len(ds) < 2:
            raise ValueError(f"the image folder {name} holds {len(ds)} image(s); training needs at least 2")
        idx = torch.arange(len(ds))
        log.info("%s: %d images, the last %d (%d%%) held out for evaluation and never trained on", name, len(ds), n_test,
                 round(100 * n_test / len(ds)))
        return torch.utils.data.Subset(ds, idx[:-n_test].tolist()), torch.utils.data.Subset(ds, idx[-n_test:].tolist())
    raise ValueError(f"unknown dataset {name!r}: use shapes, mnist, a folder of images, or hub:<name or path> "
                     "(e.g. hub:cifar10)")


def stack_images(ds: Any, n: int | None = None) -> torch.Tensor:
    """The first n images of a dataset of dicts as one tensor (n, C, H, W)."""
    n = len(ds) if n is None else min(n, len(ds))
    return torch.stack([ds[i]["image"] for i in range(n)])


# ----------------------------------------------------------------------------------------------- autoencoders
def shipped_name(kind: str, f: int, dataset: str, resolution: int = 32) -> str:
    """`("kl", 4, "shapes")` -> `"ae-kl-f4-shapes32"`, the name shipped autoencoders have in data/pretrained/."""
    return f"ae-{kind}-f{f}-{dataset}{resolution}"


def train_autoencoder_run(config: AutoencoderConfig, train_data: Any, run_dir: Path, *, steps: int,
                          batch_size: int = 16, lr: float = 4e-4, loss: AutoencoderLossConfig | None = None,
                          ema: float | None = None, device: str | torch.device = "cpu", seed: int = 0,
                          checkpoint_every: int | None = None, progress: bool = True,
                          resume: bool = True) -> tuple[Autoencoder, dict]:
    """Train a new autoencoder (resumable under `run_dir/checkpoint`), estimate its scale factor 1/std(z) on up to
    1,024 training images, save it to `run_dir/model`; returns it (eval mode, CPU) and its history."""
    from .train import train_autoencoder

    torch.manual_seed(seed)
    ae = Autoencoder(config)
    history = train_autoencoder(ae, train_data, steps=steps, batch_size=batch_size, lr=lr,
                                loss_config=loss or short_loss(), ema=ema, device=device, out_dir=run_dir,
                                checkpoint_every=checkpoint_every or max(100, steps // 10), resume=resume, seed=seed,
                                progress=progress)
    ae = ae.cpu().eval()
    images = train_data if isinstance(train_data, torch.Tensor) else stack_images(train_data, 1024)
    estimate_scale_factor(ae, images[:1024], generator=torch.Generator().manual_seed(0))
    ae.save_pretrained(run_dir / FINAL_DIR)
    write_json(run_dir / "history.json", history)
    return ae, history


def get_autoencoder(kind: str = "kl", f: int = 4, dataset: str = "shapes", train_data: Any = None, *,
                    steps: int = 800, batch_size: int = 16, lr: float = 4e-4,
                    loss: AutoencoderLossConfig | None = None, prefer_shipped: bool = True,
                    out: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0,
                    resolution: int = 32, progress: bool = True) -> tuple[Autoencoder, str]:
    """An autoencoder `AutoencoderConfig.preset(f"{kind}-f{f}")` for `dataset`, and where it came from.

    Order: the shipped `data/pretrained/ae-{kind}-f{f}-{dataset}{resolution}` (when `prefer_shipped`), else one
    trained here earlier with the same settings (under `out`, default outputs/autoencoders), else a new one
    trained now for `steps` steps on `train_data` (default: `training_data(dataset)`) with `loss` (default:
    `short_loss()`). Returned in eval mode on `device`.
    """
    loss = loss or short_loss()
    shipped = PRETRAINED_DIR / shipped_name(kind, f, dataset, resolution)
    if prefer_shipped and shipped.is_dir():
        return Autoencoder.from_pretrained(shipped).to(device), f"shipped ({shipped.name})"
    tag = loss_tag(loss, steps)
    run = Path(out or OUTPUTS_DIR / "autoencoders") / f"{kind}-f{f}-{dataset}-{steps}steps-b{batch_size}-{tag}"
    if (run / FINAL_DIR / "config.json").is_file():
        return Autoencoder.from_pretrained(run / FINAL_DIR).to(device), f"trained here earlier ({run})"
    if train_data is None:
        train_data = training_data(dataset, resolution)[0]
    log.info("training %s-f%d on %s here: %d steps, %s", kind, f, dataset, steps, tag)
    ae, _ = train_autoencoder_run(AutoencoderConfig.preset(f"{kind}-f{f}"), train_data, run, steps=steps,
                                  batch_size=batch_size, lr=lr, loss=loss, device=device, seed=seed,
                                  progress=progress)
    return ae.to(device), f"trained now ({steps} steps, {tag})"


def autoencoder_readme(name: str, config: AutoencoderConfig, loss: AutoencoderLossConfig, metrics: dict, *,
                       dataset: str, resolution: int, steps: int, batch_size: int, ema: float | None, threads: int,
                       command: str) -> str:
    reg = f"KL weight {loss.kl_weight}" if config.regularizer == "kl" else "VQ codebook + commitment terms"
    text = "L1" + (f" + LPIPS-{loss.lpips_net} x {loss.perceptual_weight}" if loss.perceptual_weight > 0 else "")
    if config.regularizer == "kl":
        text += " with a learned log-variance" if loss.learn_logvar else " with the log-variance fixed at 0 (the reference's)"
    text += f", {reg}"
    if loss.gan_within(steps):
        text += f", PatchGAN hinge loss with the adaptive weight from step {loss.disc_start}"
    else:
        text += "; no GAN (reconstruction + regularizer only, the short schedule of the f sweep)"
    return f"""# {name}

A {config.regularizer.upper()} autoencoder, f={config.f}, latent {config.latent_channels} channels
({config.compression():.0f}x fewer numbers than the image), {metrics['params']:,} parameters, trained on `{dataset}`
{resolution}x{resolution} for {steps} steps of batch {batch_size} (EMA {ema} weights shipped) with
{text}.

Made by (from the repository root, CPU, {threads} thread(s)):

    {command}

Training state is kept in outputs/ae/{name}/ and the command resumes from it when run again; a resumed run
ends with the same weights as an uninterrupted one (tests/test_train_autoencoder.py).

Held-out reconstruction ({metrics['eval_data']}, {metrics['eval_images']} images, posterior mode):
PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, LPIPS-alex {metrics.get('lpips', float('nan')):.4f}.
Scale factor 1/std(z) = {metrics['scale_factor']:.4f} (stored in the weights as `scale_factor`).

Load it with `ldm_lite.autoencoder.Autoencoder.from_pretrained("data/pretrained/{name}")`.
"""


# ----------------------------------------------------------------------------------------------- LDM, classifier
def get_ldm(cfg: Any = None, device: str | torch.device = "auto", out: Path | None = None,
            prefer_shipped: bool = True) -> tuple[Any, str]:
    """The shipped unconditional LDM (`data/pretrained/ldm-kl-f4-shapes32`) when present, else one trained now
    with the main job's recipe `cfg` (a `pipeline.MainConfig`, default: sized for the device)."""
    from .ldm import LatentDiffusion
    from .pipeline import MainConfig, build_ldm, main_autoencoder
    from .runtime import pick_device, smoke_mode
    from .train import train_ldm

    dev = pick_device(device)
    shipped = PRETRAINED_DIR / SHIPPED_LDM
    if prefer_shipped and shipped.is_dir():
        return LatentDiffusion.from_pretrained(shipped).to(dev), f"shipped ({shipped.name})"
    cfg = cfg or MainConfig.for_device(dev, smoke_mode())
    out = out or OUTPUTS_DIR / "notebook-ldm"
    ae, _ = main_autoencoder(cfg, train=False, out=out, device=dev)
    ldm = build_ldm(cfg, ae)
    ds = datasets.shapes(cfg.resolution, n=cfg.n_train, seed=cfg.seed, max_shapes=cfg.max_shapes)
    train_ldm(ldm, ds, steps=cfg.ldm_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup, ema=cfg.ema,
              device=dev, seed=cfg.seed)
    return ldm.eval(), f"trained now ({cfg.ldm_steps} steps; no shipped LDM found)"


def get_classifier():
    """The shipped, frozen `ShapesClassifier` (every FID in the README depends on its weights), or None."""
    from .classifier import ShapesClassifier

    path = PRETRAINED_DIR / SHIPPED_CLASSIFIER
    return ShapesClassifier.from_pretrained(path) if path.is_dir() else None


def train_classifier(out: Path, steps: int, batch_size: int, seed: int) -> dict:
    """Train the ShapesClassifier (resumable under outputs/classifier) and write it to `out` with its held-out
    metrics and a README."""
    from .classifier import evaluate_classifier
    from .train import train_shapes_classifier

    model, _ = train_shapes_classifier(steps=steps, batch_size=batch_size, seed=seed,
                                       out_dir=OUTPUTS_DIR / "classifier" / f"s{steps}-b{batch_size}-seed{seed}",
                                       resume=True)
    metrics = evaluate_classifier(model)
    cmd = f"ldm-lite train-classifier --steps {steps} --batch-size {batch_size} --seed {seed}"
    ship(model, out, metrics, cmd, "ShapesClassifier (32x32)",
         "Judges `shapes` images: kind, colour, size, and whether an image is a valid single-colour shape. Used for "
         "the shapes score, conditioning accuracy and FID features.\n\nHeld-out metrics (seed 12345, 2,000 images): "
         "metrics.json.")
    log.info("classifier metrics: %s", metrics)
    return metrics


# ----------------------------------------------------------------------------------------------- shipping
def command_line(prefix: str = "ldm-lite") -> str:
    """The command that is running, as a README should quote it."""
    return f"{prefix} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def ship(model: Any, dest: str | Path, metrics: dict, command: str, title: str, body: str = "",
         readme: str | None = None) -> Path:
    """Write `model` (a module with save_pretrained, or a folder holding one) to `dest` (a name under
    data/pretrained/ or a path) atomically, with metrics.json and a README.md naming `command`."""
    import shutil

    dest = Path(dest) if Path(dest).is_absolute() or len(Path(dest).parts) > 1 else PRETRAINED_DIR / str(dest)
    metrics = {**metrics, "shipped_at": time.strftime("%Y-%m-%d")}
    with atomic_dir(dest) as tmp:
        if isinstance(model, (str, Path)):
            for f in Path(model).iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        else:
            model.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "README.md").write_text(readme or (f"# {title}\n\n{body}\n\nMade by (from the repository root):\n\n"
                                                  f"    {command}\n\nMeasured metrics of this run: metrics.json.\n"))
    log.info("shipped %s", dest)
    return dest


def autoencoder_recipe(name: str, preset: str = "kl-f4", dataset: str = "shapes", *, resolution: int = 32,
                       n_train: int = 20_000, latent_channels: int = 3, base_channels: int = 32,
                       codebook_size: int = 256, steps: int = 3_000, batch_size: int = 16, lr: float = 4e-4,
                       ema: float | None = 0.999, loss: AutoencoderLossConfig | None = None, seed: int = 0,
                       threads: int | None = None, device: str | torch.device = "auto", ship_as: str | None = None,
                       command: str | None = None, resume: bool = True) -> dict:
    """Train (resumably, under outputs/ae/<name>/) the autoencoder `preset` on `dataset`, evaluate it on held-out
    images (PSNR, SSIM, LPIPS-alex) and, with `ship_as`, write it to data/pretrained/<ship_as>/ with metrics.json
    and a README naming `command`. Returns the metrics. `loss` defaults to `full_loss(steps)`."""
    from .metrics import reconstruction_metrics

    if threads:
        torch.set_num_threads(threads)
    overrides: dict[str, Any] = {"latent_channels": latent_channels, "base_channels": base_channels}
    if preset.startswith("vq"):
        overrides["codebook_size"] = codebook_size
    config = AutoencoderConfig.preset(preset, **overrides)
    loss = loss or full_loss(steps)
    train, test = training_data(dataset, resolution, n_train)
    t0 = time.time()
    ae, history = train_autoencoder_run(config, train, OUTPUTS_DIR / "ae" / name, steps=steps, batch_size=batch_size,
                                        lr=lr, loss=loss, ema=ema, device=device, seed=seed, resume=resume)
    test_images = stack_images(test)
    metrics = reconstruction_metrics(ae, test_images, lpips_net="alex" if test_images.shape[1] == 3 else None)
    metrics.update(scale_factor=float(ae.scale_factor), eval_images=len(test_images),
                   eval_data=f"{dataset} held out ({len(test_images)} images never used for training)",
                   train_steps=steps, batch_size=batch_size, params=sum(p.numel() for p in ae.parameters()),
                   compression=ae.config.compression(), wall_s_this_run=round(time.time() - t0, 1),
                   final_train_logs={k: v[-1] for k, v in history.items() if v and k != "step"})
    if ship_as:
        command = command or command_line()
        ship(ae, ship_as, metrics, command, ship_as,
             readme=autoencoder_readme(ship_as, config, loss, metrics, dataset=dataset, resolution=resolution,
                                       steps=steps, batch_size=batch_size, ema=ema, threads=torch.get_num_threads(),
                                       command=command))
    return metrics

"""What is trained, as step functions on the one loop `ldm_lite.fit.fit` (which owns batch order, warm-up,
clipping, EMA, the NaN guard, atomic checkpoints, exact resume, the time budget, DDP, progress and history).

- `train_autoencoder`: the first stage as LDM trains it (§3.1, App. G): each step updates the autoencoder on the
  generator loss of `ldm_lite.losses.AutoencoderLoss`, then, once the GAN is on (`disc_start`), the PatchGAN
  discriminator on the hinge loss.
- `train_ldm`: the UNet (and conditioner) on L_LDM (eq. 2); the autoencoder stays frozen.
- `train_shapes_classifier`, `train_mnist_classifier`: the judges of `shapes` and MNIST samples (`ldm_lite.classifier`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate

from .autoencoder import Autoencoder
from .classifier import MNISTClassifier, ShapesClassifier, ShapesClassifierConfig, corrupt, labelled_batch
from .datasets import mnist, shapes
from .errors import UsageError, UsageTypeError
from .fit import StepContext, distributed, fit, resolve_device
from .latents import LatentCache
from .losses import AutoencoderLossConfig, autoencoder_loss
from .text import FrozenTextConditioner
from .validation import check_int, check_number, describe

log = logging.getLogger(__name__)


class ImageSource:
    """Random access to images (N, C, H, W): from a tensor, or from a dataset of dicts with an "image" key."""

    def __init__(self, data: Any):
        self.data = data
        if not isinstance(data, torch.Tensor):
            _check_dataset(data)

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self.data, torch.Tensor):
            return self.data[idx]
        items = [self.data[int(i)] for i in idx]
        return torch.stack([it["image"] if isinstance(it, dict) else it for it in items])


def _check_dataset(data: Any) -> None:
    if isinstance(data, str | bytes) or not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise UsageTypeError(f"dataset must be an image tensor (N, C, H, W) or a map-style dataset (e.g. "
                             f"ll.datasets.shapes(32, n=1000)), got {describe(data)}")


def _check_hyper(steps: int, batch_size: int, lr: float, **more: Any) -> None:
    """The trainers' shared arguments (and `more` of train_ldm's), checked before any work."""
    check_int("steps", steps, min=0)
    check_int("batch_size", batch_size, min=1)
    if not check_number("lr", lr) > 0:
        raise UsageError(f"the learning rate must be > 0, got lr={lr}")
    for name in ("warmup", "checkpoint_every", "min_steps", "log_every", "seed"):
        if name in more:
            check_int(name, more[name], min=1 if name == "log_every" else 0)
    if more.get("ema") is not None and not 0 <= check_number("ema", more["ema"]) < 1:
        raise UsageError(f"ema is the decay of the weights' moving average, in (0, 1) (e.g. 0.999), got {more['ema']}; "
                         "ema=None (or 0) turns it off")
    if "weight_decay" in more:
        check_number("weight_decay", more["weight_decay"], min=0)
    if more.get("grad_clip") is not None:
        check_number("grad_clip", more["grad_clip"], min=0)  # 0 or None: no clipping
    if more.get("max_seconds") is not None:
        check_number("max_seconds", more["max_seconds"], min=0)


# ============================================================================================== autoencoder
def train_autoencoder(
    ae: Autoencoder,
    dataset: Any,
    steps: int = 2_000,
    batch_size: int = 16,
    lr: float = 2e-4,
    loss_config: AutoencoderLossConfig | None = None,
    ema: float | None = None,
    device: str | torch.device = "auto",
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool | str | os.PathLike | None = None,
    seed: int = 0,
    log_every: int = 1,
    progress: bool = True,
) -> dict[str, list]:
    """Train `ae` in place for `steps` steps in total; returns the history (dict of lists, one entry per logged
    step: rec, l1, nll, kl or vq/perplexity/usage, g, lam, d, logvar, loss).

    dataset: an image tensor (N, C, H, W) in [-1, 1] or a dataset of dicts with "image".
    ema: decay of an EMA of the weights (e.g. 0.999); the model ends with the EMA weights.
    out_dir: where `checkpoint/` (every `checkpoint_every` steps and at the end) and `model/` are written.
    resume: True (continue from <out_dir>/checkpoint if present) or a checkpoint folder. A resumed run ends with
    the same weights, bit for bit, as an uninterrupted one.
    """
    _check_hyper(steps, batch_size, lr, ema=ema, checkpoint_every=checkpoint_every, seed=seed, log_every=log_every)
    device = resolve_device(device)
    source = ImageSource(dataset)
    ae.to(device)
    loss_fn = autoencoder_loss(ae, loss_config)
    opts = {"ae": torch.optim.Adam(list(ae.parameters()) + loss_fn.generator_parameters(), lr=lr, betas=(0.5, 0.9)),
            "d": torch.optim.Adam(loss_fn.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))}

    def step_fn(ctx: StepContext) -> dict[str, float]:
        x = source.batch(ctx.indices()).to(device)
        output = ae(x)
        loss, logs = loss_fn(x, output, ctx.step, ae.last_layer())
        ctx.check(loss)
        ctx.optimize("ae", loss)
        if loss_fn.gan_active(ctx.step):
            d_loss, d_logs = loss_fn.discriminator_loss(x, output.sample)
            ctx.check(d_loss)
            ctx.optimize("d", d_loss)
            logs.update(d_logs)
        return logs

    return fit(ae, step_fn, steps=steps, optimizers=opts, dataset_size=len(source), batch_size=batch_size, seed=seed,
               ema=(ae, ema) if ema else None, modules={"loss": _TrainableLossState(loss_fn)}, out_dir=out_dir,
               checkpoint_every=checkpoint_every, resume=resume, device=device, log_every=log_every,
               show=("rec", "kl", "perplexity", "g", "d"), progress=progress, desc="autoencoder",
               extra={"lr": lr})


class _TrainableLossState(torch.nn.Module):
    """The loss's trained state (discriminator, log-variance) without the frozen LPIPS network."""

    def __init__(self, loss_fn: torch.nn.Module):
        super().__init__()
        self.loss_fn = loss_fn

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return {k: v for k, v in self.loss_fn.state_dict().items() if not k.startswith("lpips.")}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = self.loss_fn.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("lpips.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"loss state mismatch: missing {missing}, unexpected {result.unexpected_keys}")
        return result


# ============================================================================================== latent diffusion
def train_ldm(
    ldm: Any,
    dataset: Any,
    steps: int = 5_000,
    batch_size: int = 64,
    lr: float = 2e-4,
    warmup: int = 200,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    ema: float | None = 0.999,
    precision: str = "auto",
    device: str | torch.device = "auto",
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1_000,
    resume: bool | str | os.PathLike | None = None,
    seed: int = 0,
    log_every: int = 10,
    progress: bool = True,
    step_callback: Any = None,
    max_seconds: float | None = None,
    min_steps: int = 0,
    compile: bool | dict = False,
    budget_clock: str = "wall",
    sync_every: int | None = None,
    latent_cache: bool = False,
    text_cache: bool = False,
) -> dict[str, list]:
    """Train a `LatentDiffusion`'s UNet (and conditioner) on L_LDM (eq. 2) for `steps` steps in total; returns the
    history (step, loss, lr, grad_norm). The autoencoder stays frozen.

    AdamW (fused where the device supports it) with linear warm-up; gradient clipping; an EMA of the weights that
    the model ends with (sampling uses it); bf16 autocast when `precision="auto"` on a GPU (fp32 on the CPU, where
    bf16 is ~10x slower) or `"bf16"`/`"fp32"` explicitly. Checkpoints go to `<out_dir>/checkpoint` every
    `checkpoint_every` steps (atomic); `resume=True` continues from there and ends with the same weights as an
    uninterrupted run: batch order, t and ε are pure functions of (seed, step, rank). Under `torchrun` each process
    takes its share of every batch (DistributedDataParallel; rank 0 writes). `step_callback(step, loss)` is called
    after every step (live plots in notebooks). `max_seconds` stops early (after a checkpoint) once that much
    wall-clock time has passed: a time budget for the main job on slow machines; `resume=True` continues later;
    `min_steps` keeps training past the budget up to that step (a quality floor on a busy machine).
    `budget_clock="cpu"` makes `max_seconds` a budget of this process's CPU seconds over the whole run, resumed
    segments included (arms of a comparison on a shared machine get equal compute; see `fit`).
    `compile=True` (or a dict of `torch.compile` options, e.g. {"mode": "reduce-overhead"} for CUDA graphs) compiles
    the training step; if compilation fails the step runs eagerly, with a warning. Off by default: it costs minutes
    on a CPU for a few percent. On a GPU, `sync_every` steps pass between reads of the loss (see `fit`).
    `latent_cache=True` encodes the dataset once, on the training device, before the first step
    (`ldm_lite.latents.LatentCache`: KL posteriors still sampled afresh each step), or pass a `LatentCache` as
    `dataset`; the weights are those of training from the images. `text_cache=True` (with `latent_cache`) caches a
    `FrozenTextConditioner`'s frozen states of every training caption in it too (no effect on other conditioners).
    """

    _check_hyper(steps, batch_size, lr, warmup=warmup, checkpoint_every=checkpoint_every, min_steps=min_steps,
                 log_every=log_every, seed=seed, ema=ema, weight_decay=weight_decay, grad_clip=grad_clip,
                 max_seconds=max_seconds)
    if not isinstance(dataset, LatentCache):
        _check_dataset(dataset)
    device = resolve_device(device)
    rank, world, device = distributed(device)
    if batch_size % world:
        raise UsageError(f"batch_size={batch_size} is not divisible by the {world} processes; use a multiple of {world}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise UsageError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    ldm.to(device)
    if latent_cache and not isinstance(dataset, LatentCache):
        frozen_text = ldm.conditioner if text_cache and isinstance(ldm.conditioner, FrozenTextConditioner) else None
        dataset = LatentCache(dataset, ldm.autoencoder, device=device, progress=progress and rank == 0,
                              text_encoder=frozen_text)
    trainable = torch.nn.ModuleDict({"unet": ldm.unet, **({"conditioner": ldm.conditioner} if ldm.conditioner else {})})
    fused = device.type in ("cuda", "cpu") and hasattr(torch.optim, "AdamW")
    opt = torch.optim.AdamW(trainable.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    model = DistributedDataParallel(ldm) if world > 1 else ldm
    compiled = [_compiled(model, compile)] if compile else []

    def forward(*args):
        if compiled:
            try:
                return compiled[0](*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back to the eager step
                log.warning("torch.compile failed (%s: %s); training eagerly", type(e).__name__, str(e)[:200])
                compiled.clear()
        return model(*args)

    def step_fn(ctx: StepContext) -> dict[str, float]:
        # the global batch, its t and ε are pure functions of (seed, step); each process takes every world-th item
        g = torch.Generator().manual_seed(seed * 1_000_003 + ctx.step)
        idx = ctx.indices()
        t = torch.randint(0, ldm.schedule.T, (batch_size,), generator=g)
        noise = torch.randn((batch_size, *ldm.latent_shape), generator=g)
        mine = idx[rank::world]
        batch = (dataset.batch(mine) if isinstance(dataset, LatentCache)
                 else default_collate([dataset[int(i)] for i in mine]))
        g.manual_seed(seed * 1_000_003 + ctx.step + 7_919 * (rank + 1))  # posterior sampling, condition dropout
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward(batch, g, t[rank::world], noise[rank::world])
        avg = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(avg)
            avg /= world
        ctx.check(avg)
        norm = ctx.optimize("unet", loss)
        return {"loss": avg, "lr": opt.param_groups[0]["lr"], "grad_norm": norm}  # tensors: read when logged

    return fit(ldm, step_fn, steps=steps, optimizers={"unet": opt}, dataset_size=len(dataset), batch_size=batch_size,
               seed=seed, warmup=warmup, grad_clip=grad_clip if grad_clip else float("inf"),
               ema=(trainable, ema) if ema else None, out_dir=out_dir, checkpoint_every=checkpoint_every,
               resume=resume, max_seconds=max_seconds, budget_clock=budget_clock, min_steps=min_steps, rank=rank,
               world=world, device=device, log_every=log_every,
               sync_every=sync_every, step_callback=step_callback, progress=progress, desc="LDM", extra={"lr": lr})


def _compiled(model: torch.nn.Module, options: bool | dict) -> Any:
    """`torch.compile(model, **options)` (the module keeps its own weights and state-dict names), or the eager model
    with a warning when the options are refused."""
    try:
        return torch.compile(model, **(options if isinstance(options, dict) else {}))
    except Exception as e:  # noqa: BLE001 - an unknown backend or mode: train eagerly
        log.warning("torch.compile failed (%s: %s); training eagerly", type(e).__name__, str(e)[:200])
        return model


# ============================================================================================== shapes classifier
def train_shapes_classifier(steps: int = 1500, batch_size: int = 128, resolution: int = 32, seed: int = 0,
                            lr: float = 2e-3, device: str | torch.device = "auto", out_dir: str | os.PathLike | None = None,
                            checkpoint_every: int = 500, resume: bool | str | os.PathLike | None = None,
                            progress: bool = True) -> tuple[Any, dict[str, list]]:
    """Train the `ShapesClassifier` on `shapes(max_shapes=1)` (half of every batch corrupted for the `valid` head);
    returns the model and its history. Held-out accuracy: `ldm_lite.classifier.evaluate_classifier`."""
    _check_hyper(steps, batch_size, lr)
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = ShapesClassifier(ShapesClassifierConfig(resolution=resolution)).to(device)
    ds = shapes(resolution=resolution, n=max(steps, 1) * batch_size, seed=seed, max_shapes=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    g = torch.Generator().manual_seed(seed)

    def step_fn(ctx: StepContext) -> dict[str, float]:
        x, attrs = labelled_batch(ds, torch.arange(ctx.step * batch_size, (ctx.step + 1) * batch_size))  # one pass
        bad = corrupt(x[: batch_size // 2], g)
        out = model(torch.cat([x, bad]).to(device))
        n = len(x)
        valid = torch.cat([torch.ones(n), torch.zeros(len(bad))]).long().to(device)
        attrs = attrs.to(device)
        loss = (F.cross_entropy(out["kind"][:n], attrs[:, 0]) + F.cross_entropy(out["color"][:n], attrs[:, 1])
                + F.cross_entropy(out["size"][:n], attrs[:, 2]) + F.cross_entropy(out["valid"], valid))
        ctx.check(loss)
        ctx.optimize("model", loss)
        sched.step()
        return {"loss": loss.item()}

    history = fit(model, step_fn, steps=steps, optimizers={"model": opt}, dataset_size=len(ds), batch_size=batch_size,
                  seed=seed, generators={"corrupt": g}, schedulers={"lr": sched}, out_dir=out_dir,
                  checkpoint_every=checkpoint_every, resume=resume, device=device, log_every=10, progress=progress,
                  desc="shapes classifier", extra={"lr": lr})
    return model, history


def train_clean_gate(model: Any, steps: int = 1500, batch_size: int = 64, seed: int = 0, lr: float = 2e-3,
                     device: str | torch.device = "auto", out_dir: str | os.PathLike | None = None,
                     checkpoint_every: int = 500, resume: bool | str | os.PathLike | None = None,
                     progress: bool = True) -> dict[str, list]:
    """Train the `CleanImageGate` of `model` (a `ShapesClassifier` with `gate_width` > 0) and nothing else: the
    body (FID features) and heads stay as they are. Each step: `batch_size` clean images of `shapes(max_shapes=1)`
    (30% with faint noise, std <= 0.03, so a decoder's tiny errors pass) against as many `classifier.unclean`
    ones, at 32x32 and 64x64 on alternate steps (resized to the classifier's side, as the judge sees them)."""
    from .classifier import UNCLEAN, unclean
    from .datasets import shapes

    _check_hyper(steps, batch_size, lr)
    if model.gate is None:
        raise UsageError("train_clean_gate needs a ShapesClassifier with a gate (config gate_width > 0)")
    device = resolve_device(device)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.gate.parameters():
        p.requires_grad_(True)
    n = max(steps, 1) * batch_size
    sides = (32, 64)
    data = {r: shapes(resolution=r, n=n, seed=seed, max_shapes=1) for r in sides}
    per = max(1, batch_size // len(UNCLEAN))  # unclean images per kind and step
    several = {r: shapes(resolution=r, n=2 * max(steps, 1) * per, seed=seed, min_shapes=2, max_shapes=3) for r in sides}
    opt = torch.optim.AdamW(model.gate.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    g = torch.Generator().manual_seed(seed)

    def step_fn(ctx: StepContext) -> dict[str, float]:
        r = sides[ctx.step % 2]
        idx = torch.arange(ctx.step * batch_size, (ctx.step + 1) * batch_size)
        x = torch.stack([data[r][int(i)]["image"] for i in idx])
        crowd = _several_shapes_at(several[r], ctx.step, per)
        bad = torch.cat([v[:per] for v in unclean(x[:per], crowd, g).values()])
        faint = (torch.rand(len(x), 1, 1, 1, generator=g) < 0.3) * 0.03 * torch.rand(len(x), 1, 1, 1, generator=g)
        good = (x + faint * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        model.gate.train()
        logits = model.gate(model._prepare(torch.cat([good, bad]).to(device)))
        clean = torch.cat([torch.ones(len(good)), torch.zeros(len(bad))]).long().to(device)
        loss = F.cross_entropy(logits, clean)
        ctx.check(loss)
        ctx.optimize("gate", loss)
        sched.step()
        return {"loss": loss.item()}

    history = fit(model, step_fn, steps=steps, optimizers={"gate": opt}, dataset_size=n, batch_size=batch_size,
                  seed=seed, generators={"unclean": g}, schedulers={"lr": sched}, out_dir=out_dir,
                  checkpoint_every=checkpoint_every, resume=resume, device=device, log_every=10, progress=progress,
                  desc="clean-image gate", extra={"lr": lr})
    model.requires_grad_(False)
    return history


def _several_shapes_at(ds: Any, step: int, per: int) -> torch.Tensor:
    """`per` images of 2-3 shapes for one step, read from item 2·step·per of a `shapes(min_shapes=2)` dataset on
    (a crowded draw that kept a single shape is skipped)."""
    keep, i = [], 2 * step * per
    while len(keep) < per:
        item = ds[i % len(ds)]
        if int((item["attrs"][:, 0] >= 0).sum()) >= 2:
            keep.append(item["image"])
        i += 1
    return torch.stack(keep)


def train_mnist_classifier(epochs: int = 8, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                           out_dir: str | os.PathLike | None = None, resume: bool | str | os.PathLike | None = None,
                           progress: bool = True) -> tuple[Any, dict]:
    """Train the `MNISTClassifier` on the offline MNIST train split (random shifts of up to 2 pixels); returns the
    model and its accuracy on the held-out test split (`mnist(split="test")`, never seen in training)."""
    torch.manual_seed(seed)
    train, test = (mnist(32, channels=1, split=s, source="offline") for s in ("train", "test"))
    x = torch.stack([train[i]["image"] for i in range(len(train))])
    y = torch.tensor([train[i]["label"] for i in range(len(train))])
    model = MNISTClassifier()
    steps = epochs * (len(x) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)

    def step_fn(ctx: StepContext) -> dict[str, float]:
        idx = torch.randint(len(x), (batch_size,), generator=g)
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        xb = torch.roll(x[idx], (dy, dx), dims=(2, 3))  # small shifts: samples are not perfectly centred
        loss = F.cross_entropy(model(xb), y[idx])
        ctx.check(loss)
        ctx.optimize("model", loss)
        sched.step()
        return {"loss": loss.item()}

    fit(model, step_fn, steps=steps, optimizers={"model": opt}, dataset_size=len(x), batch_size=batch_size, seed=seed,
        generators={"batches": g}, schedulers={"lr": sched}, out_dir=out_dir, resume=resume, log_every=10,
        progress=progress, desc="MNIST classifier")
    xt = torch.stack([test[i]["image"] for i in range(len(test))])
    yt = torch.tensor([test[i]["label"] for i in range(len(test))])
    acc = float((model.predict(xt) == yt).float().mean())
    return model.eval(), {"heldout_accuracy": acc, "n_heldout": len(xt), "steps": steps, "n_train": len(x)}

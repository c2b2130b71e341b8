"""The compression trade-off (LDM paper §4.1, Fig. 6-7): LDM-{1, 2, 4, 8, 16, 32} side by side.

The headline is §4.1's protocol (`TradeoffConfig.equal_steps`: 64x64, the same steps for every f); equal compute
(`equal_compute`, 32x32) is the second view. `table6` writes the kit's throughput-per-f table (files `table6.*`, a
name kept for the committed results): it is not the paper's Table 6, which compares inpainting LDM-1 and LDM-4
(`benchmarks/inpainting_efficiency.py`).

For each downsampling factor f one `LatentDiffusion` is trained on the same data with the same budget:

    x (B, 3, H, W) --E_f--> z (B, c_f, H/f, W/f) --UNet_f (same parameter count, depth follows H/f)--> ε̂

f = 1 is pixel space (`IdentityAutoencoder`, LDM-1). The claim under test: small f trains and samples slowly,
large f loses detail in the first stage, f = 4..8 is the sweet spot at equal compute.

Budget. `budget="time"` (default) gives every model the same training compute: the seconds per step of each
LDM-f are measured first (a few steps, `calibration.json`), and LDM-f trains for budget_seconds / (s per step)
steps. On a CPU the clock is this process's CPU time (`time.process_time`), which other programs sharing the
machine do not inflate; on a GPU it is wall-clock time (synchronised). `budget="steps"` trains every model for
the same number of steps instead.

Quality is measured at `eval_points` evenly spaced points of each run: `n_eval` DDIM samples, the shapes score
(share of recognisable shapes) and FID on `ShapesClassifier` features against held-out real images
(`ldm_lite.evaluation`). At the end, each model samples `n_eval` images with DDIM at every step count of
`sampling_steps`: quality against sampling throughput (Fig. 7).

Resumable: every result is its own JSON file under `<out>/f<f>/`, written atomically; training continues from
`<out>/f<f>/ldm/checkpoint` (`train_ldm(resume=True)`, exact). Running the sweep again skips what is done.

    cfg = TradeoffConfig(budget_seconds=300)
    rows = run_tradeoff(cfg, out="outputs/tradeoff")        # list of dicts, also results.csv / results.json
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import datasets, plotting, recipes
from .autoencoder import Autoencoder, IdentityAutoencoder
from .checkpoint import read_json, write_json
from .classifier import shapes_score
from .errors import UsageError
from .evaluation import classifier_features, fid_bootstrap, sample_many
from .ldm import LatentDiffusion
from .metrics import format_table, kid
from .paths import OUTPUTS_DIR, PRETRAINED_DIR
from .runtime import pick_device
from .schedule import Schedule
from .train import train_ldm
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)

# The first stages of the sweep at 32x32: the paper's latent channels per f (Table 8: kl-f4 c=3, kl-f8 c=4,
# kl-f16 c=16). f=2 keeps the shipped c=3 (compression 4x).
SHIPPED_AUTOENCODERS: dict[int, str] = {2: "ae-kl-f2-shapes32", 4: "ae-kl-f4-shapes32",
                                        8: "ae-kl-f8-c4-shapes32", 16: "ae-kl-f16-c16-shapes32"}
PAPER_LATENT_CHANNELS: dict[int, int] = {1: 3, 2: 3, 4: 3, 8: 4, 16: 16, 32: 64}

CSV_COLUMNS = ("kind", "f", "latent", "unet_params", "step", "total_steps", "train_seconds", "train_wall_seconds",
               "untimed_steps", "sampler_steps", "n", "fid", "fid_lo", "fid_hi", "kid", "kid_std", "recognisable",
               "sample_seconds", "samples_per_second", "train_samples_per_second", "flops_per_train_step", "budget", "clock")


@dataclass
class TradeoffConfig:
    fs: tuple[int, ...] = (1, 2, 4, 8, 16)  # downsampling factors to compare (1 = pixel space)
    resolution: int = 32  # image side (64 is the GPU default of `for_device`)
    n_train: int = 20_000  # shapes images to train on (seed 0); real images for FID use seed 1
    autoencoders: dict = field(default_factory=lambda: dict(SHIPPED_AUTOENCODERS))  # f -> data/pretrained name/path
    ae_steps: int = 0  # > 0: a first stage that is not shipped is trained here first (recipes, short loss)
    # the scaled-linear β schedule of every LDM-f, explicit so a change of the library default cannot change a
    # sweep mid-way: Stable Diffusion's 0.00085 -> 0.012, as the committed sweep (LDM's configs use 0.0015 -> 0.0195)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    target_params: int = 1_300_000  # UNet parameters of every model (matched within `param_tolerance`)
    param_tolerance: float = 0.10  # allowed relative deviation from target_params
    width_multiple: int = 4  # model_channels moves in steps of this (fine enough to hit ±10%)
    budget: str = "time"  # "time": equal training compute per model; "steps": equal steps
    budget_seconds: float = 120.0  # budget="time": training seconds per model (CPU time on a CPU)
    steps: int = 1_000  # budget="steps": training steps per model
    calibration_steps: int = 4  # steps timed (after one warm-up step) to measure seconds per step
    eval_points: int = 3  # quality is measured after 1/k, 2/k, ..., k/k of the budget
    batch_size: int = 32  # training batch
    lr: float = 5e-4  # AdamW learning rate after warm-up
    warmup: int = 50  # linear warm-up steps
    ema: float = 0.995  # EMA decay (the evaluated weights); LitEma's warm-up makes it usable after few steps
    n_eval: int = 256  # samples per quality measurement
    eval_sampler_steps: int = 20  # DDIM steps of the quality measurements during training
    n_real: int = 1_000  # held-out real images for FID
    sampling_steps: tuple[int, ...] = (10, 20, 50, 100)  # DDIM steps of the throughput/quality sweep (Fig. 7)
    n_sampling: int = 64  # samples per point of that sweep (FID grows as n shrinks: compare at equal n only)
    sample_batch: int = 128  # images per sampling batch
    n_keep: int = 16  # samples kept per evaluation (samples.safetensors) for the figures and the notebook
    keep_all: bool = False  # also keep every evaluated sample (all_*.safetensors, uint8) to re-judge the run later
    seed: int = 0

    def __post_init__(self) -> None:
        self.fs = tuple(int(f) for f in self.fs)
        self.sampling_steps = tuple(int(s) for s in self.sampling_steps)
        self.autoencoders = {int(k): v for k, v in self.autoencoders.items()}
        if self.budget not in ("time", "steps"):
            raise UsageError(f"budget must be 'time' or 'steps', got {self.budget!r}")
        bad = [f for f in self.fs if f < 1 or f & (f - 1) or self.resolution % f]
        if bad:
            raise UsageError(f"f={bad} must be powers of two dividing resolution={self.resolution}; use 1, 2, 4, 8, 16")

    @classmethod
    def smoke(cls, **overrides) -> TradeoffConfig:
        """Tiny sizes for tests and the notebook's smoke mode (seconds)."""
        return cls(**{"fs": (1, 4), "n_train": 256, "target_params": 150_000, "width_multiple": 4, "budget": "steps",
                      "steps": 4, "calibration_steps": 1, "eval_points": 2, "batch_size": 4, "warmup": 2,
                      "n_eval": 8, "eval_sampler_steps": 2, "n_real": 16, "sampling_steps": (2, 4), "n_sampling": 8,
                      "sample_batch": 8,
                      "n_keep": 4, **overrides})

    @classmethod
    def equal_steps(cls, device: torch.device | None = None, **overrides) -> TradeoffConfig:
        """§4.1's protocol, the headline: LDM-{1, 2, 4, 8, 16, 32} at 64x64 on the fair first stages
        (`ae-kl-f<f>-c<c>-shapes64`: one loss, recipe and budget), UNets of matched parameters, the same number of
        training steps and batch, quality after each quarter (256 samples) and at DDIM 10/20/50/100 (Fig. 7).
        Every sample is kept (uint8) so a later judge can re-score the run. On a CPU: 2,000 steps of batch 32
        (about 2.6 CPU-hours) and UNets of 1.8 M parameters (the smallest target every f meets within 10%: f = 1's
        five-level UNet has 1.66 M at width 24); on a GPU: 20,000 steps of batch 64, 8 M-parameter UNets, 1,000 samples."""
        base = {"fs": tuple(PAPER_LATENT_CHANNELS), "resolution": 64, "budget": "steps", "steps": 2_000,
                "batch_size": 32, "eval_points": 4, "target_params": 1_800_000, "n_eval": 256, "n_sampling": 256, "keep_all": True,
                "autoencoders": {f: f"ae-kl-f{f}-c{c}-shapes64" for f, c in PAPER_LATENT_CHANNELS.items() if f > 1}}
        if device is not None and device.type == "cuda":
            base.update(steps=20_000, batch_size=64, target_params=8_000_000, n_train=50_000, n_eval=1_000,
                        n_sampling=1_000, n_real=5_000, warmup=500, ema=0.999)
        return cls(**{**base, **overrides})

    @classmethod
    def equal_compute(cls, **overrides) -> TradeoffConfig:
        """The second view, as committed in benchmarks/results/tradeoff: 32x32, the same CPU seconds per model."""
        return cls(**overrides)

    @classmethod
    def for_device(cls, device: torch.device, **overrides) -> TradeoffConfig:
        """The headline protocol (`equal_steps`) with the sizes of `device`."""
        return cls.equal_steps(device, **overrides)


# ============================================================================================== matched UNets
def unet_for_latent(latent_channels: int, latent_size: int, model_channels: int, norm_groups: int = 4) -> UNetConfig:
    """The sweep's UNet for a (latent_channels, latent_size, latent_size) latent.

    Depth follows the latent: one level per halving down to 4x4 (32 -> 4 levels, 16 -> 3, 8 -> 2, 4 and 2 -> 1),
    widths model_channels x (1, 2, 2, ...), attention at every level of 8x8 or less and in the middle block (as
    LDM's configs attend at the small resolutions). One head per model_channels channels.
    """
    levels = max(1, int(math.log2(latent_size)) - 1)
    mult = (1,) + (2,) * (levels - 1)
    attention = tuple(2**i for i in range(levels) if latent_size // 2**i <= 8)
    return UNetConfig(in_channels=latent_channels, out_channels=latent_channels, model_channels=model_channels,
                      channel_mult=mult, num_res_blocks=2, attention_resolutions=attention, head_dim=model_channels,
                      norm_groups=norm_groups)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def match_width(build: Callable[[int], UNetConfig], target: int, multiple: int = 4,
                tolerance: float = 0.10) -> UNetConfig:
    """The config `build(model_channels)` whose UNet parameter count is closest to `target`, with model_channels a
    multiple of `multiple`. Raises ValueError when the closest is off by more than `tolerance` (relative)."""
    best, best_err, width = None, math.inf, multiple
    while True:
        cfg = build(width)
        n = count_parameters(UNet(cfg))
        err = abs(n - target) / target
        if err < best_err:
            best, best_err = cfg, err
        if n >= target or width > 4096:
            break
        width += multiple
    if best_err > tolerance:
        raise UsageError(f"no model_channels (multiple of {multiple}) gives {target:,} parameters within "
                         f"{tolerance:.0%} (closest is off by {best_err:.0%}); use a smaller width multiple or another "
                         "target_params")
    return best


def matched_unet(latent_channels: int, latent_size: int, target_params: int, multiple: int = 4,
                 tolerance: float = 0.10) -> UNetConfig:
    """`unet_for_latent` with the width that gives `target_params` parameters (within `tolerance`)."""
    return match_width(lambda mc: unet_for_latent(latent_channels, latent_size, mc), target_params, multiple, tolerance)


# ============================================================================================== pieces of a run
def _clock(device: torch.device) -> Callable[[], float]:
    """Seconds: process CPU time on a CPU (not inflated by other programs), synchronised wall-clock on a GPU."""
    if device.type == "cuda":
        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return wall
    return time.process_time


def load_first_stage(f: int, cfg: TradeoffConfig, autoencoders: dict[int, nn.Module] | None = None) -> nn.Module:
    """The autoencoder of LDM-f: identity for f = 1, else the one passed in, else the shipped one."""

    if autoencoders and f in autoencoders:
        return autoencoders[f].eval()
    if f == 1:
        return IdentityAutoencoder()
    name = cfg.autoencoders.get(f)
    path = Path(name) if name and Path(name).is_dir() else PRETRAINED_DIR / str(name)
    trained_here = OUTPUTS_DIR / "ae" / str(name) / "model"
    c = PAPER_LATENT_CHANNELS.get(f, 3)
    if name is not None and not path.is_dir() and cfg.ae_steps > 0:
        if not trained_here.is_dir():
            log.info("training the first stage %s (kl-f%d, c=%d) for %d steps", name, f, c, cfg.ae_steps)
            recipes.train("ae", OUTPUTS_DIR / "ae" / str(name), preset=f"kl-f{f}", dataset="shapes",
                          resolution=cfg.resolution, n_train=cfg.n_train, latent_channels=c, steps=cfg.ae_steps,
                          loss="short", seed=cfg.seed)
        path = trained_here
    if name is None or not path.is_dir():
        raise FileNotFoundError(
            f"no autoencoder for f={f} at {cfg.resolution}x{cfg.resolution} (looked for {path}); train one with "
            f"ll.train.train_autoencoder(Autoencoder(AutoencoderConfig.kl(f={f}, latent_channels={c})), ...), "
            f"save it and pass TradeoffConfig(autoencoders={{{f}: 'its/folder'}}) or run_tradeoff(autoencoders=...)")
    return Autoencoder.from_pretrained(path)


def build_model(f: int, cfg: TradeoffConfig, autoencoders: dict[int, nn.Module] | None = None):
    """LDM-f: its first stage and a UNet with `cfg.target_params` parameters (±tolerance)."""

    ae = load_first_stage(f, cfg, autoencoders)
    c, h, _ = ae.latent_shape(cfg.resolution, cfg.resolution)
    unet_cfg = matched_unet(c, h, cfg.target_params, cfg.width_multiple, cfg.param_tolerance)
    schedule = Schedule.scaled_linear(T=1000, beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    return LatentDiffusion(ae, UNet(unet_cfg), schedule=schedule, image_size=cfg.resolution)


def train_flops(ldm, batch_size: int = 1) -> int:
    """FLOPs of one training step's UNet forward + backward for `batch_size` images (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = copy.deepcopy(ldm.unet).cpu().train()
    z = torch.randn(batch_size, *ldm.latent_shape)
    t = torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        unet(z, t).pow(2).mean().backward()
    return int(counter.get_total_flops())


def _train_kwargs(cfg: TradeoffConfig, device: torch.device) -> dict:
    return dict(batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup, ema=cfg.ema, device=device, seed=cfg.seed,
                precision="fp32")


def calibrate(ldm, data, cfg: TradeoffConfig, device: torch.device) -> dict:
    """Seconds per training step of this model (after one warm-up step), on a throw-away copy."""

    clock = _clock(device)
    trial = copy.deepcopy(ldm)
    train_ldm(trial, data, steps=1, progress=False, **_train_kwargs(cfg, device))
    c0, w0 = clock(), time.perf_counter()
    train_ldm(trial, data, steps=cfg.calibration_steps, progress=False, **_train_kwargs(cfg, device))
    per_step = (clock() - c0) / cfg.calibration_steps
    return {"seconds_per_step": per_step, "wall_seconds_per_step": (time.perf_counter() - w0) / cfg.calibration_steps,
            "train_samples_per_second": cfg.batch_size / per_step, "calibration_steps": cfg.calibration_steps}


def plan_steps(cfg: TradeoffConfig, seconds_per_step: float | None) -> list[int]:
    """The training steps after which quality is measured; the last is the model's whole budget."""
    total = cfg.steps if cfg.budget == "steps" else max(cfg.eval_points, round(cfg.budget_seconds / seconds_per_step))
    return sorted({max(1, round(total * k / cfg.eval_points)) for k in range(1, cfg.eval_points + 1)})


@torch.no_grad()
def sample_and_score(ldm, n: int, steps: int, real_features: Tensor, classifier, cfg: TradeoffConfig,
                     clock: Callable[[], float]) -> tuple[dict, Tensor]:
    """n DDIM samples from fixed noise seeds; shapes score, FID (with a bootstrap interval) and sampling times."""

    c0, w0 = clock(), time.perf_counter()
    images = sample_many(ldm, n, batch_size=cfg.sample_batch, seed=cfg.seed + 1_000, sampler="ddim", steps=steps)
    seconds, wall = clock() - c0, time.perf_counter() - w0
    score = shapes_score(images, classifier)
    fake_features = classifier_features(images, classifier)
    fid = fid_bootstrap(real_features, fake_features, n_boot=20, seed=cfg.seed)
    kid_mean, kid_std = kid(real_features, fake_features, seed=cfg.seed)  # unbiased: usable below 128 samples
    row = {"sampler_steps": steps, "n": n, "fid": fid["fid"], "fid_lo": fid["fid_lo"], "fid_hi": fid["fid_hi"],
           "kid": kid_mean, "kid_std": kid_std, "recognisable": score["recognisable"], "sample_seconds": seconds, "sample_wall_seconds": wall,
           "samples_per_second": n / max(seconds, 1e-9)}
    return row, images


def _save_samples(path: Path, images: Tensor) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({"images": images.contiguous()}, str(tmp))
    os.replace(tmp, path)


def _keep(run_dir: Path, tag: str, images: Tensor, cfg: TradeoffConfig) -> None:
    """The first n_keep samples for figures; with keep_all, every sample as uint8 (for re-judging: scripts/rejudge.py)."""
    _save_samples(run_dir / f"samples_{tag}.safetensors", images[: cfg.n_keep])
    if cfg.keep_all:
        _save_samples(run_dir / f"all_{tag}.safetensors", ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


def load_samples(path: str | os.PathLike) -> Tensor:
    """Samples kept by the sweep: (n, 3, H, W) in [-1, 1] (uint8 files of `keep_all` are converted)."""
    from safetensors.torch import load_file

    images = load_file(str(path))["images"]
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images


# ============================================================================================== the sweep
def run_one(f: int, cfg: TradeoffConfig, out: Path, data, real_features: Tensor, classifier, device: torch.device,
            autoencoders: dict[int, nn.Module] | None = None, progress: bool = True) -> list[dict]:
    """Train and measure LDM-f; every result is written to `<out>/f<f>/` and skipped when it already exists."""

    run_dir = out / f"f{f}"
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    ldm = build_model(f, cfg, autoencoders).to(device)
    clock = _clock(device)
    c, h, w = ldm.latent_shape
    info_path = run_dir / "model.json"
    info = read_json(info_path) if info_path.exists() else None
    if info is None:
        cal = calibrate(ldm, data, cfg, device)
        info = {"f": f, "latent": f"{c}x{h}x{w}", "unet_params": count_parameters(ldm.unet),
                "unet": asdict(ldm.unet.config), "flops_per_train_step": train_flops(ldm) * cfg.batch_size,
                "batch_size": cfg.batch_size, "budget": cfg.budget, "clock": _clock_name(device), **cal}
        info["plan"] = plan_steps(cfg, cal["seconds_per_step"])
        write_json(info_path, info)
    base = {k: info[k] for k in ("f", "latent", "unet_params", "flops_per_train_step", "train_samples_per_second",
                                 "budget", "clock")}
    base["total_steps"] = info["plan"][-1]
    rows: list[dict] = []
    spent, spent_wall, untimed = 0.0, 0.0, 0
    for step in tqdm(info["plan"], desc=f"LDM-{f} checkpoints", disable=not progress, leave=False):
        path = run_dir / f"eval_step{step:06d}.json"
        if path.exists():
            row = read_json(path)
            spent, spent_wall = row["train_seconds"], row["train_wall_seconds"]
            untimed = row.get("untimed_steps", 0)
            rows.append(row)
            continue
        # steps a stopped process trained after the last result (resumed from its checkpoint) were not timed
        # here: they count at the calibrated seconds per step
        done = _checkpoint_step(run_dir / "ldm") - (rows[-1]["step"] if rows else 0)
        untimed += max(0, done)
        c0, w0 = clock(), time.perf_counter()
        train_ldm(ldm, data, steps=step, out_dir=run_dir / "ldm", checkpoint_every=max(50, step // 4), resume=True,
                  progress=progress, **_train_kwargs(cfg, device))
        spent = spent + clock() - c0 + max(0, done) * info["seconds_per_step"]
        spent_wall = spent_wall + time.perf_counter() - w0 + max(0, done) * info["wall_seconds_per_step"]
        scores, keep = sample_and_score(ldm, cfg.n_eval, cfg.eval_sampler_steps, real_features, classifier, cfg, clock)
        row = {"kind": "training", **base, "step": step, "train_seconds": spent, "train_wall_seconds": spent_wall,
               "untimed_steps": untimed, **scores}
        _keep(run_dir, f"step{step:06d}", keep, cfg)
        write_json(path, row)
        rows.append(row)
    # ldm now holds the final EMA weights (the last train_ldm call ends with them, also when it resumed 0 steps)
    if any(not (run_dir / f"sampling_ddim{s:03d}.json").exists() for s in cfg.sampling_steps):
        train_ldm(ldm, data, steps=info["plan"][-1], out_dir=run_dir / "ldm", resume=True, progress=False,
                  **_train_kwargs(cfg, device))  # no steps left: loads the final weights when this process resumed
    for s in tqdm(cfg.sampling_steps, desc=f"LDM-{f} DDIM steps", disable=not progress, leave=False):
        path = run_dir / f"sampling_ddim{s:03d}.json"
        if path.exists():
            rows.append(read_json(path))
            continue
        scores, keep = sample_and_score(ldm, cfg.n_sampling, s, real_features, classifier, cfg, clock)
        row = {"kind": "sampling", **base, "step": info["plan"][-1], "train_seconds": spent,
               "train_wall_seconds": spent_wall, **scores}
        _keep(run_dir, f"ddim{s:03d}", keep, cfg)
        write_json(path, row)
        rows.append(row)
    return rows


def _checkpoint_step(run_dir: Path) -> int:
    """The step of the training checkpoint under `run_dir` (0 when there is none)."""
    state = run_dir / "checkpoint" / "state.json"
    return int(read_json(state)["step"]) if state.exists() else 0


def _clock_name(device: torch.device) -> str:
    return "wall (GPU, synchronised)" if device.type == "cuda" else f"process CPU time ({torch.get_num_threads()} threads)"


def run_tradeoff(cfg: TradeoffConfig | None = None, out: str | os.PathLike | None = None,
                 device: str | torch.device = "auto", autoencoders: dict[int, nn.Module] | None = None,
                 classifier=None, progress: bool = True) -> list[dict]:
    """Run (or continue) the sweep; returns every result row and writes `<out>/results.csv`, `results.json`.

    autoencoders: first stages by f, used instead of the shipped ones (tests, notebooks). classifier: the judge
    (default: `recipes.get_classifier()`, the noise-proof `shapes-judge-32`)."""

    dev = pick_device(device)
    cfg = cfg or TradeoffConfig.for_device(dev)
    out = Path(out) if out is not None else OUTPUTS_DIR / "tradeoff"
    out.mkdir(parents=True, exist_ok=True)
    saved, mine = out / "config.json", _json({k: v for k, v in asdict(cfg).items() if k != "fs"})
    defaults = _json({k: v for k, v in asdict(TradeoffConfig()).items() if k != "fs"})
    # fs may differ (processes can share a sweep, f by f); a field added since the sweep began counts at its default
    if saved.exists() and {**defaults, **read_json(saved)} != mine:
        raise UsageError(f"{out} holds a sweep with another config ({saved}); use a new out folder or delete it")
    write_json(saved, mine)
    if classifier is None:  # the noise-proof judge (its FID features are shapes-classifier-32's, bit for bit)
        classifier = recipes.get_classifier()
    data = datasets.shapes(cfg.resolution, n=cfg.n_train, seed=cfg.seed, max_shapes=1)
    real_ds = datasets.shapes(cfg.resolution, n=cfg.n_real, seed=datasets.HELDOUT_SEED, max_shapes=1)
    real = torch.stack([real_ds[i]["image"] for i in range(cfg.n_real)])
    real_features = classifier_features(real, classifier)
    for f in tqdm(cfg.fs, desc="trade-off sweep (f)", disable=not progress):
        run_one(f, cfg, out, data, real_features, classifier, dev, autoencoders, progress)
    rows = collect(out)  # also the f's that another process of the same sweep has finished
    write_results(rows, out)
    return rows


def _json(data: Any) -> Any:
    import json

    return json.loads(json.dumps(data))


def collect(out: str | os.PathLike) -> list[dict]:
    """Every result row written under `out` so far (also from a sweep that is still running or was stopped)."""
    out = Path(out)
    rows = [read_json(p) for p in sorted(out.glob("f*/eval_step*.json"))]
    rows += [read_json(p) for p in sorted(out.glob("f*/sampling_ddim*.json"))]
    return sorted(rows, key=lambda r: (r["f"], r["kind"] != "training", r["step"], r["sampler_steps"]))


def write_results(rows: Sequence[dict], out: str | os.PathLike) -> None:
    """`results.json` (all fields) and `results.csv` (CSV_COLUMNS) under `out`, both written atomically."""
    out = Path(out)
    write_json(out / "results.json", list(rows))
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "results.csv")


def table6(rows: Sequence[dict], final_steps: int | None = None) -> list[dict]:
    """Throughput per f (not the paper's Table 6: see the module docstring): training and sampling throughput,
    quality at the end of the equal budget."""
    table = []
    for f in sorted({r["f"] for r in rows}):
        mine = [r for r in rows if r["f"] == f]
        train = [r for r in mine if r["kind"] == "training"]
        end = max(train, key=lambda r: r["step"]) if train else None
        samp = {r["sampler_steps"]: r for r in mine if r["kind"] == "sampling"}
        any_row = mine[0]
        row = {"f": f, "latent": any_row["latent"], "unet_params": any_row["unet_params"],
               "train_samples_per_s": any_row["train_samples_per_second"],
               "GFLOPs_per_train_step": any_row["flops_per_train_step"] / 1e9,
               "steps_in_budget": any_row["total_steps"]}
        for s, r in sorted(samp.items()):
            row[f"samples_per_s_ddim{s}"] = r["samples_per_second"]
        if end is not None:
            row.update(fid=end["fid"], fid_lo=end["fid_lo"], fid_hi=end["fid_hi"], recognisable=end["recognisable"])
        table.append(row)
    return table


def machine() -> str:
    """The GPU's name, or the CPU model and torch's thread count: recorded with every committed result."""
    import platform

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def write_report(out: str | os.PathLike, dest: str | os.PathLike | None = None, command: str = "") -> list[dict]:
    """Collect the sweep under `out` and write to `dest` (default `out`): results.csv/json, table6.md/json,
    fig6_training.png, fig7_sampling.png, samples.png (last checkpoint of each f) and run.json (command, machine,
    date). With `dest != out` the per-f result files and the last kept samples are copied too (what gets
    committed: about 0.2 MB of samples per f)."""
    import json
    import shutil


    out, dest = Path(out), Path(dest) if dest is not None else Path(out)
    rows = collect(out)
    dest.mkdir(parents=True, exist_ok=True)
    if dest.resolve() != out.resolve():
        shutil.copy(out / "config.json", dest / "config.json")
        for f_dir in sorted(p for p in out.glob("f[0-9]*") if p.is_dir()):
            (dest / f_dir.name).mkdir(exist_ok=True)
            kept = sorted(f_dir.glob("samples_step*.safetensors"))[-1:]  # the samples at the end of the budget
            for p in [*f_dir.glob("*.json"), *kept]:
                shutil.copy(p, dest / f_dir.name / p.name)
    write_results(rows, dest)
    plotting.tradeoff_training(rows).savefig(dest / "fig6_training.png", dpi=110)
    if any(r["kind"] == "sampling" for r in rows):  # a sweep still training has no Fig. 7 points yet
        plotting.tradeoff_sampling(rows).savefig(dest / "fig7_sampling.png", dpi=110)
    samples = {int(p.parent.name[1:]): load_samples(p) for p in sorted(out.glob("f*/samples_step*.safetensors"))}
    if samples:
        plotting.samples_by_f(samples, title="samples at the end of the budget (DDIM-20)").savefig(
            dest / "samples.png", dpi=110)
    table = table6(rows)
    (dest / "table6.md").write_text(format_table(table) + "\n")
    write_json(dest / "table6.json", table)
    write_json(dest / "run.json", {"command": command, "machine": machine(),
                                   "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                                   "config": json.loads((out / "config.json").read_text())})
    return rows

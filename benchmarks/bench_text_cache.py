"""Benchmark: a frozen-text training step with and without the cache of the frozen encoder's outputs, against a
scratch-text step, in the same run (issue 25's first lever).

Three variants of `train_ldm` as the recipes run it (shipped kl-f4 first stage, latent cache, the recipe's
conditioner, condition dropout 0.1, EMA), each on the same captioned `shapes` images (1-2 shapes):

  scratch text              `ldm-kl-f4-shapes32-text`: BERT tokens + a 2-layer transformer trained with the UNet
  frozen text, encoder      `ldm-kl-f4-shapes32-frozen-text` with `text_cache=False`: the frozen MiniLM-L6 runs on
                            every batch's captions
  frozen text, text cache   the same with `text_cache=True` (the default): the MiniLM states of each distinct
                            caption computed once (`LatentCache(text_encoder=)`), only the projection runs per step

Each measurement is the median gap between `step_callback` time stamps after 3 warm-up steps, on the wall clock
and on this process's CPU clock (robust to other jobs on a shared machine); rounds alternate the variants so
background load hits all of them alike, and each ratio is the median over rounds of the same round's ratio.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_text_cache.py --threads 1 --batch 32 --width 32 --steps 30 --rounds 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads are 10x slower when shared

import argparse
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ldm_lite import recipes  # noqa: E402
from ldm_lite.latents import LatentCache  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402
from ldm_lite.train import train_ldm  # noqa: E402

SMOKE = {"threads": 1, "batch": 4, "width": 32, "steps": 2, "rounds": 1, "n_images": 16}  # --smoke: seconds, for tests
VARIANTS = {  # name -> (recipe, use the text cache)
    "scratch text": ("ldm-kl-f4-shapes32-text", False),
    "frozen text, encoder every step": ("ldm-kl-f4-shapes32-frozen-text", False),
    "frozen text, text cache": ("ldm-kl-f4-shapes32-frozen-text", True),
}


def step_seconds(recipe: str, data: LatentCache, ae, width: int, batch: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) median seconds per step of `train_ldm` on `data`, after 3 warm-up steps."""
    cfg = recipes.config(recipe, model_channels=width, batch_size=batch, device="cpu")
    torch.manual_seed(cfg.seed)
    ldm = recipes.build_ldm(cfg, ae)
    stamps: list[tuple[float, float]] = []
    train_ldm(ldm, data, steps=steps + 3, batch_size=batch, lr=cfg.lr, warmup=cfg.warmup, ema=cfg.ema, device="cpu",
              progress=False, log_every=10, step_callback=lambda step, loss: stamps.append(
                  (time.perf_counter(), time.process_time())))
    return tuple(statistics.median(b[k] - a[k] for a, b in zip(stamps[3:], stamps[4:])) for k in (0, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=32, help="UNet model_channels (the text recipes: 32)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n-images", type=int, default=2_000, help="captioned training images (the recipes: 20,000)")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    cfg = recipes.config("ldm-kl-f4-shapes32-frozen-text", n_train=max(args.n_images, args.batch))
    ae, source = recipes.load_or_train(cfg.autoencoder)
    data = recipes.ldm_data(cfg)
    t0 = time.perf_counter()
    plain = LatentCache(data, ae, progress=False)
    latent_s = time.perf_counter() - t0
    encoder = recipes.build_ldm(cfg, ae).conditioner  # the frozen states do not depend on the trained projection
    t0 = time.perf_counter()
    cached = LatentCache(data, ae, progress=False, text_encoder=encoder)
    text_s = time.perf_counter() - t0 - latent_s
    n_distinct = len(cached.text_states)

    per_round: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    for r in range(args.rounds):
        for name, (recipe, text_cache) in VARIANTS.items():
            per_round[name].append(step_seconds(recipe, cached if text_cache else plain, ae, args.width, args.batch,
                                                args.steps))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k}: {v[-1][0] * 1e3:.0f} ms" for k, v in
                                                          per_round.items()), flush=True)

    rows = []
    for name, vals in per_round.items():
        row = {"variant": name}
        for k, clock in ((0, "wall"), (1, "CPU")):
            secs = [v[k] for v in vals]
            scratch = [v[k] for v in per_round["scratch text"]]
            uncached = [v[k] for v in per_round["frozen text, encoder every step"]]
            row[f"ms/step {clock}"] = f"{statistics.median(secs) * 1e3:.1f}"
            row[f"steps/s {clock}"] = f"{1 / statistics.median(secs):.2f}"
            row[f"vs scratch ({clock})"] = f"{statistics.median(s / v for s, v in zip(scratch, secs)):.2f}x"
            row[f"vs encoder ({clock})"] = f"{statistics.median(u / v for u, v in zip(uncached, secs)):.2f}x"
        rows.append(row)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, threads={args.threads}, "
          f"batch {args.batch}, UNet width {args.width}, fp32, {args.rounds} rounds x {args.steps} steps (+3 warm-up), "
          f"first stage {source}; {len(data)} captioned images, {n_distinct} distinct captions; latent cache built in "
          f"{latent_s:.1f} s, the text states in {text_s:.1f} s more\n")
    print(format_table(rows))
    print("\nsteps/s: higher is faster; 'vs scratch' and 'vs encoder': that variant's speed over the scratch-text "
          "step's and over the uncached frozen step's (median of the rounds' ratios)")


if __name__ == "__main__":
    main()

"""The paper's β schedule (√β linear 0.0015 -> 0.0195) against Stable Diffusion's (0.00085 -> 0.012) on the main job.

Trains the main job's LDM-4 (shipped `ae-kl-f4-shapes32`, `UNetConfig.small`, the main job's optimiser settings) once
per schedule for the same number of steps from the same seed, samples with DDIM-50 from the same noise, and prints
a markdown table: the share of recognisable shapes and FID on ShapesClassifier features against held-out images.

    OMP_WAIT_POLICY=PASSIVE python scripts/compare_beta_schedules.py --steps 800
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import ldm_lite as ll  # noqa: E402
from ldm_lite.classifier import ShapesClassifier  # noqa: E402
from ldm_lite.evaluation import evaluate_samples  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR, PRETRAINED_DIR  # noqa: E402

SCHEDULES = {"0.0015 -> 0.0195 (paper)": ll.schedule.Schedule.ldm,
             "0.00085 -> 0.012 (Stable Diffusion; the kit's default)": ll.schedule.Schedule.stable_diffusion}
SMOKE = {"steps": 2, "batch_size": 4, "warmup": 1, "samples": 4, "sample_steps": 2, "n_real": 8}  # --smoke: tests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--n-real", type=int, default=1_000)
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps per sample")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUTPUTS_DIR / "compare-beta", help="training runs go under here")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    ae = ll.autoencoder.Autoencoder.from_pretrained(PRETRAINED_DIR / "ae-kl-f4-shapes32")
    ds = ll.datasets.shapes(32, n=20_000, seed=0, max_shapes=1)
    held_out = ll.datasets.shapes(32, n=args.n_real, seed=1, max_shapes=1)
    real = torch.stack([held_out[i]["image"] for i in range(args.n_real)])
    classifier = ShapesClassifier.from_pretrained(PRETRAINED_DIR / "shapes-classifier-32")
    c, h, w = ae.latent_shape(32, 32)
    noise = torch.randn((args.samples, c, h, w), generator=torch.Generator().manual_seed(0))
    rows = []
    for name, make in SCHEDULES.items():
        torch.manual_seed(0)
        ldm = ll.ldm.LatentDiffusion(ae, ll.unet.UNet(ll.unet.UNetConfig.small(in_channels=c)), schedule=make())
        t0 = time.perf_counter()
        hist = ll.train.train_ldm(ldm, ds, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                  warmup=args.warmup, ema=args.ema, device="cpu", progress=False, seed=0,
                                  out_dir=args.out / name.split()[2], checkpoint_every=args.steps)
        train_s = time.perf_counter() - t0
        samples = torch.cat([ldm.sample(noise=z, n=len(z), sampler="ddim", steps=args.sample_steps)
                             for z in noise.split(64)])
        score = evaluate_samples(samples, real, classifier)
        tail = hist["loss"][-min(100, len(hist["loss"])):]
        rows.append((name, sum(tail) / len(tail), score, train_s))
    print(f"\n{args.steps} steps, batch {args.batch_size}, lr {args.lr}, EMA {args.ema}; {args.samples} "
          f"DDIM-{args.sample_steps} samples vs {args.n_real} held-out images\n")
    print("| β schedule | loss (last 100 logged) | recognisable | FID (classifier features) | train s |")
    print("|---|---|---|---|---|")
    for name, loss, score, train_s in rows:
        print(f"| {name} | {loss:.4f} | {score['recognisable']:.1%} | {score['fid']:.1f} | "
              f"{train_s:.0f} |")


if __name__ == "__main__":
    main()

"""The main job's recipe at fixed step counts: train the main job's LDM (1 thread) and judge 256 DDIM-50 samples
at each count, as the main job does (share recognisable, FID on ShapesClassifier features vs 1,000 held-out images).

    python scripts/main_job_recipe.py NAME --batch 64 --lr 1e-3 --evals 400,700,1000

Used to choose `MainConfig` (lr, batch, the `min_ldm_steps` floor); each count resumes the same run, so the points
lie on one training curve (the learning rate is constant after warm-up). Results go to outputs/recipe/NAME.
--smoke starts from the main job's smoke configuration (`MainConfig.for_device(..., smoke=True)`) instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ldm_lite import recipes  # noqa: E402
from ldm_lite.judge import evaluate  # noqa: E402
from ldm_lite.pipeline import MainConfig, train_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--batch", type=int, default=None, help=f"default: MainConfig's ({MainConfig.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"default: MainConfig's ({MainConfig.lr})")
    p.add_argument("--warmup", type=int, default=None, help=f"default: MainConfig's ({MainConfig.warmup})")
    p.add_argument("--ema", type=float, default=None, help=f"default: MainConfig's ({MainConfig.ema})")
    p.add_argument("--width", type=int, default=None, help=f"default: MainConfig's ({MainConfig.model_channels})")
    p.add_argument("--evals", default=None, help="step counts at which to judge samples (default 400,700,1000; "
                   "with --smoke: the smoke config's steps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/recipe"), help="the run goes to <out>/NAME")
    p.add_argument("--smoke", action="store_true", help="the main job's smoke sizes (seconds; for tests, not numbers)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    base = MainConfig.for_device(dev, smoke=True) if a.smoke else MainConfig()
    overrides = {"batch_size": a.batch, "lr": a.lr, "warmup": a.warmup, "ema": a.ema, "model_channels": a.width}
    cfg = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    evals = a.evals or (str(cfg.ldm_steps) if a.smoke else "400,700,1000")
    out = a.out / a.name
    cpu = 0.0
    for n in (int(s) for s in evals.split(",")):
        c0 = time.process_time()
        ldm = recipes.train("ldm-kl-f4-shapes32", out / "ldm", progress=False,
                            **{**asdict(train_config(cfg, dev)), "steps": n, "max_seconds": None, "min_steps": 0}).model
        cpu += time.process_time() - c0
        m = evaluate(ldm, cfg.n_samples, n_real=cfg.n_eval_real, seed=cfg.seed, sampler=cfg.sampler,
                     steps=cfg.sample_steps)  # the one judge: shapes score + FID vs the held-out reference
        print("RESULT", json.dumps({"name": a.name, "batch": cfg.batch_size, "lr": cfg.lr, "steps": n,
                                    "train_cpu_s": round(cpu, 1), "recognisable": m["recognisable"],
                                    "fid": round(m["fid"], 1)}), flush=True)


if __name__ == "__main__":
    main()

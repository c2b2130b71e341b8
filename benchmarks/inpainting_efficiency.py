"""The paper's Table 6 (§4.5, "inpainting efficiency"): LDM-1 against LDM-4 for inpainting at the same budget.

Both arms are the `ldm-inpaint-shapes32` recipe (the masked image and the mask concatenated to the UNet's input),
with the same UNet, batch, steps and seed; only the first stage differs: none (`--autoencoder identity`: LDM-1, the
UNet runs on 3x32x32 pixels) or the shipped `ae-kl-f4-shapes32` (LDM-4, 3x8x8 latents). Reported per arm, as the
paper's columns: training throughput (samples/s, process CPU time), sampling throughput (DDIM samples/s), and the
quality of the filled images — FID on ShapesClassifier features between the pasted results and the originals,
with PSNR outside the mask and the share of valid fills (`image_to_image.inpainting_study`, n held-out images per
mask kind). The paper (256², A100): training 0.11 vs 0.32 samples/s, FID 24.74 vs 15.21 at equal budget.

    python benchmarks/inpainting_efficiency.py --arm ldm-1 &     # one process per arm, side by side
    python benchmarks/inpainting_efficiency.py --arm ldm-4
    python benchmarks/inpainting_efficiency.py --report benchmarks/results/inpainting_efficiency.md

Resumable: each arm is a recipe run under `--out/<arm>` (a re-run continues it; steps trained by an earlier process
are timed by that process: `timing.json` adds them up), its scores in `--out/<arm>/scores.json`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from ldm_lite import image_to_image, recipes  # noqa: E402
from ldm_lite.checkpoint import read_json, write_json  # noqa: E402
from ldm_lite.evaluation import sample_many  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR  # noqa: E402
from ldm_lite.segmenter import load_segmenter  # noqa: E402
from scripts._arms import cached, cpu_timed, finish, parser, start, train_state  # noqa: E402

ARMS = {"ldm-1": "identity", "ldm-4": "ae-kl-f4-shapes32"}
PAPER = {"ldm-1": {"train": 0.11, "fid": 24.74}, "ldm-4": {"train": 0.32, "fid": 15.21}}
SMOKE = {"steps": 2, "batch_size": 4, "n_train": 16, "n_eval": 4}


def run_arm(arm: str, out: Path, steps: int, batch_size: int, n: int, sample_steps: int, smoke: bool) -> dict:
    run = out / arm
    overrides = {"steps": steps, "batch_size": batch_size, **(SMOKE if smoke else {})}

    def measure() -> dict:
        timing_path = run / "timing.json"
        timing = read_json(timing_path) if timing_path.exists() else {"steps": 0, "cpu_seconds": 0.0}
        before = train_state(run)["step"]
        result, train_cpu = cpu_timed(recipes.train, "ldm-inpaint-shapes32", run, progress=False,
                                      autoencoder=ARMS[arm], **overrides)
        done = train_state(run)["step"] - before
        if done > 0:  # only steps this process trained count (a resumed run's earlier steps were timed before)
            timing = {"steps": timing["steps"] + done, "cpu_seconds": timing["cpu_seconds"] + train_cpu}
            write_json(timing_path, timing)
        ldm, cfg = result.model, result.config
        classifier = recipes.get_classifier()
        # sampling throughput: DDIM from masked held-out images (box masks), the whole pipeline (encode, denoise,
        # decode)
        probe = image_to_image.inpainting_batch(4 if smoke else 64, "box")
        _, sample_cpu = cpu_timed(sample_many, ldm, batch=probe, sampler="ddim", steps=sample_steps, seed=0)
        rows = image_to_image.inpainting_study(ldm, classifier, load_segmenter(), n=4 if smoke else n,
                                               steps=sample_steps)
        return {"arm": arm, "autoencoder": ARMS[arm], "latent": "x".join(map(str, ldm.latent_shape)),
                "unet_params": sum(p.numel() for p in ldm.unet.parameters()), "steps": cfg.steps,
                "batch_size": cfg.batch_size, "timed_steps": timing["steps"],
                "train_samples_per_second": timing["steps"] * cfg.batch_size / max(timing["cpu_seconds"], 1e-9),
                "sample_samples_per_second": len(probe["image"]) / max(sample_cpu, 1e-9),
                "sampler": f"ddim-{sample_steps}", "threads": torch.get_num_threads(), "study": rows}

    return cached(run, measure)


def report(out: Path) -> str:
    lines = ["| model | latent | UNet params | steps × batch | train samples/s (CPU) | DDIM-25 samples/s (CPU) | "
             "FID of the filled images (box / strokes / shape) | PSNR outside (box) | paper: train samples/s, FID |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        path = out / arm / "scores.json"
        if not path.exists():
            continue
        r = read_json(path)
        fids = " / ".join(f"{s['fid_pasted']:.1f}" for s in r["study"])
        box = next(s for s in r["study"] if s["mask"] == "box")
        lines.append(f"| {arm.upper()} | {r['latent']} | {r['unet_params']:,} | {r['steps']:,} × {r['batch_size']} | "
                     f"{r['train_samples_per_second']:.1f} | {r['sample_samples_per_second']:.1f} | {fids} | "
                     f"{box['psnr_outside_output']:.1f} dB | {PAPER[arm]['train']}, {PAPER[arm]['fid']} |")
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, OUTPUTS_DIR / "inpainting-efficiency",
               smoke=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    p.add_argument("--arm", choices=[*ARMS, "both"], default=None, help="train and judge this arm (or both)")
    p.add_argument("--steps", type=int, default=1_500, help="training steps of each arm (the same for both)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n", type=int, default=256, help="held-out images per mask kind (FID needs >= 256)")
    p.add_argument("--sample-steps", type=int, default=25)
    args = p.parse_args()
    if args.arm is None and args.report is None:
        p.error("give --arm (train and judge) or --report (collect the table), or both")
    start(args)
    for arm in ([*ARMS] if args.arm == "both" else [args.arm] if args.arm else []):
        run_arm(arm, args.out, args.steps, args.batch_size, args.n, args.sample_steps, args.smoke)
    finish(report(args.out), args.report)


if __name__ == "__main__":
    main()

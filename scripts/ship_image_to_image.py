"""Ship the image-to-image models and the shapes segmenter to data/pretrained/ (issue 12).

    python scripts/ship_image_to_image.py            # after training (outputs/i2i/<run>/model) and the benchmark
    python scripts/ship_image_to_image.py semantic-ft=21   # a fine-tuned run (train-ldm --init) in its model's place

Copies config.json + model.safetensors of each trained run, writes metrics.json (training config, loss at the end,
and the run's rows of benchmarks/results/image_to_image.json) and a README.md with the commands that made it.
Each model folder is written beside its target and moved into place (`ldm_lite.recipes.ship`): a failed or
interrupted run leaves the shipped model as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ldm_lite.image_to_image import ImageToImageConfig  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402
from ldm_lite.paths import PRETRAINED_DIR  # noqa: E402
from ldm_lite.recipes import ship  # noqa: E402

RUNS = {  # run folder -> (shipped name, task, what it is)
    "sr-bicubic": ("ldm-sr4-bicubic-shapes32", "sr",
                   "x4 super-resolution (LDM-SR), trained on bicubic down-sampling only"),
    "sr-realistic": ("ldm-sr4-realistic-shapes32", "sr-realistic",
                     "x4 super-resolution (LDM-BSR style), trained on the realistic degradation pipeline"),
    "inpaint": ("ldm-inpaint-shapes32", "inpaint", "inpainting (masked-image latent + mask, box / strokes / one shape)"),
    "semantic": ("ldm-semantic-shapes32", "semantic", "semantic synthesis from the shapes class map"),
}
# inpaint / semantic: the first session's EMA model is shipped. A later session resumed it on another β schedule (the
# kit's default changed under the run and resuming an old checkpoint did not keep its schedule) and came out worse.
SNAPSHOT = {"inpaint": 1409, "semantic": 1965}
RESUMED = {r: "; the run was stopped and resumed, and a resumed run ends with the same weights as an uninterrupted "
             "one" for r in ("sr-bicubic", "sr-realistic")}
RESUMED.update({r: f"; the run was `--steps 3000 --max-seconds 3900`, stopped at step {n}, which is the same "
                   f"as `--steps {n}`; the benchmark read a copy of this model from outputs/i2i-consistent/{r}/model"
                for r, n in SNAPSHOT.items()})
WALL = {  # wall-clock minutes of the whole run on the shared 2-core CPU (from the runs' logs; several sessions)
    "sr-bicubic": "about 41 (two sessions: steps 0-500 in ~22 min, 500-1000 in 19 min)",
    "sr-realistic": "about 50 (two sessions: steps 0-500 in ~27 min, 500-1000 in 22.5 min)",
    "inpaint": "65 (one session, stopped by --max-seconds 3900 at step 1409)",
    "semantic": "65 (one session, stopped by --max-seconds 3900 at step 1965)",
}


def tail_mean(history: dict, last: int = 100) -> float:
    steps, loss = history["step"], history["loss"]
    tail = [v for s, v in zip(steps, loss) if s > steps[-1] - last]
    return sum(tail) / len(tail)


def readme_tail(metrics: dict, rows: list, run: str, name: str) -> str:
    """The end of a shipped model's README: how it was evaluated, its rows, how to load it."""
    task = run.split("-")[0]
    degradation = f', degradation="{run.split("-")[1]}"' if task == "sr" else ""
    return f"""Evaluated by (held-out seeds; the rows are in metrics.json and benchmarks/results/image_to_image.md):

    OMP_WAIT_POLICY=PASSIVE {metrics['evaluation_command']}

{format_table(rows)}

Load it with `ldm_lite.image_to_image.load("{task}"{degradation})`
or `ldm_lite.ldm.LatentDiffusion.from_pretrained("data/pretrained/{name}")`.
"""


def ship_run(run: str, bench: dict, runs_dir: Path, dest: Path) -> None:
    name, args, what = RUNS[run]
    src = runs_dir / run
    model_dir, hist_file, cfg = src / "model", src / "history.json", None
    if run in SNAPSHOT:  # the run's model after its first session (all steps on one β schedule)
        steps = SNAPSHOT[run]
        model_dir, hist_file = src / f"model-{steps}", src / f"history-{steps}.json"
        cfg = asdict(ImageToImageConfig(task=run, steps=steps))
    cfg = cfg or json.loads((src / "train_config.json").read_text())
    hist = json.loads(hist_file.read_text())
    key = {"sr-bicubic": "sr", "sr-realistic": "sr", "inpaint": "inpaint", "semantic": "semantic"}[run]
    rows = bench.get(key, {}).get("rows", [])
    if key == "sr":
        rows = [r for r in rows if run.split("-")[1] in r["method"] or r["method"].startswith("bicubic")]
    metrics = {"what": what, "train_config": cfg, "steps_done": SNAPSHOT.get(run, int(hist["step"][-1]) + 1),
               "loss_mean_last_100_steps": tail_mean(hist), "evaluation": rows,
               "evaluation_command": bench.get(key, {}).get("command"),
               "evaluation_sampler": bench.get(key, {}).get("sampler"), "wall_minutes": WALL[run]}
    steps = metrics["steps_done"]
    command = f"ldm-lite train-ldm --condition {args} --batch-size 16 --steps {steps} --threads 1 --out outputs/i2i/{run}"
    readme = f"""# {name}

A concat-conditioned LDM on the shipped `ae-kl-f4-shapes32`: {what} (paper §3.3, §4.3-4.5).
UNet {cfg['model_channels']} channels, levels 8x8 and 4x4, trained {steps} steps of batch {cfg['batch_size']} on
`shapes(32, n={cfg['n_train']}, seed={cfg['seed']})` (lr {cfg['lr']}, EMA {cfg['ema']}; the EMA weights are shipped), on a
shared 2-core CPU with 1 thread: {WALL[run]} minutes of wall clock.

Made by (from the repository root; resumable, `outputs/i2i/{run}/checkpoint`{RESUMED.get(run, "")}):

    {command}

""" + readme_tail(metrics, rows, run, name)
    print("shipped", ship_files(model_dir, dest / name, metrics, command, readme))


FINE_TUNED = {  # run folder -> (the first run, whose shipped model it started from, and that run's steps of batch 16)
    "semantic-ft": ("semantic", 1965),
    "inpaint-ft": ("inpaint", 1409),
    "sr-bicubic-ft": ("sr-bicubic", 1000),
    "sr-realistic-ft": ("sr-realistic", 1000),
}


FIRST_RUN = {r: f"the first run was `--steps 3000 --max-seconds 3900`, stopped at step {n}, the same as `--steps {n}`; "
             for r, n in SNAPSHOT.items()}


FT_NOTES = {"inpaint-ft": " The fine-tuning ran as `--steps 4000`, then resumed with `--steps 12000`; the learning rate is "
                          "constant after warm-up and batches are a function of (seed, step), so that equals one run."}


def ship_fine_tuned(run: str, bench: dict, wall_minutes: str, runs_dir: Path, dest: Path) -> None:
    """Ship a run that fine-tuned a shipped model (`train-ldm --init`) in that model's place."""
    base, first_steps = FINE_TUNED[run]
    name, condition, what = RUNS[base]
    task = base.split("-")[0]
    src = runs_dir / run
    cfg = json.loads((src / "train_config.json").read_text())
    hist = json.loads((src / "history.json").read_text())
    steps = int(hist["step"][-1]) + 1
    rows = bench.get(task, {}).get("rows", [])
    if task == "sr":
        rows = [r for r in rows if base.split("-")[1] in r["method"] or r["method"].startswith("bicubic")]
    first = asdict(ImageToImageConfig(task=task, degradation=cfg["degradation"], steps=first_steps))
    metrics = {"what": what, "train_config": cfg, "first_stage_of_training": first,
               "steps_done": first_steps + steps, "loss_mean_last_100_steps": tail_mean(hist), "evaluation": rows,
               "evaluation_command": bench.get(task, {}).get("command"),
               "evaluation_sampler": bench.get(task, {}).get("sampler"), "wall_minutes_fine_tuning": wall_minutes}
    flags = f"--init outputs/i2i/{base}/model" + (" --latent-cache" if cfg.get("latent_cache") else "")
    command = (f"ldm-lite train-ldm --condition {condition} {flags} --batch-size {cfg['batch_size']} "
               f"--steps {cfg['steps']} --threads 1 --out outputs/i2i/{run}")
    readme = f"""# {name}

A concat-conditioned LDM on the shipped `ae-kl-f4-shapes32`: {what} (paper §3.3, §4.3-4.5).
UNet {cfg['model_channels']} channels, levels 8x8 and 4x4, trained in two runs on `shapes(32, n={cfg['n_train']}, seed={cfg['seed']})`
(EMA 0.995; the EMA weights are shipped), on a 2-core CPU with 1 thread:
1. {first_steps} steps of batch 16, lr 5e-4 (the first shipped version of this model; its command below);
2. fine-tuned from those weights (fresh optimizer and warm-up) for {steps} steps of batch {cfg['batch_size']}, lr {cfg['lr']}
   ({wall_minutes} minutes of wall clock).

Made by (from the repository root):

    ldm-lite train-ldm --condition {condition} --batch-size 16 --steps {first_steps} --threads 1 --out outputs/i2i/{base}
    {command}

({FIRST_RUN.get(base, "")}the fine-tuning started from the first version as it was shipped, the same weights as that run's model/ folder{", stopped by its time limit at step " + str(steps) if steps < cfg['steps'] else ""}).{FT_NOTES.get(run, "")}

""" + readme_tail(metrics, rows, base, name)
    print("shipped", ship_files(src / "model", dest / name, metrics, command, readme))


def ship_segmenter(src: Path, dest: Path) -> None:
    m = json.loads((src / "metrics.json").read_text())
    m.pop("history", None)
    h32 = m["held_out_32"]
    canvas = m.get("held_out_64_canvas") or m.get("held_out_64_scaled_scenes", {})
    command = "ldm-lite train-segmenter --steps 600 --threads 1 --out outputs/segmenter"
    readme = f"""# shapes-segmenter-32

`ldm_lite.segmenter.ShapesSegmenter`: a small fully convolutional net (three-level UNet, width 16) predicting the
`shapes` class of every pixel (0 background, 1..6 circle, square, triangle, diamond, cross, star). The judge of mask
agreement for semantic synthesis (and layouts). Trained {m.get('steps', 600)} steps of batch 32 on `shapes(32, seed=0)`
with mild blur/noise on half of each batch.

Made by (from the repository root, CPU, 1 thread):

    {command}

Validated on held-out real images (`evaluate_segmenter`, shapes(32, n=1000, seed=12345)): pixel accuracy
{h32['pixel_accuracy']:.4f}, mean IoU {h32['mean_iou']:.4f}; on 64x64 scenes: mean IoU {canvas.get('mean_iou', float('nan')):.4f}
(see metrics.json).

Load it with `ldm_lite.segmenter.load_segmenter()`.
"""
    print("shipped", ship_files(src / "model", dest / "shapes-segmenter-32", m, command, readme))


def ship_files(model_dir: Path, target: Path, metrics: dict, command: str, readme: str) -> Path:
    """`model_dir`'s config.json + model.safetensors, metrics.json and README.md, moved into `target` at once."""
    for f in ("config.json", "model.safetensors"):
        if not (model_dir / f).is_file():
            raise FileNotFoundError(f"{model_dir / f} is missing: is {model_dir.parent} a finished run?")
    return ship(model_dir, target.resolve(), metrics, command, target.name, readme=readme)


def main() -> None:
    runs = [*RUNS, "segmenter"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN", default=runs,
                   help=f"what to ship (default: all of {' '.join(runs)}); a fine-tuned run as RUN=MINUTES of "
                   f"wall clock, RUN one of {' '.join(FINE_TUNED)}")
    p.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "i2i", help="the runs (<dir>/<run>/model ...)")
    p.add_argument("--segmenter-dir", type=Path, default=REPO / "outputs" / "segmenter",
                   help="the segmenter's run (model/ and metrics.json)")
    p.add_argument("--dest", type=Path, default=PRETRAINED_DIR, help="ship to <dest>/<name>")
    p.add_argument("--bench", type=Path, default=REPO / "benchmarks" / "results" / "image_to_image.json",
                   help="the benchmark's results, whose rows go into metrics.json and the README")
    args = p.parse_args()
    unknown = [r for r in args.runs if r not in runs and r.partition("=")[0] not in FINE_TUNED]
    if unknown:
        p.error(f"unknown run(s) {unknown}: use {' '.join(runs)}, or RUN=MINUTES with RUN one of {' '.join(FINE_TUNED)}")
    bench = json.loads(args.bench.read_text()) if args.bench.exists() else {}
    for run in args.runs:
        if run == "segmenter":
            ship_segmenter(args.segmenter_dir, args.dest)
        elif run.partition("=")[0] in FINE_TUNED:  # e.g. semantic-ft=21 (wall-clock minutes of the fine-tuning)
            ship_fine_tuned(run.partition("=")[0], bench, run.partition("=")[2] or "?", args.runs_dir, args.dest)
        else:
            ship_run(run, bench, args.runs_dir, args.dest)


if __name__ == "__main__":
    main()

"""The kit's β schedule (√β linear 0.00085 -> 0.012, Stable Diffusion's) against the reference config's, per task.

Each task is one recipe of `ldm_lite.recipes`, trained twice from the same seed for the same number of steps — once
per schedule, nothing else changed — and judged by `ldm_lite.judge.evaluate` on held-out conditions (the judge its
condition calls for). The reference's β ends per task (CompVis/latent-diffusion `configs/`): 0.0195 unconditional,
class-conditional and 256² text-to-image; 0.0205 layout, inpainting and semantic synthesis; 0.0155 super-resolution;
all start at 0.0015.

    # one process per arm (run the two arms side by side: they then share the machine's load equally)
    python scripts/compare_beta_schedules.py --task text --arm kit &
    python scripts/compare_beta_schedules.py --task text --arm paper
    python scripts/compare_beta_schedules.py --report benchmarks/results/beta_per_task.md   # the table

Resumable: each arm is a recipe run under `--out/<task>/<arm>` (a re-run continues it) and its scores are written
to `--out/<task>/<arm>/scores.json` (skipped when present).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ldm_lite import judge, recipes  # noqa: E402
from ldm_lite.checkpoint import read_json, write_json  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR  # noqa: E402

KIT = (0.00085, 0.012)
# task -> (recipe, the reference's beta_end, recipe overrides of the A/B: width 32, from the latent cache)
TASKS: dict[str, tuple[str, float, dict]] = {
    "main": ("ldm-kl-f4-shapes32", 0.0195, {"steps": 800, "lr": 1e-3}),
    "text": ("ldm-kl-f4-shapes32-text", 0.0195, {"steps": 1_000}),
    "class": ("ldm-kl-f4-mnist32-class", 0.0195, {"steps": 800}),
    "layout": ("ldm-kl-f4-shapes32-layout", 0.0205, {"steps": 1_000}),
    "semantic": ("ldm-semantic-shapes32", 0.0205, {"steps": 1_000}),
    "inpaint": ("ldm-inpaint-shapes32", 0.0205, {"steps": 1_500}),
    "sr": ("ldm-sr4-bicubic-shapes32", 0.0155, {"steps": 1_000}),
}
EVAL = {"main": {"n": 256, "steps": 50}, "text": {"n": 128, "guidance_scales": (3.0,), "steps": 25},
        "class": {"n": 200, "guidance_scales": (3.0,), "steps": 25},
        "layout": {"n": 128, "guidance_scales": (3.0,), "steps": 25},
        "semantic": {"steps": 25}, "inpaint": {"n": 128, "steps": 25}, "sr": {"n": 128, "steps": 25}}
SMOKE_TRAIN = {"steps": 2, "batch_size": 4, "warmup": 1, "n_train": 16, "n_eval": 4}
SMOKE_EVAL = {"n": 4, "steps": 2}


def arm_schedule(task: str, arm: str) -> tuple[float, float]:
    return KIT if arm == "kit" else (0.0015, TASKS[task][1])


def run_arm(task: str, arm: str, out: Path, steps: int | None, smoke: bool) -> dict:
    """Train (or continue) one arm and judge it; the scores are cached in scores.json."""
    run = out / task / arm
    done = run / "scores.json"
    if done.exists():
        return read_json(done)
    recipe, _, overrides = TASKS[task]
    beta_start, beta_end = arm_schedule(task, arm)
    overrides = {"model_channels": 32, **overrides, **(SMOKE_TRAIN if smoke else {})}
    if steps is not None:
        overrides["steps"] = steps
    t0 = time.process_time()
    result = recipes.train(recipe, run, progress=False, beta_start=beta_start, beta_end=beta_end, **overrides)
    train_cpu = time.process_time() - t0
    options = {**EVAL[task], **SMOKE_EVAL} if smoke else EVAL[task]
    t0 = time.process_time()
    scores = judge.evaluate(result.model, **options)
    row = {"task": task, "arm": arm, "recipe": recipe, "beta_start": beta_start, "beta_end": beta_end,
           "overrides": overrides, "train_cpu_seconds": train_cpu, "eval_cpu_seconds": time.process_time() - t0,
           "threads": torch.get_num_threads(), "loss_last_100": _tail_mean(result.history.get("loss", [])),
           "evaluate": scores, "command": "python " + " ".join(sys.argv)}
    write_json(done, row)
    return row


def _tail_mean(xs: list, n: int = 100) -> float | None:
    xs = [float(x) for x in xs[-n:]]
    return sum(xs) / len(xs) if xs else None


def headline(row: dict) -> str:
    """The task's main numbers, one cell: what its judge reports first."""
    ev = row["evaluate"]
    if "rows" in ev:  # image-to-image studies: a list of rows (baselines such as bicubic up-sampling left out)
        cells = []
        for r in ev["rows"]:
            if r.get("method", "model") != "model":
                continue
            keys = [k for k in ("psnr", "lpips", "fid", "psnr_outside_output", "valid", "fid_pasted", "mean_iou") if k in r]
            label = " ".join(str(v) for k, v in r.items() if isinstance(v, str) and k != "method")
            cells.append(f"{label}: " + ", ".join(f"{k} {_fmt(r[k])}" for k in keys))
        return "; ".join(cells)
    guided = {k: v for k, v in ev.items() if k.startswith("guidance_")}
    if guided:
        return "; ".join(f"{k.replace('guidance_', 'guidance ')}: " + ", ".join(
            f"{m} {_fmt(v)}" for m, v in g.items() if m in SHOWN) for k, g in guided.items())
    return ", ".join(f"{k} {_fmt(ev[k])}" for k in ("recognisable", "fid") if k in ev)


SHOWN = ("single_kind_and_color", "two_all_and_relation", "objects_found", "accuracy", "recognisable", "fid")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))


def report(out: Path) -> str:
    lines = ["| task | recipe | β | steps | loss (last 100) | held-out scores (`judge.evaluate`) | train CPU s |",
             "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for arm in ("kit", "paper"):
            path = out / task / arm / "scores.json"
            if not path.exists():
                continue
            r = read_json(path)
            loss = f"{r['loss_last_100']:.4f}" if r["loss_last_100"] is not None else ""
            lines.append(f"| {task} | `{r['recipe']}` | {r['beta_start']} → {r['beta_end']} ({arm}) | "
                         f"{r['overrides']['steps']} | {loss} | {headline(r)} | {r['train_cpu_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASKS), help="the recipe to compare (see TASKS)")
    p.add_argument("--arm", choices=["kit", "paper", "both"], default="both")
    p.add_argument("--steps", type=int, default=None, help="training steps per arm (default: the task's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUTPUTS_DIR / "compare-beta", help="the runs go under here")
    p.add_argument("--report", type=Path, default=None, help="write the markdown table of every finished arm here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds; for tests, not numbers)")
    args = p.parse_args()
    if args.task is None and args.report is None:
        p.error("give --task (train and judge) or --report (collect the table), or both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.task is not None:
        for arm in (["kit", "paper"] if args.arm == "both" else [args.arm]):
            row = run_arm(args.task, arm, args.out, args.steps, args.smoke)
            print(json.dumps({k: row[k] for k in ("task", "arm", "beta_end", "train_cpu_seconds")}))
    table = report(args.out)
    print(table)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(table + "\n")


if __name__ == "__main__":
    main()

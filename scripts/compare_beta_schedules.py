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

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ldm_lite import judge, recipes  # noqa: E402
from ldm_lite.checkpoint import read_json  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR  # noqa: E402
from scripts._arms import cached, cpu_timed, finish, fmt, parser, start, tail_mean  # noqa: E402

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
    recipe, _, overrides = TASKS[task]
    beta_start, beta_end = arm_schedule(task, arm)
    overrides = {"model_channels": 32, **overrides, **(SMOKE_TRAIN if smoke else {})}
    if steps is not None:
        overrides["steps"] = steps
    options = {**EVAL[task], **SMOKE_EVAL} if smoke else EVAL[task]

    def measure() -> dict:
        result, train_cpu = cpu_timed(recipes.train, recipe, run, progress=False, beta_start=beta_start,
                                      beta_end=beta_end, **overrides)
        scores, eval_cpu = cpu_timed(judge.evaluate, result.model, **options)
        return {"task": task, "arm": arm, "recipe": recipe, "beta_start": beta_start, "beta_end": beta_end,
                "overrides": overrides, "train_cpu_seconds": train_cpu, "eval_cpu_seconds": eval_cpu,
                "threads": torch.get_num_threads(), "loss_last_100": tail_mean(result.history.get("loss", [])),
                "evaluate": scores}

    return cached(run, measure)


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
            cells.append(f"{label}: " + ", ".join(f"{k} {fmt(r[k])}" for k in keys))
        return "; ".join(cells)
    guided = {k: v for k, v in ev.items() if k.startswith("guidance_")}
    if guided:
        return "; ".join(f"{k.replace('guidance_', 'guidance ')}: " + ", ".join(
            f"{m} {fmt(v)}" for m, v in g.items() if m in SHOWN) for k, g in guided.items())
    return ", ".join(f"{k} {fmt(ev[k])}" for k in ("recognisable", "fid") if k in ev)


SHOWN = ("single_kind_and_color", "two_all_and_relation", "objects_found", "accuracy", "recognisable", "fid")


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
    p = parser(__doc__, OUTPUTS_DIR / "compare-beta")
    p.add_argument("--task", choices=list(TASKS), help="the recipe to compare (see TASKS)")
    p.add_argument("--arm", choices=["kit", "paper", "both"], default="both")
    p.add_argument("--steps", type=int, default=None, help="training steps per arm (default: the task's)")
    args = p.parse_args()
    if args.task is None and args.report is None:
        p.error("give --task (train and judge) or --report (collect the table), or both")
    start(args)
    if args.task is not None:
        for arm in (["kit", "paper"] if args.arm == "both" else [args.arm]):
            row = run_arm(args.task, arm, args.out, args.steps, args.smoke)
            print(json.dumps({k: row[k] for k in ("task", "arm", "beta_end", "train_cpu_seconds")}))
    finish(report(args.out), args.report)


if __name__ == "__main__":
    main()

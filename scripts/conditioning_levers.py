"""The levers of conditioning (issue 25), each arm at equal CPU time: which change makes text, layout and class
models follow their condition on a 2-core CPU?

Each lever is a few named arms; an arm is one recipe of `ldm_lite.recipes` with a few overrides, trained from seed 0
for a budget of this process's CPU seconds (`TrainConfig.budget_clock="cpu"`: CPU time, not wall time, so arms that
share a busy machine get the same compute) and judged by `ldm_lite.judge.evaluate` on held-out conditions at
guidance 1, 3 and 5 (the judge its condition calls for: two-object captions and single-shape captions, layouts,
classes; FID on ≥ 256 samples where the judge gives one).

    # one process per arm, one thread each (run two arms side by side: they share the machine alike)
    python scripts/conditioning_levers.py --lever width --arm w64 &
    python scripts/conditioning_levers.py --lever width --arm w32
    python scripts/conditioning_levers.py --report benchmarks/results/conditioning_levers.md   # the table
    python scripts/conditioning_levers.py --list        # every lever and arm, with its CLI equivalent
    python scripts/conditioning_levers.py --lever width --probe 20   # CPU s per step of each arm (20 steps, no judge)

Resumable: each arm is a recipe run under `--out/<recipe>/<its overrides>` (the same command continues it; a larger
`--cpu-seconds` trains it on) and its scores go to `scores.json` there (skipped when present). Arms that are the
same run (the text baseline, `TEXT_42`, is the first arm of four levers) share that folder: it trains once (`--list` marks
the repeats; never run two of them at the same time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ldm_lite import judge, recipes  # noqa: E402
from ldm_lite.checkpoint import read_json  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR  # noqa: E402
from scripts._arms import cached, cpu_timed, finish, fmt, parser, start, tail_mean, train_state  # noqa: E402

TEXT, LAYOUT, CLASS = "ldm-kl-f4-shapes32-text", "ldm-kl-f4-shapes32-layout", "ldm-kl-f4-shapes32-class"
AT_64 = {"autoencoder": "ae-kl-f4-c3-shapes64", "resolution": 64}  # 16x16 latents: 4x the cells per shape
# The text arms were measured against the text recipe as it was then: two shapes in 42% of the training images
# (`max_shapes_share` unset). The recipe now ships the winner (1.0, 85%), so the text arms state the old share.
TEXT_42 = {"max_shapes_share": None}
# lever -> {arm: (recipe, overrides)}; the first arm is the baseline (every recipe here is width 32)
LEVERS: dict[str, dict[str, tuple[str, dict]]] = {
    "resolution": {"f4-32": (TEXT, TEXT_42), "f2-32": (TEXT, {**TEXT_42, "autoencoder": "ae-kl-f2-shapes32"}),
                   "f4-64": (TEXT, {**TEXT_42, **AT_64})},
    "resolution-layout": {"f4-32": (LAYOUT, {}), "f2-32": (LAYOUT, {"autoencoder": "ae-kl-f2-shapes32"}),
                          "f4-64": (LAYOUT, AT_64)},
    "width": {"w32": (TEXT, TEXT_42), "w48": (TEXT, {**TEXT_42, "model_channels": 48}),
              "w64": (TEXT, {**TEXT_42, "model_channels": 64})},
    "layout-tokens": {"fourier": (LAYOUT, {}), "tokens": (LAYOUT, {"condition": "layout-tokens"})},
    # two-shape captions: 42% of the training images (a second shape with no room is left out), 64%, 85%
    "balance": {"two-42": (TEXT, TEXT_42), "two-64": (TEXT, {"max_shapes_share": 0.75}),
                "two-85": (TEXT, {"max_shapes_share": 1.0})},
    "text-encoder": {"scratch": (TEXT, TEXT_42), "frozen": ("ldm-kl-f4-shapes32-frozen-text", {})},
    "class": {"w32": (CLASS, {}), "w64": (CLASS, {"model_channels": 64})},
}
BUDGET = {"steps": 1_000_000, "budget_clock": "cpu", "checkpoint_every": 250}  # the CPU budget ends every arm
EVAL = {"n": 256, "n_real": 1_000, "guidance_scales": (1.0, 3.0, 5.0), "sampler": "dpm_solver_pp", "steps": 20}
HEADLINE = {"shapes-text": "two_all_and_relation", "layout": "objects_found", "shapes-class": "accuracy",
            "mnist-class": "accuracy", "mnist-text": "accuracy"}  # the metric an arm is ranked by
SMOKE_TRAIN = {"steps": 2, "batch_size": 4, "warmup": 1, "n_train": 16, "n_eval": 4, "checkpoint_every": 1}
SMOKE_EVAL = {"n": 4, "n_real": 8, "guidance_scales": (1.0, 3.0), "steps": 2}


def arm_command(lever: str, arm: str, cpu_seconds: float) -> str:
    """The one line that runs an arm (train + judge)."""
    return f"python scripts/conditioning_levers.py --lever {lever} --arm {arm} --cpu-seconds {cpu_seconds:g}"


def train_command(lever: str, arm: str, cpu_seconds: float) -> str:
    """The same training as `ldm-lite train` (no judging): the recipe, the arm's overrides and the CPU budget."""
    recipe, overrides = LEVERS[lever][arm]
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in {**overrides, **BUDGET, "max_seconds": cpu_seconds}.items()]
    return f"ldm-lite train {recipe} " + " ".join(flags)


def run_dir(out: Path, lever: str, arm: str) -> Path:
    """Where an arm trains: one folder per (recipe, overrides), so the same run in two levers is trained once."""
    recipe, overrides = LEVERS[lever][arm]
    return out / recipe / ("-".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "recipe")


def first_of_run(lever: str, arm: str) -> tuple[str, str]:
    """The first (lever, arm) of LEVERS that is the same run as this one."""
    return next((lv, a) for lv, arms in LEVERS.items() for a, spec in arms.items() if spec == LEVERS[lever][arm])


def run_arm(lever: str, arm: str, out: Path, cpu_seconds: float, smoke: bool, threads: int) -> dict:
    """Train (or continue) one arm for `cpu_seconds` of CPU time and judge it; the scores are cached in scores.json."""
    run = run_dir(out, lever, arm)
    recipe, overrides = LEVERS[lever][arm]
    train = {**BUDGET, "max_seconds": cpu_seconds, **overrides, **(SMOKE_TRAIN if smoke else {})}
    options = {**EVAL, **SMOKE_EVAL} if smoke else EVAL

    def measure() -> dict:
        result, train_cpu = cpu_timed(recipes.train, recipe, run, progress=False, **train)
        state = train_state(run)
        scores, eval_cpu = cpu_timed(judge.evaluate, result.model, **options)
        return {"lever": lever, "arm": arm, "recipe": recipe, "overrides": overrides, "cpu_budget_s": cpu_seconds,
                "steps_done": state["step"], "train_loop_cpu_seconds": state["extra"].get("cpu_seconds"),
                "train_cpu_seconds_this_call": train_cpu, "eval_cpu_seconds": eval_cpu, "threads": threads,
                "loss_last_100": tail_mean(result.history.get("loss", [])), "evaluate": scores}

    return cached(run, measure)


def probe(lever: str, arm: str, out: Path, steps: int) -> dict:
    """CPU seconds per training step of an arm: `steps` steps from scratch (2,000 training images: the cost of a
    step does not depend on their number) under `<out>/probe/<lever>/<arm>`, no judging."""
    recipe, overrides = LEVERS[lever][arm]
    run = out / "probe" / run_dir(out, lever, arm).relative_to(out)
    recipes.train(recipe, run, progress=False, resume=False, **{**overrides, "steps": steps, "n_train": 2_000,
                                                                 "warmup": 1, "checkpoint_every": steps})
    spent = train_state(run)["extra"]["cpu_seconds"]
    return {"lever": lever, "arm": arm, "steps": steps, "cpu_seconds_per_step": spent / steps}


def best_scale(ev: dict) -> tuple[str, float | None]:
    """The guidance scale with the highest headline metric, and that value."""
    key = HEADLINE.get(ev.get("condition_kind"), "accuracy")
    rows = {k.removeprefix("guidance_"): v.get(key) for k, v in ev.items() if k.startswith("guidance_")}
    rows = {k: v for k, v in rows.items() if v is not None}
    if not rows:
        return "", None
    s = max(rows, key=rows.get)
    return s, rows[s]


def cells(row: dict) -> list[str]:
    """two-object, single-shape, layout / class accuracy at guidance 1 and 3, FID at 3, the best scale."""
    ev = row["evaluate"]
    g1, g3 = ev.get("guidance_1", {}), ev.get("guidance_3", {})

    def pair(key: str) -> str:
        return "" if key not in g3 else f"{fmt(g1.get(key))} / {fmt(g3.get(key))}"

    main = "objects_found" if ev.get("condition_kind") == "layout" else "accuracy"
    s, v = best_scale(ev)
    return [pair("two_all_and_relation"), pair("single_kind_and_color"), pair(main), fmt(g3.get("fid")),
            f"{s}: {fmt(v)}" if s else ""]


def report(out: Path) -> str:
    lines = ["| lever | arm | recipe + overrides | CPU s (train loop) | steps | two objects + relation (g 1 / 3) | "
             "one shape kind + colour (g 1 / 3) | layout / class (g 1 / 3) | FID (g 3) | best guidance: headline | "
             "command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lever, arms in LEVERS.items():
        for arm in arms:
            path = run_dir(out, lever, arm) / "scores.json"
            if not path.exists():  # an arm not (yet) measured is a row that says so, not a missing row
                recipe, overrides = LEVERS[lever][arm]
                what = f"`{recipe}` " + " ".join(f"{k}={v}" for k, v in overrides.items())
                lines.append(f"| {lever} | {arm} | {what} | not run | | | | | | | `{arm_command(lever, arm, 1800)}` |")
                continue
            r = read_json(path)
            what = f"`{r['recipe']}` " + " ".join(f"{k}={v}" for k, v in r["overrides"].items())
            lines.append(f"| {lever} | {arm} | {what} | {fmt(r['train_loop_cpu_seconds'])} | {r['steps_done']} | "
                         + " | ".join(cells(r)) + f" | `{arm_command(lever, arm, r['cpu_budget_s'])}` |")
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, OUTPUTS_DIR / "conditioning-levers")
    p.add_argument("--lever", choices=list(LEVERS), help="the lever to measure (see --list)")
    p.add_argument("--arm", default="all", help="one arm of the lever (default: every arm, one after the other)")
    p.add_argument("--cpu-seconds", type=float, default=1800.0, help="CPU seconds of training per arm (default 30 min)")
    p.add_argument("--list", action="store_true", help="print every lever's arms with the command of each")
    p.add_argument("--probe", type=int, default=None, metavar="STEPS",
                   help="only measure the CPU seconds per step of the arm(s) over STEPS steps (no judging)")
    args = p.parse_args()
    if args.list:
        for lever, arms in LEVERS.items():
            for arm in arms:
                same = first_of_run(lever, arm)
                note = f"same run as --lever {same[0]} --arm {same[1]}" if same != (lever, arm) else \
                    train_command(lever, arm, args.cpu_seconds)
                print(f"{arm_command(lever, arm, args.cpu_seconds)}   # {note}")
        return
    if args.lever is None and args.report is None:
        p.error("give --lever (train and judge its arms), --report (collect the table), --list, or --lever with --probe")
    if args.lever is not None and args.arm != "all" and args.arm not in LEVERS[args.lever]:
        p.error(f"--arm {args.arm!r} is not an arm of {args.lever}; use one of {list(LEVERS[args.lever])} or all")
    start(args)
    if args.lever is not None:
        for arm in (list(LEVERS[args.lever]) if args.arm == "all" else [args.arm]):
            if args.probe is not None:
                print(json.dumps(probe(args.lever, arm, args.out, args.probe)))
                continue
            row = run_arm(args.lever, arm, args.out, args.cpu_seconds, args.smoke, args.threads)
            print(json.dumps({k: row[k] for k in ("lever", "arm", "steps_done", "train_loop_cpu_seconds")}))
    if args.probe is None:
        finish(report(args.out), args.report)


if __name__ == "__main__":
    main()

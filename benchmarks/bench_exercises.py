"""Seconds per checked exercise (`ldm_lite.exercises`): the check alone, and the check plus its "plug it into the
model" demo, each run with the reference solution in a warm process (shipped models already loaded once).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_exercises.py            # real demo sizes
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_exercises.py --smoke    # smoke sizes (LDM_LITE_SMOKE=1)

Targets (issue 14): a check within 5 s on 2 CPU cores, the demo within 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ldm_lite import exercises as ex  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402

NAMES = [n[len("check_"):] for n in ex.__all__ if n.startswith("check_")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=NAMES, choices=NAMES, metavar="NAME",
                   help=f"exercises to time (default: all): {' '.join(NAMES)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--smoke", action="store_true",
                   help="the demos' smoke sizes (sets LDM_LITE_SMOKE=1, as the notebook tests run them)")
    args = p.parse_args()
    if args.smoke:
        os.environ["LDM_LITE_SMOKE"] = "1"  # read by each check when it runs
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("solutions", ROOT / "solutions" / "exercises.py")
    sol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sol)
    with contextlib.redirect_stdout(io.StringIO()):  # warm-up: load the shipped models and torch kernels once
        for name in args.only:
            getattr(ex, f"check_{name}")(getattr(sol, name), demo=False)
    rows = []
    for name in args.only:
        check, fn = getattr(ex, f"check_{name}"), getattr(sol, name)
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            passed = check(fn, demo=False).passed
            t1 = time.perf_counter()
            check(fn, demo=True)
            t2 = time.perf_counter()
        rows.append({"exercise": name, "passed": passed, "check_s": round(t1 - t0, 2), "check+demo_s": round(t2 - t1, 2)})
    print(format_table(rows))
    if not all(r["passed"] for r in rows):
        sys.exit("a reference solution failed its check")


if __name__ == "__main__":
    main()

"""Crash soak: SIGKILL a resumable training run at random moments, resume it, and check that nothing is lost.

    python scripts/crash_soak.py --kills 20 --steps 24

Each cycle starts `tests/helpers/crash_train.py` (the tiny LDM, a checkpoint every 2 steps, resume=True) over and
over, killing it after a random delay, until a run finishes; after every kill the checkpoint must load. The finished
model must equal, bit for bit, an uninterrupted run's. Prints a markdown table (one row per cycle).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "tests" / "helpers"
sys.path.insert(0, str(ROOT))

from ldm_lite.checkpoint import read_json, recover_dir  # noqa: E402
from ldm_lite.ldm import LatentDiffusion  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HELPERS)]), "OMP_WAIT_POLICY": "PASSIVE"}
SMOKE = {"kills": 1, "steps": 4}  # --smoke: one kill (seconds), for tests


def start(out: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPERS / "crash_train.py"), str(out), str(steps)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="stop once this many SIGKILLs were sent")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--min-delay", type=float, default=0.3, help="kill delay, as a fraction of one uninterrupted run")
    p.add_argument("--max-delay", type=float, default=1.1, help="(so runs progress on a slow or busy machine too)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-soak-"))
    ref_dir = work / "reference"
    t_ref = time.time()
    proc = start(ref_dir, args.steps)
    if proc.wait() != 0:
        sys.exit(f"reference run failed: {proc.stderr.read().decode()[-2000:]}")
    reference = load_file(str(ref_dir / "model" / "model.safetensors"))
    run_s = time.time() - t_ref
    print(f"uninterrupted run: {run_s:.1f} s; kills after {args.min_delay * run_s:.1f}-{args.max_delay * run_s:.1f} s",
          flush=True)
    rows, kills, cycle = [], 0, 0
    while kills < args.kills:
        cycle += 1
        out, n_kills, resumed_from, t0 = work / f"cycle{cycle}", 0, [], time.time()
        while True:
            proc = start(out, args.steps)
            budget_left = kills + n_kills < args.kills  # once all kills are sent, the resumed run may finish
            try:
                proc.wait(timeout=rng.uniform(args.min_delay, args.max_delay) * run_s if budget_left else None)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                n_kills += 1
                ckpt = recover_dir(out / "checkpoint")
                if ckpt is not None:  # the last checkpoint must load
                    LatentDiffusion.from_pretrained(ckpt)
                    resumed_from.append(read_json(ckpt / "state.json")["step"])
                else:
                    resumed_from.append(0)
                if len(resumed_from) > 1 and resumed_from[-1] <= resumed_from[-2]:
                    run_s *= 1.3  # no progress since the last kill (start-up alone outlasted it): wait longer
                continue
            if proc.returncode != 0:
                sys.exit(f"cycle {cycle}: run failed: {proc.stderr.read().decode()[-2000:]}")
            break
        final = load_file(str(out / "model" / "model.safetensors"))
        same = final.keys() == reference.keys() and all(torch.equal(final[k], v) for k, v in reference.items())
        rows.append((cycle, n_kills, resumed_from, same, time.time() - t0))
        if n_kills == 0:  # the machine got faster (or slower): kill relative to the latest uninterrupted run
            run_s = time.time() - t0
        kills += n_kills
        shutil.rmtree(out)
        print(f"cycle {cycle}: {n_kills} kills, checkpoints at steps {resumed_from}, bit-identical: {same}", flush=True)
    print(f"\n{kills} SIGKILLs over {len(rows)} cycles; every checkpoint loaded; "
          f"{sum(r[3] for r in rows)}/{len(rows)} finished runs bit-identical to the uninterrupted one\n")
    print("| cycle | SIGKILLs | checkpoint step found after each kill | final weights bit-identical | wall s |")
    print("|---|---|---|---|---|")
    for c, n, steps, same, wall in rows:
        print(f"| {c} | {n} | {steps} | {same} | {wall:.0f} |")
    shutil.rmtree(work)
    if not all(r[3] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

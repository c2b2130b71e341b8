"""The compression trade-off sweep (LDM paper §4.1): LDM-{1,2,4,8,16} at equal training compute. An experiment of
about an hour on 2 CPU cores, so it is not a `bench_*` script (`make bench` does not run it).

    python benchmarks/run_tradeoff.py --out outputs/tradeoff                              # resumable
    python benchmarks/run_tradeoff.py --out outputs/tradeoff --fs --report benchmarks/results/tradeoff

Runs (or continues) `ldm_lite.tradeoff.run_tradeoff`, then `tradeoff.write_report`: results.csv/json,
fig6_training.png, fig7_sampling.png, samples.png, table6.md and run.json in --report (default: --out). Several
processes may share one --out with different --fs (each f is trained by one of them); `--fs` with no value only
collects and plots.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldm_lite import tradeoff  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402
from ldm_lite.runtime import pick_device  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/tradeoff")
    p.add_argument("--fs", type=int, nargs="*", default=None, help="default: 1 2 4 8 16; no value: report only")
    p.add_argument("--budget", choices=["time", "steps"], default=None, help="default: time (equal compute)")
    p.add_argument("--budget-seconds", type=float, default=None)
    p.add_argument("--steps", type=int, default=None, help="with --budget steps")
    p.add_argument("--n-sampling", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--report", default=None, help="folder for CSV/JSON/PNG (default: --out)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.fs is None or args.fs:
        overrides = {k: v for k, v in {"budget": args.budget, "budget_seconds": args.budget_seconds,
                                        "steps": args.steps, "n_sampling": args.n_sampling,
                                        "fs": tuple(args.fs) if args.fs else None}.items() if v is not None}
        dev = pick_device(args.device)
        cfg = (tradeoff.TradeoffConfig.smoke(**overrides) if args.smoke
               else tradeoff.TradeoffConfig.for_device(dev, **overrides))
        tradeoff.run_tradeoff(cfg, args.out, device=dev)
    rows = tradeoff.write_report(args.out, args.report, "python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(format_table(tradeoff.table6(rows)))


if __name__ == "__main__":
    main()

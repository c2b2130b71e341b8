"""The compression trade-off sweep (LDM paper §4.1): LDM-{1,2,4,8,16} at equal training compute. An experiment of
about an hour on 2 CPU cores, so it is not a `bench_*` script (`make bench` does not run it).

    python benchmarks/run_tradeoff.py --out outputs/tradeoff --budget-seconds 240      # resumable
    python benchmarks/run_tradeoff.py --out outputs/tradeoff --report benchmarks/results/tradeoff

Runs (or continues) `ldm_lite.tradeoff.run_tradeoff`, then writes results.csv/json, fig6_training.png,
fig7_sampling.png, samples.png and table6.md to --report (default: --out). Several processes may share one --out
with different --fs (each f is trained by one of them); `--report` alone (no --fs) only collects and plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldm_lite import plotting, tradeoff  # noqa: E402
from ldm_lite.checkpoint import write_json  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu} ({torch.get_num_threads()} torch threads)"


def report(out: Path, dest: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    rows = tradeoff.collect(out)
    dest.mkdir(parents=True, exist_ok=True)
    tradeoff.write_results(rows, dest)
    plotting.tradeoff_training(rows).savefig(dest / "fig6_training.png", dpi=110)
    plotting.tradeoff_sampling(rows).savefig(dest / "fig7_sampling.png", dpi=110)
    samples = {}
    for f_dir in sorted(out.glob("f*")):
        last = sorted(f_dir.glob("samples_step*.safetensors"))
        if last:
            samples[int(f_dir.name[1:])] = tradeoff.load_samples(last[-1])
    if samples:
        plotting.samples_by_f(samples, title="samples at the end of the budget (DDIM-20)").savefig(
            dest / "samples.png", dpi=110)
    table = tradeoff.table6(rows)
    (dest / "table6.md").write_text(format_table(table) + "\n")
    write_json(dest / "table6.json", table)
    if dest != out:
        write_json(dest / "config.json", json.loads((out / "config.json").read_text()))
        for f_dir in sorted(out.glob("f*")):
            (dest / f_dir.name).mkdir(exist_ok=True)
            for p in list(f_dir.glob("*.json")) + list(f_dir.glob("*.safetensors")):
                (dest / f_dir.name / p.name).write_bytes(p.read_bytes())
    write_json(dest / "run.json", {"report_command": command, "machine": machine(),
                                   "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())})
    print(format_table(table))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/tradeoff")
    p.add_argument("--fs", type=int, nargs="*", default=None, help="default: 1 2 4 8 16; empty with --report")
    p.add_argument("--budget", choices=["time", "steps"], default=None)
    p.add_argument("--budget-seconds", type=float, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-sampling", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--report", default=None, help="folder for CSV/JSON/PNG (default: --out)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.fs is None or args.fs:
        overrides = {k: v for k, v in {"budget": args.budget, "budget_seconds": args.budget_seconds,
                                        "steps": args.steps, "n_sampling": args.n_sampling,
                                        "fs": tuple(args.fs) if args.fs else None}.items() if v is not None}
        from ldm_lite.runtime import pick_device

        dev = pick_device(args.device)
        cfg = (tradeoff.TradeoffConfig.smoke(**overrides) if args.smoke
               else tradeoff.TradeoffConfig.for_device(dev, **overrides))
        tradeoff.run_tradeoff(cfg, out, device=dev)
    report(out, Path(args.report) if args.report else out, "python " + " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()

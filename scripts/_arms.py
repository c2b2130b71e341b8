"""What the A/B scripts share (scripts/compare_beta_schedules.py, scripts/conditioning_levers.py,
benchmarks/inpainting_efficiency.py; not a script itself): an arm is one recipe run under its own folder, trained and
judged once, its row cached in `<run>/scores.json`; every script prints the table of its finished arms and writes it
to `--report`. One process per arm, on `--threads` threads, so arms run side by side share the machine alike."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ldm_lite.checkpoint import read_json, write_json
from ldm_lite.fit import CHECKPOINT_DIR


def parser(doc: str, out: Path, smoke: str = "tiny sizes (seconds; for tests, not numbers)") -> argparse.ArgumentParser:
    """The flags every A/B script has (--threads, --out, --report, --smoke); its docstring is the help text."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=out, help="the runs go under here")
    p.add_argument("--report", type=Path, default=None, help="write the markdown table of every finished arm here")
    p.add_argument("--smoke", action="store_true", help=smoke)
    return p


def start(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)


def cached(run: Path, measure: Callable[[], dict]) -> dict:
    """The arm's row: `<run>/scores.json` when an earlier call finished it, else `measure()` (train and judge) with
    the command that ran it, written there."""
    done = run / "scores.json"
    if done.exists():
        return read_json(done)
    row = {**measure(), "command": "python " + " ".join(sys.argv)}
    write_json(done, row)
    return row


def cpu_timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(fn(*args, **kwargs), the CPU seconds this process spent in it)."""
    t0 = time.process_time()
    return fn(*args, **kwargs), time.process_time() - t0


def train_state(run: Path) -> dict:
    """The state.json of a recipe run's checkpoint (step 0 and no extras before the first one)."""
    path = run / CHECKPOINT_DIR / "state.json"
    return read_json(path) if path.exists() else {"step": 0, "extra": {}}


def tail_mean(xs: list, n: int = 100) -> float | None:
    xs = [float(x) for x in xs[-n:]]
    return sum(xs) / len(xs) if xs else None


def fmt(v: Any) -> str:
    """A table cell: 3 decimals below 10, 1 above, blank for a missing value."""
    if v is None:
        return ""
    return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))


def finish(table: str, report: Path | None) -> None:
    """Print the table of finished arms; write it to `report` too (the --report file) when given."""
    print(table)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(table + "\n")

"""The compression trade-off sweep (LDM paper §4.1): `ldm-lite experiment tradeoff`, under the name the committed
results quote (`benchmarks/results/tradeoff*/README.md`). An experiment of hours on 2 CPU cores, so it is not a
`bench_*` script (`make bench` does not run it). Every flag is the CLI's:

    python benchmarks/run_tradeoff.py --out outputs/tradeoff64 --threads 1 --fs 1          # resumable; one f per process
    python benchmarks/run_tradeoff.py --protocol equal-compute --out outputs/tradeoff      # the 32x32 second view
    python benchmarks/run_tradeoff.py --out outputs/tradeoff64 --fs --report benchmarks/results/tradeoff64
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from ldm_lite.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["ldm-lite", "experiment", "tradeoff", *sys.argv[1:]]  # what run.json records: the CLI equivalent
    sys.exit(main(sys.argv[1:]))

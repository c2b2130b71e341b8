"""Throughput of the built-in `shapes` dataset (images/s) on one core, against a plain tensor copy as the peer.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_datasets.py

Prints a markdown table: median of 5 repeats of rendering N items via `dataset[i]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import ldm_lite as ll  # noqa: E402

SMOKE = {"n": 8, "repeats": 1}  # --smoke: seconds, for tests


def rate(fn, n: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="items rendered per repeat (a quarter of it at 128x128)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for res, max_shapes in ((32, 1), (32, 3), (64, 3), (128, 3)):
        ds = ll.datasets.shapes(resolution=res, n=10**6, seed=0, max_shapes=max_shapes)
        n = args.n if res <= 64 else max(1, args.n // 4)
        r = rate(lambda k, ds=ds: [ds[i] for i in range(k)], n, args.repeats)
        rows.append((f"shapes {res}x{res}, max_shapes={max_shapes}", r))
    mn = ll.datasets.mnist(resolution=32, channels=3, source="offline")
    rows.append(("mnist 32x32x3 (offline, resized)", rate(lambda k: [mn[i % len(mn)] for i in range(k)], args.n,
                                                          args.repeats)))
    print(f"| dataset | images/s (1 thread, median of {args.repeats}) |\n|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} |")
    print("\ntarget: >= 2,000 images/s for shapes at 32x32 on one core")


if __name__ == "__main__":
    main()

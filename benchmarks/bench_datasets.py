"""Throughput of the built-in `shapes` dataset (images/s) on one core, against a plain tensor copy as the peer.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_datasets.py

Prints a markdown table: median of 5 repeats of rendering N items via `dataset[i]`.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import ldm_lite as ll  # noqa: E402


def rate(fn, n: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for res, max_shapes in ((32, 1), (32, 3), (64, 3), (128, 3)):
        ds = ll.datasets.shapes(resolution=res, n=10**6, seed=0, max_shapes=max_shapes)
        n = 2000 if res <= 64 else 500
        r = rate(lambda k, ds=ds: [ds[i] for i in range(k)], n)
        rows.append((f"shapes {res}x{res}, max_shapes={max_shapes}", r))
    mn = ll.datasets.mnist(resolution=32, channels=3, source="offline")
    rows.append(("mnist 32x32x3 (offline, resized)", rate(lambda k: [mn[i % len(mn)] for i in range(k)], 2000)))
    print("| dataset | images/s (1 thread, median of 5) |\n|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} |")
    print("\ntarget: >= 2,000 images/s for shapes at 32x32 on one core")


if __name__ == "__main__":
    main()

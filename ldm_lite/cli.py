"""The `ldm-lite` command: the stages of the pipeline from a shell.

    ldm-lite main          # the README's main job on the built-in dataset
    ldm-lite tour          # a tour of the datasets: grids, captions, masks -> outputs/tour/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see README: CPU threads)

log = logging.getLogger("ldm_lite")


def tour(out: Path, resolution: int = 32) -> dict:
    """Grids of every offline dataset with captions (and masks for shapes); returns what it wrote."""
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    from . import datasets, plotting

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    jobs = {
        "shapes": lambda: datasets.shapes(resolution=resolution, n=10_000, seed=0),
        "shapes_bg_noise": lambda: datasets.shapes(resolution=resolution, n=10_000, seed=0, background="noise"),
        "mnist": lambda: datasets.mnist(resolution=resolution, channels=3, source="offline"),
    }
    for name, make in tqdm(jobs.items(), desc="dataset tour"):
        ds = make()
        fig = plotting.dataset_grid(ds, n=16, title=f"{name}: {len(ds):,} items at {resolution}x{resolution}",
                                    show_masks=name.startswith("shapes"))
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        written[name] = {"items": len(ds), "figure": str(path), "captions": [ds[i]["caption"] for i in range(4)]}
    (out / "tour.json").write_text(json.dumps(written, indent=2))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldm-lite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("main", help="the main job on the built-in dataset (writes under outputs/)")
    m.add_argument("--out", type=Path, default=None, help="output folder (default outputs/main)")
    t = sub.add_parser("tour", help="grids of the datasets with captions and masks")
    t.add_argument("--out", type=Path, default=None)
    t.add_argument("--resolution", type=int, default=32)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .paths import OUTPUTS_DIR

    if args.command == "tour":
        tour(args.out or OUTPUTS_DIR / "tour", args.resolution)
    elif args.command == "main":
        out = args.out or OUTPUTS_DIR / "main"
        written = tour(out / "tour")
        log.info("wrote %s", ", ".join(v["figure"] for v in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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


def train_classifier(out: Path, steps: int, batch_size: int, seed: int) -> dict:
    """Train the ShapesClassifier and write it with its held-out metrics and a README."""
    from .checkpoint import write_json
    from .classifier import evaluate_classifier, train_shapes_classifier

    model, _ = train_shapes_classifier(steps=steps, batch_size=batch_size, seed=seed)
    metrics = evaluate_classifier(model)
    model.save_pretrained(out)
    write_json(out / "metrics.json", metrics)
    cmd = f"ldm-lite train-classifier --steps {steps} --batch-size {batch_size} --seed {seed} --out {out}"
    (out / "README.md").write_text(
        "# ShapesClassifier (32x32)\n\nJudges `shapes` images: kind, colour, size, and whether an image is a valid "
        "single-colour shape. Used for the shapes score, conditioning accuracy and FID features.\n\n"
        f"Made by:\n\n    {cmd}\n\nHeld-out metrics (seed 12345, 2,000 images): see metrics.json.\n")
    log.info("classifier metrics: %s", metrics)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldm-lite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("main", help="the main job on the built-in dataset (writes under outputs/)")
    m.add_argument("--out", type=Path, default=None, help="output folder (default outputs/main)")
    m.add_argument("--train-ae", action="store_true", help="train the autoencoder too (default: use the shipped one)")
    m.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    m.add_argument("--steps", type=int, default=None, help="LDM training steps (default: sized for the device)")
    t = sub.add_parser("tour", help="grids of the datasets with captions and masks")
    t.add_argument("--out", type=Path, default=None)
    t.add_argument("--resolution", type=int, default=32)
    c = sub.add_parser("train-classifier", help="train the ShapesClassifier used by the shapes score and FID")
    c.add_argument("--out", type=Path, default=None, help="default data/pretrained/shapes-classifier-32")
    c.add_argument("--steps", type=int, default=800)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .paths import OUTPUTS_DIR

    if args.command == "train-classifier":
        from .paths import PRETRAINED_DIR

        train_classifier(args.out or PRETRAINED_DIR / "shapes-classifier-32", args.steps, args.batch_size, args.seed)
    elif args.command == "tour":
        tour(args.out or OUTPUTS_DIR / "tour", args.resolution)
    elif args.command == "main":
        from dataclasses import replace

        from .pipeline import MainConfig, run_main
        from .runtime import pick_device, smoke_mode

        out = args.out or OUTPUTS_DIR / "main"
        tour(out / "tour")
        cfg = MainConfig.for_device(pick_device(args.device), smoke_mode())
        if args.steps is not None:
            cfg = replace(cfg, ldm_steps=args.steps)
        run_main(out, train_ae=args.train_ae, device=args.device, config=cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

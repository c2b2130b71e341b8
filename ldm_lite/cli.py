"""The `ldm-lite` command: the stages of the pipeline from a shell.

    ldm-lite main                   # the README's main job: LDM-4 on shapes 32x32, end to end -> outputs/main/
    ldm-lite tour                   # the datasets: grids, captions, masks -> outputs/tour/
    ldm-lite train-ae --preset kl-f4 --dataset shapes
    ldm-lite train-ldm --ae data/pretrained/ae-kl-f4-shapes32
    ldm-lite sample --model data/pretrained/ldm-kl-f4-shapes32 --sampler dpm_solver_pp --steps 20
    ldm-lite evaluate --model data/pretrained/ldm-kl-f4-shapes32 --samplers ddim:100,dpm_solver_pp:20
    ldm-lite bench                  # the benchmark scripts
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
    cmd = f"ldm-lite train-classifier --steps {steps} --batch-size {batch_size} --seed {seed}"
    (out / "README.md").write_text(
        "# ShapesClassifier (32x32)\n\nJudges `shapes` images: kind, colour, size, and whether an image is a valid "
        "single-colour shape. Used for the shapes score, conditioning accuracy and FID features.\n\n"
        f"Made by:\n\n    {cmd}\n\nHeld-out metrics (seed 12345, 2,000 images): see metrics.json.\n")
    log.info("classifier metrics: %s", metrics)
    return metrics


def _ship(model_dir: Path, dest: Path, metrics: dict, command: str, title: str) -> None:
    """Copy a trained model folder to data/pretrained/<name>/ with metrics.json and a README naming the command."""
    import shutil

    from .checkpoint import atomic_dir, write_json

    with atomic_dir(dest) as tmp:
        for f in model_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "README.md").write_text(f"# {title}\n\nMade by (from the repository root):\n\n    {command}\n\n"
                                       "Measured metrics of this run: metrics.json.\n")
    log.info("shipped %s", dest)


def _command_line() -> str:
    return "ldm-lite " + " ".join(sys.argv[1:])


def cmd_main(args) -> None:
    from dataclasses import replace

    from .paths import OUTPUTS_DIR, PRETRAINED_DIR
    from .pipeline import MainConfig, run_main
    from .runtime import pick_device, smoke_mode

    out = args.out or OUTPUTS_DIR / "main"
    tour(out / "tour")
    cfg = MainConfig.for_device(pick_device(args.device), smoke_mode())
    if args.steps is not None:
        cfg = replace(cfg, ldm_steps=args.steps)
    if args.budget_minutes is not None:
        cfg = replace(cfg, max_train_seconds=60 * args.budget_minutes if args.budget_minutes > 0 else None)
    metrics = run_main(out, train_ae=args.train_ae, device=args.device, config=cfg)
    if args.ship:
        _ship(out / "ldm" / "model", PRETRAINED_DIR / args.ship, metrics, _command_line(),
              f"{args.ship}: LDM-4 on shapes 32x32 (unconditional)")


def cmd_train_ae(args) -> None:
    import torch

    from . import datasets
    from .autoencoder import Autoencoder, AutoencoderConfig, estimate_scale_factor
    from .checkpoint import write_json
    from .losses import AutoencoderLossConfig
    from .metrics import reconstruction_metrics
    from .paths import OUTPUTS_DIR
    from .train import FINAL_DIR, train_autoencoder

    out = args.out or OUTPUTS_DIR / "ae" / args.preset
    ds = datasets.get(args.dataset, resolution=args.resolution, **({"channels": 3} if args.dataset == "mnist" else {}))
    held_out = (datasets.shapes(args.resolution, n=256, seed=1) if args.dataset == "shapes"
                else datasets.mnist(args.resolution, channels=3, split="test"))
    ae = Autoencoder(AutoencoderConfig.preset(args.preset))
    loss = AutoencoderLossConfig(perceptual_weight=0.0 if args.no_lpips else 1.0,
                                 disc_start=args.disc_start if args.disc_start is not None else 10**9)
    train_autoencoder(ae, ds, steps=args.steps, batch_size=args.batch_size, lr=args.lr, loss_config=loss,
                      ema=args.ema, device=args.device, out_dir=out, resume=True)
    estimate_scale_factor(ae, ds, max_images=512)
    ae.save_pretrained(out / FINAL_DIR)
    x = torch.stack([held_out[i]["image"] for i in range(len(held_out))])
    metrics = reconstruction_metrics(ae.cpu(), x, lpips_net=None)
    metrics["scale_factor"] = float(ae.scale_factor)
    write_json(out / FINAL_DIR / "metrics.json", metrics)
    log.info("autoencoder %s: %s", args.preset, metrics)


def cmd_train_ldm(args) -> None:
    from . import datasets
    from .autoencoder import Autoencoder
    from .ldm import LatentDiffusion
    from .paths import OUTPUTS_DIR
    from .train import train_ldm
    from .unet import UNet, UNetConfig

    ae = Autoencoder.from_pretrained(args.ae)
    ldm = LatentDiffusion(ae, UNet(UNetConfig.small(in_channels=ae.latent_channels,
                                                    model_channels=args.model_channels)),
                          image_size=args.resolution, prediction=args.prediction)
    ds = datasets.shapes(args.resolution, n=args.n_train, seed=0, max_shapes=args.max_shapes)
    train_ldm(ldm, ds, steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
              out_dir=args.out or OUTPUTS_DIR / "ldm", resume=True)


def _load_ldm(path: Path, device: str):
    from .ldm import LatentDiffusion
    from .runtime import pick_device

    return LatentDiffusion.from_pretrained(path).to(pick_device(device)).eval()


def cmd_sample(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from .plotting import image_grid

    ldm = _load_ldm(args.model, args.device)
    labels = [int(v) for v in args.labels.split(",")] if args.labels else None
    x = ldm.sample(None if labels else args.n, labels=labels, sampler=args.sampler, steps=args.steps,
                   guidance_scale=args.guidance, generator=torch.Generator().manual_seed(args.seed)).cpu()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(x, ncols=8, title=f"{args.model.name}: {args.sampler}, {args.steps} steps").savefig(args.out, dpi=110)
    log.info("wrote %s", args.out)


def cmd_evaluate(args) -> None:
    import torch

    from . import datasets
    from .checkpoint import write_json
    from .evaluation import evaluate_samples
    from .pipeline import load_classifier

    ldm = _load_ldm(args.model, args.device)
    results = {}
    real_ds = datasets.shapes(ldm.config.image_size, n=args.n_real, seed=1, max_shapes=1)
    real = torch.stack([real_ds[i]["image"] for i in range(args.n_real)])
    for spec in args.samplers.split(","):
        sampler, steps = spec.split(":")
        imgs = torch.cat([ldm.sample(min(256, args.n - i), sampler=sampler, steps=int(steps),
                                     generator=torch.Generator().manual_seed(args.seed + i)).cpu()
                          for i in range(0, args.n, 256)])
        results[spec] = evaluate_samples(imgs, real, load_classifier(), n_boot=args.n_boot)
        log.info("%s: %s", spec, {k: v for k, v in results[spec].items() if not isinstance(v, dict)})
    results["command"] = _command_line()
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results, indent=2))


def cmd_bench(args) -> None:
    import subprocess

    from .paths import REPO_ROOT

    scripts = sorted((REPO_ROOT / "benchmarks").glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if args.only in s.name]
    for script in scripts:
        log.info("running %s", script.name)
        subprocess.run([sys.executable, str(script)], check=True)


def cmd_train_classifier(args) -> None:
    from .paths import PRETRAINED_DIR

    train_classifier(args.out or PRETRAINED_DIR / "shapes-classifier-32", args.steps, args.batch_size, args.seed)


def cmd_tour(args) -> None:
    from .paths import OUTPUTS_DIR

    tour(args.out or OUTPUTS_DIR / "tour", args.resolution)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldm-lite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("main", help="the main job: LDM-4 on shapes 32x32 end to end (writes under outputs/main)")
    m.add_argument("--out", type=Path, default=None, help="output folder (default outputs/main)")
    m.add_argument("--train-ae", action="store_true", help="train the autoencoder too (default: use the shipped one)")
    m.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    m.add_argument("--steps", type=int, default=None, help="LDM training steps (default: sized for the device)")
    m.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget for LDM training (default 7 on a CPU, none on a GPU; 0 = none)")
    m.add_argument("--ship", default=None, help="also copy the trained LDM to data/pretrained/<SHIP>")
    m.set_defaults(func=cmd_main)

    t = sub.add_parser("tour", help="grids of the datasets with captions and masks")
    t.add_argument("--out", type=Path, default=None)
    t.add_argument("--resolution", type=int, default=32)
    t.set_defaults(func=cmd_tour)

    a = sub.add_parser("train-ae", help="train a KL/VQ autoencoder (first stage)")
    a.add_argument("--preset", default="kl-f4", help="kl-f4, kl-f8, vq-f4, ...")
    a.add_argument("--dataset", default="shapes", help="shapes or mnist")
    a.add_argument("--resolution", type=int, default=32)
    a.add_argument("--steps", type=int, default=2_000)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--lr", type=float, default=4e-4)
    a.add_argument("--ema", type=float, default=None)
    a.add_argument("--no-lpips", action="store_true", help="reconstruction + KL only (no ImageNet weights needed)")
    a.add_argument("--disc-start", type=int, default=None, help="step at which the PatchGAN starts (default: never)")
    a.add_argument("--device", default="auto")
    a.add_argument("--out", type=Path, default=None, help="default outputs/ae/<preset>")
    a.set_defaults(func=cmd_train_ae)

    lt = sub.add_parser("train-ldm", help="train an LDM on shapes on top of a trained autoencoder")
    lt.add_argument("--ae", type=Path, required=True, help="autoencoder folder (e.g. data/pretrained/ae-kl-f4-shapes32)")
    lt.add_argument("--steps", type=int, default=5_000)
    lt.add_argument("--batch-size", type=int, default=64)
    lt.add_argument("--lr", type=float, default=5e-4)
    lt.add_argument("--model-channels", type=int, default=64)
    lt.add_argument("--prediction", default="eps", choices=["eps", "v"])
    lt.add_argument("--resolution", type=int, default=32)
    lt.add_argument("--n-train", type=int, default=20_000)
    lt.add_argument("--max-shapes", type=int, default=1)
    lt.add_argument("--device", default="auto")
    lt.add_argument("--out", type=Path, default=None, help="default outputs/ldm (resumes from its checkpoint)")
    lt.set_defaults(func=cmd_train_ldm)

    s = sub.add_parser("sample", help="sample a grid from a trained LDM")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--labels", default=None, help="class labels for a class-conditional model, e.g. 0,1,2")
    s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "plms", "dpm_solver_pp"])
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", type=Path, default=Path("outputs/samples.png"))
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="shapes score + FID on classifier features (with a bootstrap interval)")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--samplers", default="ddim:100,dpm_solver_pp:20", help="comma-separated sampler:steps")
    e.add_argument("--n", type=int, default=1_000)
    e.add_argument("--n-real", type=int, default=1_000)
    e.add_argument("--n-boot", type=int, default=50)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/ (prints markdown tables)")
    b.add_argument("--only", default=None, help="run only scripts whose name contains this")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("train-classifier", help="train the ShapesClassifier used by the shapes score and FID")
    c.add_argument("--out", type=Path, default=None, help="default data/pretrained/shapes-classifier-32")
    c.add_argument("--steps", type=int, default=800)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_train_classifier)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        parser.exit(2, f"ldm-lite {args.command}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train one of the shipped autoencoders and write it to data/pretrained/<name>/.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_pretrained_ae.py --name ae-kl-f4-shapes32 --preset kl-f4 --dataset shapes --steps 3000

Training state goes to outputs/ae/<name>/ and is resumed when the command is run again. At the end the scale
factor 1/std(z) is estimated on training images, the model is evaluated on held-out images (shapes: seed 1, never
used for training; MNIST: the test split) and written with metrics.json and a README.md naming this command.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldm_lite import datasets  # noqa: E402
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, estimate_scale_factor  # noqa: E402
from ldm_lite.checkpoint import write_json  # noqa: E402
from ldm_lite.losses import AutoencoderLossConfig  # noqa: E402
from ldm_lite.metrics import reconstruction_metrics  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR, PRETRAINED_DIR  # noqa: E402
from ldm_lite.train import FINAL_DIR, train_autoencoder  # noqa: E402


def load_data(name: str, resolution: int, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train images, held-out images), each (N, 3, R, R) in [-1, 1]."""
    if name == "shapes":
        train, test = datasets.shapes(resolution, n=n_train, seed=0), datasets.shapes(resolution, n=512, seed=1)
    elif name == "mnist":
        train = datasets.mnist(resolution, channels=3, split="train", source="offline")
        test = datasets.mnist(resolution, channels=3, split="test", source="offline")
    else:
        raise ValueError(f"unknown dataset {name!r}; use shapes or mnist")
    stack = lambda ds: torch.stack([ds[i]["image"] for i in range(len(ds))])
    return stack(train), stack(test)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--preset", default="kl-f4")
    p.add_argument("--dataset", default="shapes", choices=["shapes", "mnist"])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--latent-channels", type=int, default=3)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--perceptual-weight", type=float, default=1.0)
    p.add_argument("--lpips-net", default="vgg")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--disc-start", type=int, default=None, help="default: 3/4 of --steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate outputs/ae/<name>/model")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    overrides = dict(latent_channels=args.latent_channels, base_channels=args.base_channels)
    if args.preset.startswith("vq"):
        overrides["codebook_size"] = args.codebook_size
    config = AutoencoderConfig.preset(args.preset, **overrides)
    disc_start = args.disc_start if args.disc_start is not None else args.steps * 3 // 4
    loss_config = AutoencoderLossConfig(perceptual_weight=args.perceptual_weight, lpips_net=args.lpips_net,
                                        kl_weight=args.kl_weight, disc_start=disc_start)
    train, test = load_data(args.dataset, args.resolution, args.n_train)
    run_dir = OUTPUTS_DIR / "ae" / args.name

    t0 = time.time()
    if args.eval_only:
        ae = Autoencoder.from_pretrained(run_dir / FINAL_DIR)
        history = json.loads((run_dir / "history.json").read_text())
    else:
        torch.manual_seed(args.seed)
        ae = Autoencoder(config)
        history = train_autoencoder(ae, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                    loss_config=loss_config, ema=args.ema or None, device=args.device,
                                    out_dir=run_dir, checkpoint_every=250, resume=True, seed=args.seed)
        (run_dir / "history.json").write_text(json.dumps(history))
    ae = ae.cpu().eval()
    scale = estimate_scale_factor(ae, train[:1024], generator=torch.Generator().manual_seed(0))
    metrics = reconstruction_metrics(ae, test, lpips_net="alex")
    metrics.update(scale_factor=scale, eval_images=len(test), eval_data=_eval_name(args.dataset),
                   train_steps=args.steps, batch_size=args.batch_size, params=sum(p.numel() for p in ae.parameters()),
                   compression=ae.config.compression(), wall_s_this_run=round(time.time() - t0, 1))
    last = {k: v[-1] for k, v in history.items() if v and k != "step"}
    metrics["final_train_logs"] = last
    out = PRETRAINED_DIR / args.name
    ae.save_pretrained(out)
    write_json(out / "metrics.json", metrics)
    argv = [a for a in sys.argv if a != "--eval-only"]  # the README names the training command
    command = "OMP_WAIT_POLICY=PASSIVE python " + " ".join(shlex.quote(a) for a in argv)
    (out / "README.md").write_text(_readme(args, config, loss_config, metrics, command))
    logging.info("wrote %s: %s", out, {k: metrics[k] for k in ("psnr", "ssim", "lpips") if k in metrics})


def _eval_name(dataset: str) -> str:
    return "shapes(resolution=32, n=512, seed=1) (held out: training used seed 0)" if dataset == "shapes" else \
        "mnist(split='test', source='offline') (500 held-out digits)"


def _loss_text(loss_config: AutoencoderLossConfig, regularizer: str, steps: int) -> str:
    reg = f"KL weight {loss_config.kl_weight}" if regularizer == "kl" else "VQ codebook + commitment terms"
    parts = ["L1"]
    if loss_config.perceptual_weight > 0:
        parts.append(f"LPIPS-{loss_config.lpips_net} x {loss_config.perceptual_weight}")
    text = " + ".join(parts) + f" with a learned log-variance, {reg}"
    if loss_config.disc_start < steps:
        text += f", PatchGAN hinge loss with the adaptive weight from step {loss_config.disc_start}"
    else:
        text += "; no GAN (reconstruction + regularizer only, the short schedule of the f sweep)"
    return text


def _readme(args, config, loss_config, metrics: dict, command: str) -> str:
    return f"""# {args.name}

A {config.regularizer.upper()} autoencoder, f={config.f}, latent {config.latent_channels} channels
({config.compression():.0f}x fewer numbers than the image), {metrics['params']:,} parameters, trained on `{args.dataset}`
{args.resolution}x{args.resolution} for {args.steps} steps of batch {args.batch_size} (EMA {args.ema} weights shipped) with
{_loss_text(loss_config, config.regularizer, args.steps)}.

Made by (from the repository root, CPU, {args.threads} thread(s)):

    {command}

Training state is kept in outputs/ae/{args.name}/ and the command resumes from it when run again; a resumed run
ends with the same weights as an uninterrupted one (tests/test_train_autoencoder.py).

Held-out reconstruction ({metrics['eval_data']}, {metrics['eval_images']} images, posterior mode):
PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, LPIPS-alex {metrics.get('lpips', float('nan')):.4f}.
Scale factor 1/std(z) = {metrics['scale_factor']:.4f} (stored in the weights as `scale_factor`).

Load it with `ldm_lite.autoencoder.Autoencoder.from_pretrained("data/pretrained/{args.name}")`.
"""


if __name__ == "__main__":
    main()

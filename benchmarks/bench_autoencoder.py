"""Autoencoder training throughput (images/s): ldm_lite's KL autoencoder vs diffusers' AutoencoderKL of the same
configuration and the same weights, in the same process, alternating repeats so both see the same machine load.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_autoencoder.py            # 32x32, f=4, batch 16
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_autoencoder.py --device cuda --batch-size 64

One step = encode, sample the posterior, decode, L1 + 1e-6 KL, backward, Adam step (the loss network and the
discriminator are left out: they are the same code for both). Reports medians over repeats and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, to_diffusers  # noqa: E402
from ldm_lite.runtime import pick_device  # noqa: E402

SMOKE = {"resolution": 16, "batch_size": 2, "steps": 1, "repeats": 1, "threads": 1}  # --smoke: seconds, for tests


def ours_step(ae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    posterior = ae.encode(x)
    x_hat = ae.decode(posterior.sample())
    return (x - x_hat).abs().mean() + 1e-6 * posterior.kl().mean()


def diffusers_step(vae, x: torch.Tensor) -> torch.Tensor:
    posterior = vae.encode(x).latent_dist
    x_hat = vae.decode(posterior.sample()).sample
    return (x - x_hat).abs().mean() + 1e-6 * posterior.kl().mean()


def time_steps(model, step, x: torch.Tensor, opt: torch.optim.Optimizer, n: int, device: torch.device) -> float:
    """Seconds for n training steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        loss = step(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="kl-f4")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.preset(args.preset)).to(device).train()
    vae = to_diffusers(ae, sample_size=args.resolution).to(device).train()
    x = (torch.rand(args.batch_size, 3, args.resolution, args.resolution) * 2 - 1).to(device)
    models = {"ldm_lite": (ae, ours_step), "diffusers": (vae, diffusers_step)}
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, (m, _) in models.items()}
    for name, (m, step) in models.items():  # warm-up
        time_steps(m, step, x, opts[name], 2, device)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, (m, step) in models.items():
            rates[name].append(args.steps * args.batch_size / time_steps(m, step, x, opts[name], args.steps, device))
    params = sum(q.numel() for q in ae.parameters())
    print(f"\n{args.preset} autoencoder training, {args.resolution}x{args.resolution}, batch {args.batch_size}, "
          f"{params / 1e6:.2f}M params, device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats x {args.steps} steps")
    print("| implementation | images/s (median) | min | max |")
    print("|---|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.1f} | {min(r):.1f} | {max(r):.1f} |")
    ratio = statistics.median(rates["ldm_lite"]) / statistics.median(rates["diffusers"])
    print(f"\nratio ldm_lite / diffusers = {ratio:.3f} (target >= 1: not slower than diffusers)")


if __name__ == "__main__":
    main()

"""Benchmark: the whole LDM training loop against the bare UNet step it is built around, in the same run.

The main job's model (LDM-4 on `shapes` 32×32: shipped kl-f4 first stage, `UNetConfig.small`, batch 64) trained by
`train_ldm` in three ways, against the bare step:

  bare step      UNet forward + ε-MSE backward + AdamW step on latents already on the device (nothing else)
  loop, images   `train_ldm` as the main job runs it: render the batch, encode it with the frozen first stage,
                 the step, gradient clipping, the EMA update, logging, the NaN guard
  loop, cache    the same with `latent_cache=True` (latents computed once; a fresh posterior sample per step)
  + compile      (GPU only, or `--compile` on the CPU) the cached loop with `compile={"mode": ...}`

Each measurement is the median time per step after warm-up; rounds alternate the variants so background load
hits all of them alike, and the table reports each loop's throughput as a share of the bare step's measured in
the same round (the issue-10 target: >= 90% on the CPU, >= 50% of the fastest bare step on a GPU).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_training_loop.py --threads 2 --rounds 5
    python benchmarks/bench_training_loop.py --threads 1 --clock cpu     # on a busy shared CPU
    python benchmarks/bench_training_loop.py --device cuda --batch 128 --width 128 --compile reduce-overhead
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads are 10x slower when shared

import argparse
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from bench_unet import count_flops, matmul_ceiling  # noqa: E402

from ldm_lite import datasets, recipes  # noqa: E402
from ldm_lite.latents import LatentCache  # noqa: E402
from ldm_lite.ldm import LatentDiffusion  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402
from ldm_lite.runtime import pick_device  # noqa: E402
from ldm_lite.train import train_ldm  # noqa: E402
from ldm_lite.unet import UNet, UNetConfig  # noqa: E402

CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process: robust to other jobs)
SMOKE = {"threads": 1, "batch": 4, "width": 32, "steps": 2, "rounds": 1, "n_images": 64,  # --smoke: seconds, for tests
         "ceiling_size": 256}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(ae, width: int) -> LatentDiffusion:
    torch.manual_seed(0)
    unet = UNet(UNetConfig.small(in_channels=ae.latent_channels, model_channels=width))
    return LatentDiffusion(ae, unet, schedule="scaled_linear", image_size=32)


def bare_step_seconds(ldm: LatentDiffusion, batch: int, steps: int, device: torch.device, bf16: bool,
                      compile_mode: str | None) -> float:
    """Median seconds of UNet forward + backward + AdamW on device-resident latents."""
    unet = ldm.unet.to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=device.type in ("cuda", "cpu"))
    z = torch.randn(batch, *ldm.latent_shape, device=device)
    eps = torch.randn_like(z)
    t = torch.randint(0, ldm.schedule.T, (batch,), device=device)
    fwd = torch.compile(unet, mode=compile_mode) if compile_mode else unet

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(fwd(z, t).float(), eps)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t0 = CLOCK()
        step()
        sync(device)
        times.append(CLOCK() - t0)
    return statistics.median(times)


def loop_step_seconds(make_ldm, data, batch: int, steps: int, device: torch.device, **options) -> float:
    """Seconds per step of `train_ldm` (everything the loop does). On the CPU: the median gap between
    `step_callback` time stamps after 3 warm-up steps. On a GPU a callback would sync every step, so two runs of
    3 and 3 + `steps` steps are timed end to end (compilation included in both) and differenced."""

    def run(n: int, callback=None) -> float:
        sync(device)
        t0 = CLOCK()
        train_ldm(make_ldm(), data, steps=n, batch_size=batch, lr=1e-4, warmup=10, ema=0.995, device=device,
                  progress=False, log_every=10, step_callback=callback, **options)
        sync(device)
        return CLOCK() - t0

    if device.type != "cuda":
        stamps: list[float] = []
        run(steps + 3, lambda step, loss: stamps.append(CLOCK()))
        return statistics.median(b - a for a, b in zip(stamps[3:], stamps[4:]))
    return (run(3 + steps) - run(3)) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="UNet model_channels (main job: 64 CPU, 128 GPU)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", default=None, help="torch.compile mode for a compiled variant (default on a GPU: "
                   "reduce-overhead = CUDA graphs; none on the CPU)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (on a shared CPU machine, insensitive to other processes)")
    p.add_argument("--n-images", type=int, default=2_000, help="training images (at least batch x (steps + 8))")
    p.add_argument("--ceiling-size", type=int, default=2048, help="side of the matmul that measures the ceiling")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = p.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        args = p.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if pick_device(args.device).type == "cuda":
            raise SystemExit("--clock cpu measures CPU work; on a GPU use the default wall clock")
        CLOCK = time.process_time
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    compile_mode = args.compile or ("reduce-overhead" if dev.type == "cuda" else None)
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()

    ae, source = recipes.load_or_train("ae-kl-f4-shapes32")
    ae = ae.to(dev)
    images = datasets.shapes(32, n=max(args.n_images, args.batch * (args.steps + 8)), seed=0, max_shapes=1)
    t0 = time.perf_counter()
    cache = LatentCache(images, ae, device=dev, progress=False)
    sync(dev)
    cache_s = time.perf_counter() - t0

    variants = {
        "bare UNet step": lambda: bare_step_seconds(build(ae, args.width), args.batch, args.steps, dev, bf16, None),
        "train_ldm, images (render + encode each step)": lambda: loop_step_seconds(
            lambda: build(ae, args.width), images, args.batch, args.steps, dev),
        "train_ldm, latent cache": lambda: loop_step_seconds(lambda: build(ae, args.width), cache, args.batch, args.steps, dev),
    }
    if compile_mode:
        variants[f"bare UNet step, compiled ({compile_mode})"] = lambda: bare_step_seconds(
            build(ae, args.width), args.batch, args.steps, dev, bf16, compile_mode)
        variants[f"train_ldm, latent cache, compiled ({compile_mode})"] = lambda: loop_step_seconds(
            lambda: build(ae, args.width), cache, args.batch, args.steps, dev, compile={"mode": compile_mode},
            sync_every=50 if dev.type == "cuda" else None)
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            per_round[name].append(run())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k}: {v[-1] * 1e3:.0f} ms" for k, v in per_round.items()),
              flush=True)

    probe = build(ae, args.width).to(dev)
    z = torch.randn(args.batch, *probe.latent_shape, device=dev)
    flops = count_flops(lambda: probe.unet(z, torch.zeros(args.batch, dtype=torch.long, device=dev)), backward=True)
    ceiling = matmul_ceiling(args.ceiling_size, repeats=5, device=dev, clock=CLOCK)
    bare = per_round["bare UNet step"]
    fastest_bare = [min(vals) for vals in zip(*(v for k, v in per_round.items() if k.startswith("bare")))]
    rows = []
    for name, vals in per_round.items():
        share = statistics.median(b / v for b, v in zip(bare, vals))
        share_fast = statistics.median(b / v for b, v in zip(fastest_bare, vals))
        rows.append({"variant": name, "ms/step (median)": f"{statistics.median(vals) * 1e3:.1f}",
                     "min-max ms": f"{min(vals) * 1e3:.0f}-{max(vals) * 1e3:.0f}",
                     "steps/s": f"{1 / statistics.median(vals):.2f}",
                     "throughput vs bare step": f"{share:.0%}", "vs fastest bare step": f"{share_fast:.0%}"})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"\n{name}, torch {torch.__version__}, threads={args.threads}, batch {args.batch}, UNet width {args.width}, "
          f"{'bf16 autocast' if bf16 else 'fp32'}, {args.clock} clock, {args.rounds} rounds x {args.steps} steps, first stage {source}; "
          f"latent cache of {len(cache)} items built in {cache_s:.1f} s\n")
    print(format_table(rows))
    achieved = flops / statistics.median(bare) / 1e9
    print(f"\nbare step: {flops / 1e9:.1f} GFLOP (torch.utils.flop_counter) -> {achieved:.1f} GFLOP/s = "
          f"{achieved / ceiling:.0%} of the fp32 matmul ceiling ({ceiling:.1f} GFLOP/s, {args.ceiling_size}² matmul, same clock)")


if __name__ == "__main__":
    main()

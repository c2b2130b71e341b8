"""Benchmark: our UNet against diffusers' UNet2DModel / UNet2DConditionModel of the same shape, in the same run.

Both models get the same widths, blocks per level, attention resolutions, batch and optimizer (AdamW, fused where
torch has it). Measured per configuration, alternating ours / diffusers so background load hits both alike:
  train   forward + backward + AdamW step, samples/s
  sample  one denoiser forward under no_grad (one sampler step), samples/s
plus the achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter) as a fraction of the fp32 matmul ceiling
measured in the same run (a 2048² matmul, timed once per round so it sees the same background load). Times are
medians of repeats; ratios are medians of the per-repeat ratios (diffusers time / our time), by wall clock and by
process CPU time (less sensitive to other processes on shared cores).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_unet.py --threads 2 --repeats 7
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_unet.py --configs latent8 --repeats 3   # quicker
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads are 10x slower when shared

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ldm_lite.unet import UNet, UNetConfig  # noqa: E402


@dataclass
class Case:
    space: str  # "pixel" or "latent"
    ours: UNetConfig
    size: int  # H = W of the input
    context: tuple[int, int] | None  # (L, d) or None
    note: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W), with C the channels the config takes (so a changed preset cannot feed the wrong shape)."""
        return (self.ours.in_channels, self.size, self.size)

    @property
    def name(self) -> str:
        c, h, w = self.shape
        return f"{self.space} {h}×{w}×{c}{self.note}"


CASES = {
    "pixel32": Case("pixel", UNetConfig.pixel32(), 32, None, " (LDM-1)"),
    "latent8": Case("latent", UNetConfig.small(), 8, None, " (LDM-4)"),
    "latent8-cond": Case("latent", UNetConfig.small(context_dim=64), 8, (8, 64), " + cross-attn (L=8, d=64)"),
}
SMOKE = {"batch": 1, "repeats": 1, "warmup": 0, "threads": 1, "ceiling_size": 256}  # --smoke: seconds, for tests


def diffusers_twin(cfg: UNetConfig, size: int) -> torch.nn.Module:
    """The diffusers UNet with the same widths, blocks per level and attention resolutions (its default heads)."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    attend = [2**i in cfg.attention_resolutions for i in range(len(widths))]
    if cfg.context_dim is None:
        return UNet2DModel(
            sample_size=size, in_channels=cfg.in_channels, out_channels=cfg.out_channels, block_out_channels=widths,
            layers_per_block=cfg.num_res_blocks, norm_num_groups=cfg.norm_groups,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attend),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)),
        )
    return UNet2DConditionModel(
        sample_size=size, in_channels=cfg.in_channels, out_channels=cfg.out_channels, block_out_channels=widths,
        layers_per_block=cfg.num_res_blocks, norm_num_groups=cfg.norm_groups, cross_attention_dim=cfg.context_dim,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attend),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)),
    )


def make_fns(model: torch.nn.Module, is_ours: bool, case: Case, batch: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *case.shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    target = torch.randn(batch, *case.shape, generator=g)
    ctx = torch.randn(batch, *case.context, generator=g) if case.context else None
    if is_ours:
        fwd = lambda: model(x, t, ctx)
    elif ctx is None:
        fwd = lambda: model(x, t).sample
    else:
        fwd = lambda: model(x, t, encoder_hidden_states=ctx).sample
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):  # no fused AdamW for this device/torch: foreach on both sides
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def train_step():
        model.train()
        loss = F.mse_loss(fwd(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample_step():
        model.eval()
        fwd()

    return train_step, sample_step, fwd


def count_flops(fn: Callable[[], object], backward: bool) -> float:
    with FlopCounterMode(display=False) as counter:
        out = fn()
        if backward:
            out.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_both(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is less sensitive to other processes on shared cores."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def matmul_ceiling(n: int = 2048, repeats: int = 3, device: torch.device | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 GFLOP/s of an n×n @ n×n matmul: the best of `repeats` (the machine's ceiling under the current load),
    on `device` (synchronised on a GPU), timed with `clock` (e.g. time.process_time on a shared CPU)."""
    device = device or torch.device("cpu")
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = clock()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - t0

    once()
    return 2 * n**3 / min(once() for _ in range(repeats)) / 1e9


def bench_case(case: Case, batch: int, repeats: int, warmup: int, mm: Callable[[], float]) -> dict:
    torch.manual_seed(0)
    ours = UNet(case.ours)
    theirs = diffusers_twin(case.ours, case.shape[-1])
    fns = {"ours": make_fns(ours, True, case, batch), "diffusers": make_fns(theirs, False, case, batch)}
    params = {"ours": sum(p.numel() for p in ours.parameters()), "diffusers": sum(p.numel() for p in theirs.parameters())}
    flops = {k: (count_flops(f[2], True), count_flops(f[2], False)) for k, f in fns.items()}
    for _mode, idx in (("train", 0), ("sample", 1)):
        for _ in range(warmup):
            for f in fns.values():
                f[idx]()
    times: dict[tuple[str, str], list[float]] = {(k, m): [] for k in fns for m in ("train", "sample")}
    cpu: dict[tuple[str, str], list[float]] = {(k, m): [] for k in fns for m in ("train", "sample")}
    ceilings = []
    for _ in range(repeats):  # alternate so both see the same background load
        ceilings.append(mm())  # the matmul ceiling under this round's load
        for mode, idx in (("train", 0), ("sample", 1)):
            for k, f in fns.items():
                wall, cpu_s = timed_both(f[idx])
                times[(k, mode)].append(wall)
                cpu[(k, mode)].append(cpu_s)
    return {"params": params, "flops": flops, "times": times, "cpu": cpu, "ceilings": ceilings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="pixel32,latent8,latent8-cond", help=f"comma list of {list(CASES)}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ceiling-size", type=int, default=2048, help="side of the matmul that measures the ceiling")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    ap.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    args = ap.parse_args()
    if args.smoke:  # the tiny sizes, unless a flag sets its own
        ap.set_defaults(**SMOKE)
        args = ap.parse_args()
    unknown = sorted(set(args.configs.split(",")) - set(CASES))
    if unknown:
        ap.error(f"--configs: unknown {unknown}; choose from {list(CASES)}")
    torch.set_num_threads(args.threads)
    import diffusers

    rows, details, ceilings = [], [], []
    for key in args.configs.split(","):
        case = CASES[key]
        r = bench_case(case, args.batch, args.repeats, args.warmup, lambda: matmul_ceiling(args.ceiling_size))
        ceiling = statistics.median(r["ceilings"])
        ceilings += r["ceilings"]
        for mode, fi in (("train", 0), ("sample", 1)):
            med = {k: statistics.median(r["times"][(k, mode)]) for k in ("ours", "diffusers")}
            ratios = [d / o for o, d in zip(r["times"][("ours", mode)], r["times"][("diffusers", mode)])]
            cpu_ratio = statistics.median(d / o for o, d in zip(r["cpu"][("ours", mode)], r["cpu"][("diffusers", mode)]))
            thr = {k: args.batch / med[k] for k in med}
            gfs = {k: r["flops"][k][fi] / med[k] / 1e9 for k in med}
            rows.append((case.name, mode, thr["ours"], thr["diffusers"], statistics.median(ratios), min(ratios),
                         max(ratios), cpu_ratio, gfs["ours"], gfs["diffusers"], ceiling))
        details.append(f"- {case.name}: params ours {r['params']['ours'] / 1e6:.2f}M, diffusers "
                       f"{r['params']['diffusers'] / 1e6:.2f}M; GFLOP per train step ours "
                       f"{r['flops']['ours'][0] / 1e9:.1f}, diffusers {r['flops']['diffusers'][0] / 1e9:.1f}; "
                       f"per forward ours {r['flops']['ours'][1] / 1e9:.1f}, diffusers {r['flops']['diffusers'][1] / 1e9:.1f}")
    lines = [
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, {platform.processor() or platform.machine()}, "
        f"threads={torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, batch {args.batch}, "
        f"{args.repeats} repeats (median). fp32 ceiling: a {args.ceiling_size}² matmul timed once per round (best of 3), "
        f"{min(ceilings):.0f}-{max(ceilings):.0f} GFLOP/s over the run (other processes share the cores); "
        "each config's % uses the median of its own rounds.",
        "",
        "| config | step | ours samples/s | diffusers samples/s | speed ratio, wall (median, min-max) | "
        "ratio, CPU time | ceiling GFLOP/s | ours GFLOP/s (% ceiling) | diffusers GFLOP/s (% ceiling) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, mode, to, td, rm, rlo, rhi, rc, go, gd, ceiling in rows:
        lines.append(f"| {name} | {mode} | {to:.1f} | {td:.1f} | **{rm:.2f}×** ({rlo:.2f}-{rhi:.2f}) | {rc:.2f}× | {ceiling:.0f} | "
                     f"{go:.1f} ({100 * go / ceiling:.0f}%) | {gd:.1f} ({100 * gd / ceiling:.0f}%) |")
    lines += [""] + details
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

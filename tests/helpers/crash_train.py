"""Train the tiny LDM for 6 steps with a checkpoint every 2, resumably: tests/test_crash_safety.py SIGKILLs it
(LDM_LITE_CRASH_AT) and resumes it; scripts/crash_soak.py kills it at random moments."""

import sys

import torch
from ddp_train import tiny_ldm

import ldm_lite as ll

STEPS = 6


def train(out: str, steps: int = STEPS, checkpoint_every: int = 2) -> ll.ldm.LatentDiffusion:
    ldm = tiny_ldm()
    ll.train.train_ldm(ldm, ll.datasets.shapes(16, n=32, seed=0), steps=steps, batch_size=8, warmup=2,
                       progress=False, device="cpu", out_dir=out, checkpoint_every=checkpoint_every, resume=True)
    return ldm


if __name__ == "__main__":
    torch.set_num_threads(1)
    train(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else STEPS)

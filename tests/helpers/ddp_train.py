"""Run by tests/test_train_ldm.py under `torchrun --nproc_per_node 2` (gloo on CPU) or as one process."""

import os
import sys

import torch

import ldm_lite as ll
from ldm_lite.autoencoder import IdentityAutoencoder


def tiny_ldm() -> ll.ldm.LatentDiffusion:
    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_dim=32)
    return ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=16)


class DiesOnRank1:
    """A dataset whose reads make process rank 1 exit (as a crash would) once `after` items were read."""

    def __init__(self, ds, after: int):
        self.ds, self.after, self.reads = ds, after, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.reads += 1
        if os.environ.get("RANK") == "1" and self.reads > self.after:
            os._exit(3)
        return self.ds[i]


if __name__ == "__main__":
    out = sys.argv[1]
    torch.set_num_threads(1)
    ldm = tiny_ldm()
    data = ll.datasets.shapes(16, n=32, seed=0)
    die = len(sys.argv) > 2 and sys.argv[2] == "--rank1-dies"
    ll.train.train_ldm(ldm, DiesOnRank1(data, after=8) if die else data, steps=30 if die else 3, batch_size=8,
                       warmup=1, ema=None, progress=False, device="cpu", out_dir=out)

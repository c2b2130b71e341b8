"""Train a conditional LDM (text / frozen-text / layout / class) resumably: run the same command again to continue.

    python scripts/train_conditional.py --condition text --out outputs/t2i --steps 2400 --model-channels 32

The function behind it is `ldm_lite.conditional.train` (the CLI stage `ldm-lite train-ldm --condition ...`).
"""

from __future__ import annotations

import argparse
import logging

import torch

from ldm_lite import conditional


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--condition", required=True, choices=sorted(conditional.RECIPES))
    p.add_argument("--out", required=True, help="output folder (checkpoint/ and model/ inside)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=20_000, help="training images (shapes) encoded once into the cache")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--model-channels", type=int, default=64)
    p.add_argument("--context-dim", type=int, default=128)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (after a checkpoint) after this long")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 for background runs)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    conditional.train(a.condition, a.out, a.steps, batch_size=a.batch_size, lr=a.lr, model_channels=a.model_channels,
                      context_dim=a.context_dim, n_train=a.n_train, max_seconds=a.max_minutes * 60 if a.max_minutes else None,
                      progress=not a.no_progress)


if __name__ == "__main__":
    main()

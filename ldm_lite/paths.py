"""Where ldm_lite keeps its data, wherever it is run from.

`data/` sits at the repository root, next to the `ldm_lite/` package; the environment variable
`LDM_LITE_DATA` moves it (e.g. for a wheel install). Caches and downloads go under `data/cache/`
(git-ignored), shipped checkpoints under `data/pretrained/`, run outputs under `outputs/`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LDM_LITE_DATA", REPO_ROOT / "data"))
PRETRAINED_DIR = DATA_DIR / "pretrained"
CACHE_DIR = DATA_DIR / "cache"
OUTPUTS_DIR = Path(os.environ.get("LDM_LITE_OUTPUTS", REPO_ROOT / "outputs"))


def pretrained(name: str) -> Path:
    """Path of a shipped checkpoint, e.g. `pretrained("ae-kl-f4-shapes32")`; a clear error if missing."""
    path = PRETRAINED_DIR / name
    if not path.is_dir():
        known = sorted(p.name for p in PRETRAINED_DIR.glob("*") if p.is_dir()) if PRETRAINED_DIR.is_dir() else []
        raise FileNotFoundError(
            f"no shipped checkpoint {name!r} under {PRETRAINED_DIR}; known: {known or 'none'}. "
            "Train one with the `ldm-lite` CLI (see README) or pass a path to your own."
        )
    return path

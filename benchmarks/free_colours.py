"""Which colours a model draws when its condition leaves colour free (a layout gives boxes and kinds, a class only the
kind), per guidance scale, against real images: the share of found objects of each colour (the shipped segmenter +
`ldm_lite.grounding.find_objects`, which names each object's colour by the nearest palette entry). Layout models:
the layouts of the first `n` held-out two-shape scenes (real: those scenes). Class models: `n` / 6 samples per kind
(real: the first `n` held-out one-shape images).

    python benchmarks/free_colours.py --model data/pretrained/ldm-kl-f4-shapes32-layout [--n 256]
    python benchmarks/free_colours.py --model data/pretrained/ldm-kl-f4-shapes32-class
    python benchmarks/free_colours.py --smoke    # seconds, for tests
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ldm_lite import conditional, grounding  # noqa: E402
from ldm_lite.datasets import COLOR_NAMES, KINDS, boxes_from_attrs  # noqa: E402
from ldm_lite.evaluation import sample_many  # noqa: E402
from ldm_lite.ldm import LatentDiffusion  # noqa: E402
from ldm_lite.paths import pretrained  # noqa: E402
from ldm_lite.segmenter import load_segmenter  # noqa: E402


def colour_shares(images: torch.Tensor, segmenter: torch.nn.Module) -> dict[str, float]:
    """The share of the objects found in `images` that have each colour."""
    found = grounding.find_objects(images, segmenter.predict(images))
    counts = collections.Counter(o.color for objects in found for o in objects)
    total = max(1, sum(counts.values()))
    return {name: round(counts.get(k, 0) / total, 3) for k, name in enumerate(COLOR_NAMES)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(pretrained("ldm-kl-f4-shapes32-layout")), help="a layout or shapes-class model")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="6 conditions, one scale, 2 steps (seconds; for tests)")
    args = p.parse_args()
    if args.smoke:
        args.n, args.guidance, args.steps = 6, [1.0], 2
    torch.set_num_threads(args.threads)
    ldm, segmenter = LatentDiffusion.from_pretrained(args.model), load_segmenter()
    kind = conditional.condition_kind(ldm)
    if kind == "layout":
        real = conditional.heldout_shapes(args.n, 2)
        batch = dict(zip(("boxes", "box_labels"), boxes_from_attrs(real["attrs"])))
    elif kind == "shapes-class":
        real = conditional.heldout_shapes(args.n, 1)
        batch = {"label": torch.arange(len(KINDS)).repeat_interleave(-(-args.n // len(KINDS)))}
    else:
        p.error(f"--model: a layout or shapes-class model is expected (colour free), got a {kind} model")
    out = {"model": args.model, "condition_kind": kind, "real": colour_shares(real["image"], segmenter)}
    for s in args.guidance:
        x = sample_many(ldm, batch=batch, guidance_scale=s, seed=0, sampler="dpm_solver_pp", steps=args.steps)
        out[f"guidance_{s:g}"] = colour_shares(x, segmenter)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

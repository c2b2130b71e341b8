"""Which colours a layout model draws (the layout gives boxes and kinds, never colours) against the real scenes of
the same 256 held-out layouts, per guidance scale: the share of found objects of each colour (the shipped
segmenter + `ldm_lite.grounding.find_objects`, which names each object's colour by the nearest palette entry).

    python benchmarks/layout_colours.py [--model data/pretrained/ldm-kl-f4-shapes32-layout] [--n 256]
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
from ldm_lite.datasets import COLOR_NAMES, boxes_from_attrs  # noqa: E402
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
    p.add_argument("--model", default=str(pretrained("ldm-kl-f4-shapes32-layout")))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ldm, segmenter = LatentDiffusion.from_pretrained(args.model), load_segmenter()
    scenes = conditional.heldout_shapes(args.n, 2)
    boxes, labels = boxes_from_attrs(scenes["attrs"])
    out = {"real": colour_shares(scenes["image"], segmenter)}
    for s in args.guidance:
        x = sample_many(ldm, batch={"boxes": boxes, "box_labels": labels}, guidance_scale=s, seed=0,
                        sampler="dpm_solver_pp", steps=20)
        out[f"guidance_{s:g}"] = colour_shares(x, segmenter)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

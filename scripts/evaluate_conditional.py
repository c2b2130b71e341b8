"""Judge a conditional LDM (text-to-image on shapes, or class-conditional MNIST) and optionally ship it.

    python scripts/evaluate_conditional.py --condition text --model outputs/t2i-shapes32/model --n 100 \
        --out outputs/t2i-shapes32/metrics.json [--ship ldm-kl-f4-shapes32-text --train-command "..."]

--model takes a model folder (save_pretrained) or a training checkpoint folder (<out_dir>/checkpoint: EMA weights).
Text: single-shape held-out captions judged by the frozen ShapesClassifier (kind and colour), FID on its features;
two-shape captions judged by the shipped ShapesSegmenter + ldm_lite.grounding (every attribute and the relation).
Class: MNIST digits judged by the MNIST classifier (data/pretrained/mnist-classifier-32), FID on its features.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from ldm_lite import conditional, plotting
from ldm_lite.classifier import MNISTClassifier
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.paths import pretrained
from ldm_lite.recipes import get_classifier, ship


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--condition", required=True, choices=["text", "class", "layout"])
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=100, help="samples per guidance scale")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n-real", type=int, default=1000)
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--samples", default=None, help="PNG grid of samples at the largest guidance scale")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ship", default=None, help="name under data/pretrained/ to ship the model as")
    p.add_argument("--train-command", default="", help="the command that trained it (for the README)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.model)
    if (path / "training.safetensors").exists():
        ldm = conditional.from_checkpoint(path, conditional.shipped_autoencoder(a.condition))
    else:
        ldm = LatentDiffusion.from_pretrained(path)
    opts = {"sampler": a.sampler, "steps": a.steps}
    t0 = time.perf_counter()
    if a.condition == "text":
        from ldm_lite.segmenter import load_segmenter

        metrics = conditional.evaluate_text(ldm, get_classifier(), load_segmenter(), n=a.n, n_real=a.n_real,
                                            guidance_scales=tuple(a.guidance), **opts)
        prompts = ["a large red circle", "a small blue square", "a large green triangle", "a small yellow star",
                   "a large white diamond", "a large purple cross", "a small orange circle", "a large cyan square"]
        batch = {"caption": prompts}
    elif a.condition == "layout":
        from ldm_lite.conditioning import boxes_from_attrs
        from ldm_lite.segmenter import load_segmenter

        metrics = conditional.evaluate_layout(ldm, load_segmenter(), n=a.n, guidance_scales=tuple(a.guidance), **opts)
        boxes, labels = boxes_from_attrs(conditional.heldout_shapes(8, 2, seed=conditional.HELDOUT_SEED + 2)["attrs"])
        batch = {"boxes": boxes, "box_labels": labels}
    else:
        clf = MNISTClassifier.from_pretrained(pretrained("mnist-classifier-32"))
        metrics = conditional.evaluate_class(ldm, clf, n_per_class=max(1, a.n // 10),
                                             guidance_scales=tuple(a.guidance), **opts)
        batch = {"label": torch.arange(10)}
    metrics["evaluation_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["command"] = "python scripts/evaluate_conditional.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(a).items() if v not in (None, "") and k not in ("ship", "train_command", "samples"))
    train_json = path.parent / "train.json"
    if train_json.exists():
        metrics["training"] = json.loads(train_json.read_text())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith(("guidance", "scorer"))}, indent=2))
    if a.samples:
        s = max(a.guidance)
        x = ldm.sample(batch=batch, guidance_scale=s, generator=torch.Generator().manual_seed(0), **opts)
        titles = batch.get("caption") or [str(k.tolist()) for k in batch.get("label", batch.get("box_labels"))]
        plotting.image_grid(x.cpu(), titles, ncols=len(x) // 2 if len(x) > 8 else 4,
                            title=f"guidance {s:g}, {a.sampler} {a.steps} steps").savefig(a.samples, dpi=90)
    if a.ship:
        ship(ldm, a.ship, metrics, a.train_command, f"{a.ship}: conditional LDM ({a.condition})",
             "Trained with `ldm_lite.conditional.train` (resumable; latents cached once). Evaluated with:\n\n"
             f"    {metrics['command']}")


if __name__ == "__main__":
    main()

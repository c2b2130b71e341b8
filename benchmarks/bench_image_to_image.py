"""Image-to-image studies on `shapes` (issue 12): the SR degradation table, inpainting, semantic synthesis.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_image_to_image.py                       # shipped models
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_image_to_image.py --models outputs/i2i  # <dir>/<run>/model

Runs `ldm_lite.image_to_image.sr_study / inpainting_study / semantic_study` on held-out seeds and writes
benchmarks/results/image_to_image.json and .md (tables). DDIM with --steps steps for every sample.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldm_lite import image_to_image as i2i  # noqa: E402
from ldm_lite import recipes  # noqa: E402
from ldm_lite.datasets import HELDOUT_SEED  # noqa: E402
from ldm_lite.metrics import format_table  # noqa: E402
from ldm_lite.paths import OUTPUTS_DIR, pretrained  # noqa: E402
from ldm_lite.segmenter import load_segmenter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {"sr-bicubic": ("sr", "bicubic"), "sr-realistic": ("sr", "realistic"), "inpaint": ("inpaint", "bicubic"),
        "semantic": ("semantic", "bicubic")}
SMOKE = {"steps": 2, "n_sr": 2, "n_real": 8, "n_inpaint": 2, "n_semantic": 1, "threads": 1,  # --smoke: for tests
         "out": str(OUTPUTS_DIR / "smoke" / "image_to_image")}  # (not over the committed results)


def load(models: str | None, run: str):
    path = Path(models) / run / "model" if models else pretrained(i2i.SHIPPED[run.removesuffix("-bicubic")])
    return recipes.load(path), str(path)


NOTES = {
    "sr": ("Super-resolution x4 (held-out shapes 32x32, FID on ShapesClassifier features)",
           f"n held-out images (seed {HELDOUT_SEED}, after the FID reference) degraded bicubically and by the realistic "
           "pipeline (one draw per image); FID against the first 1,000 held-out images. PSNR/SSIM reward blur, "
           "LPIPS/FID sharp detail."),
    "inpaint": ("Inpainting (held-out single-shape images)",
                "PSNR outside the mask: decoded output; output of replacement sampling (known latent cells kept at "
                "every step, `known=`); the autoencoder's own reconstruction (the target's reference) and its reconstruction of the "
                "masked image (the ceiling of keeping the masked latent: the grey hole bleeds through encoder and "
                "decoder). rim_share = share of the "
                "known pixels whose latent cell the mask touches (generated in every variant). valid = the pasted "
                "result is a recognisable shape (ShapesClassifier) or clean background (segmenter: at most 2 shape "
                "pixels)."),
    "semantic": ("Semantic synthesis: mask agreement (ShapesSegmenter mIoU)",
                 f"maps of held-out shapes scenes (seed {HELDOUT_SEED}); canvas = a larger scene at the training scale; scaled "
                 "up = shapes twice the training size. judge_ceiling = the segmenter on the real images of the maps."),
}


def markdown(results: dict) -> str:
    md = ["# Image-to-image on shapes (issue 12)", ""]
    for key, (title, note) in NOTES.items():
        if key in results:
            r = results[key]
            md += [f"## {title}", "", f"`OMP_WAIT_POLICY=PASSIVE {r['command']}` ({r['sampler']}, {r['seconds']} s on "
                   "a shared 2-core CPU)", "", note, "", format_table(r["rows"]), ""]
    return "\n".join(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="folder with <run>/model for each run (default: shipped models)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per sample")
    p.add_argument("--n-sr", type=int, default=256)
    p.add_argument("--n-real", type=int, default=1000, help="held-out images the SR FID compares with")
    p.add_argument("--n-inpaint", type=int, default=128)
    p.add_argument("--n-semantic", type=int, default=None, help="maps per size (default: the study's own counts)")
    p.add_argument("--only", nargs="*", default=["sr", "inpaint", "semantic"], choices=["sr", "inpaint", "semantic"])
    p.add_argument("--out", default=str(RESULTS / "image_to_image"), help="writes <out>.json and <out>.md")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    a = p.parse_args()
    if a.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    if a.threads:
        torch.set_num_threads(a.threads)
    classifier = recipes.get_classifier().eval()  # the shapes judge: valid fills are clean single shapes
    segmenter = load_segmenter()
    out_json = Path(a.out + ".json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    command = "python benchmarks/bench_image_to_image.py " + " ".join(sys.argv[1:])
    if "sr" in a.only:
        t = time.perf_counter()
        (bic, pb), (real, pr) = load(a.models, "sr-bicubic"), load(a.models, "sr-realistic")
        rows = i2i.sr_study({"LDM-SR trained on bicubic": bic, "LDM-SR trained on realistic": real}, n=a.n_sr,
                            steps=a.steps, classifier=classifier, n_real=a.n_real)
        results["sr"] = {"rows": rows, "models": [pb, pr], "seconds": round(time.perf_counter() - t, 1),
                         "command": command, "sampler": f"ddim, {a.steps} steps"}
    if "inpaint" in a.only:
        t = time.perf_counter()
        ldm, path = load(a.models, "inpaint")
        rows = i2i.inpainting_study(ldm, classifier, segmenter, n=a.n_inpaint, steps=a.steps)
        results["inpaint"] = {"rows": rows, "model": path, "seconds": round(time.perf_counter() - t, 1),
                         "command": command, "sampler": f"ddim, {a.steps} steps"}
    if "semantic" in a.only:
        t = time.perf_counter()
        ldm, path = load(a.models, "semantic")
        study_sizes = inspect.signature(i2i.semantic_study).parameters["sizes"].default  # (side, canvas, n) each
        sizes = {} if a.n_semantic is None else {"sizes": tuple((side, canvas, a.n_semantic)
                                                                 for side, canvas, _ in study_sizes)}
        rows = i2i.semantic_study(ldm, segmenter, steps=a.steps, **sizes)
        results["semantic"] = {"rows": rows, "model": path, "seconds": round(time.perf_counter() - t, 1),
                         "command": command, "sampler": f"ddim, {a.steps} steps"}
    md = markdown(results)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1))
    Path(a.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

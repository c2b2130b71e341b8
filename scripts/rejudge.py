"""Re-measure committed "recognisable" figures with the shapes judge (`shapes-judge-32`) beside the old judge
(`shapes-classifier-32` alone, which pure noise fools), on the same images:

- the judges themselves: `classifier.evaluate_judge` on held-out probes at 32x32 and 64x64;
- the shipped unconditional `ldm-kl-f4-shapes32`: `--n` DDIM-50 samples from seed 0 (its README's 98.4% was 64
  DDIM-50 samples of the main job that made it), FID on the (unchanged) classifier features against 1,000 held-out
  images;
- the shipped text-to-image `ldm-kl-f4-shapes32-text`: `conditional.evaluate_text` on its README's 100 held-out
  single-shape captions at guidance 1, 3, 5 (DPM-Solver++ 20 steps, seed 0), judged by each judge;
- the shipped inpainting `ldm-inpaint-shapes32`: `image_to_image.inpainting_study` (128 held-out images per mask
  kind, DDIM-25, as `benchmarks/bench_image_to_image.py`): valid fills by each judge;
- the trade-off sweeps whose samples are committed (`benchmarks/results/tradeoff*/f<f>/samples_step*.safetensors`:
  the 16 kept samples of each model's last evaluation; the 256 judged then are not stored).

    python scripts/rejudge.py --n 256 --out benchmarks/results/rejudge

Writes `<out>/results.json` and `<out>/results.md` with the judge's file hash and the commit it was run at.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

import torch

from ldm_lite import conditional, image_to_image
from ldm_lite.classifier import ShapesClassifier, evaluate_judge, shapes_score
from ldm_lite.datasets import HELDOUT_SEED, shapes
from ldm_lite.evaluation import evaluate_samples, sample_many
from ldm_lite.paths import PRETRAINED_DIR, REPO_ROOT
from ldm_lite.recipes import load, stack_images
from ldm_lite.segmenter import load_segmenter
from ldm_lite.tradeoff import load_samples


def judge_id() -> dict:
    weights = PRETRAINED_DIR / "shapes-judge-32" / "model.safetensors"
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h", "--", str(weights)],
                            capture_output=True, text=True).stdout.strip()
    return {"judge": "shapes-judge-32", "judge_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()[:16],
            "judge_commit": commit or "uncommitted"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="samples of the shipped LDM (DDIM-50, seed 0)")
    ap.add_argument("--n-probe", type=int, default=300, help="held-out images per probe of the judges")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "rejudge")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds; for tests, not numbers)")
    args = ap.parse_args()
    steps = 50
    if args.smoke:
        args.n, args.n_probe, steps = 8, 8, 2
    torch.set_num_threads(1)
    old = ShapesClassifier.from_pretrained(PRETRAINED_DIR / "shapes-classifier-32")
    new = ShapesClassifier.from_pretrained(PRETRAINED_DIR / "shapes-judge-32")
    res: dict = {**judge_id(), "date": time.strftime("%Y-%m-%d"), "command": f"python scripts/rejudge.py --n {args.n}"}

    res["probes"] = {"old": evaluate_judge(old, n=args.n_probe), "new": evaluate_judge(new, n=args.n_probe)}

    ldm = load("ldm-kl-f4-shapes32")
    samples = sample_many(ldm, args.n, batch_size=64, seed=0, sampler="ddim", steps=steps)
    real = stack_images(shapes(32, n=1_000, seed=HELDOUT_SEED, max_shapes=1))
    res["ldm-kl-f4-shapes32"] = {"n": args.n, "sampler": f"ddim:{steps}", "seed": 0,
                                 "old": evaluate_samples(samples, real, old), "new": evaluate_samples(samples, real, new)}

    text = load("ldm-kl-f4-shapes32-text")
    opts = {"n": 4 if args.smoke else 100, "guidance_scales": (1.0,) if args.smoke else (1.0, 3.0, 5.0),
            "n_real": 8 if args.smoke else 1_000, "sampler": "dpm_solver_pp", "steps": 2 if args.smoke else 20}
    res["ldm-kl-f4-shapes32-text"] = {"old": conditional.evaluate_text(text, old, None, **opts),
                                      "new": conditional.evaluate_text(text, new, None, **opts)}

    inpaint, segmenter = load("ldm-inpaint-shapes32"), load_segmenter()
    kw = {"n": 2 if args.smoke else 128, "steps": 2 if args.smoke else 25}
    res["ldm-inpaint-shapes32"] = {j: image_to_image.inpainting_study(inpaint, clf, segmenter, **kw)
                                   for j, clf in (("old", old), ("new", new))}

    res["tradeoff"] = {}
    for path in sorted((REPO_ROOT / "benchmarks" / "results").glob("tradeoff*/f*/samples_step*.safetensors")):
        images = load_samples(path)
        key = str(path.relative_to(REPO_ROOT))
        res["tradeoff"][key] = {"n": len(images), "old": shapes_score(images, old)["recognisable"],
                                "new": shapes_score(images, new)["recognisable"]}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "results.md").write_text(report(res))
    print(report(res))


def report(res: dict) -> str:
    pct = "{:.1%}".format
    lines = [f"Judge `{res['judge']}` (model.safetensors sha256 {res['judge_sha256']}…, commit {res['judge_commit']}), "
             f"{res['date']}: `{res['command']}`", "",
             "| probe (held-out, share recognisable) | old judge 32 | new judge 32 | old judge 64 | new judge 64 |",
             "|---|---|---|---|---|"]
    names = sorted({k.rsplit("_", 1)[0] for k in res["probes"]["new"]}, key=list(
        k.rsplit("_", 1)[0] for k in res["probes"]["new"]).index)
    for name in names:
        cells = [pct(res["probes"][j][f"{name}_{side}"]) for side in (32, 64) for j in ("old", "new")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    m = res["ldm-kl-f4-shapes32"]
    lines += ["", f"Shipped `ldm-kl-f4-shapes32`, {m['n']} DDIM-{m['sampler'].split(':')[1]} samples (seed 0): recognisable {pct(m['old']['recognisable'])} "
              f"(old judge) → {pct(m['new']['recognisable'])} (new judge); FID on classifier features "
              f"{m['new']['fid']:.1f} (the same features: {m['old']['fid']:.1f} with the old judge).", "",
              "| `ldm-kl-f4-shapes32-text`, 100 single-shape captions, DPM-Solver++ 20 | kind+colour | recognisable, "
              "old judge | recognisable, new judge | FID |", "|---|---|---|---|---|"]
    t = res["ldm-kl-f4-shapes32-text"]
    for key in (k for k in t["new"] if k.startswith("guidance_")):
        o, n = t["old"][key], t["new"][key]
        lines.append(f"| {key.replace('_', ' ')} | {pct(n['single_kind_and_color'])} | {pct(o['recognisable'])} | "
                     f"{pct(n['recognisable'])} | {n['fid']:.1f} |")
    lines += ["", "| `ldm-inpaint-shapes32`, DDIM-25 | n | valid fills, old judge | valid fills, new judge | of which a "
              "clean shape (new) | empty (segmenter) |", "|---|---|---|---|---|---|"]
    for o, n in zip(res["ldm-inpaint-shapes32"]["old"], res["ldm-inpaint-shapes32"]["new"]):
        lines.append(f"| {n['mask']} | {n['n']} | {pct(o['valid'])} | {pct(n['valid'])} | {pct(n['valid_shape'])} | "
                     f"{pct(n['valid_empty'])} |")
    lines += ["", "| trade-off kept samples | n | old judge | new judge |", "|---|---|---|---|"]
    for key, r in res["tradeoff"].items():
        lines.append(f"| `{key}` | {r['n']} | {pct(r['old'])} | {pct(r['new'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

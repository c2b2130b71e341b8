"""Judge a conditional LDM (text, layout or class-conditional) and optionally ship it: a thin caller of
`ldm_lite.judge.evaluate` (the same judging as `ldm-lite evaluate --model <folder>`), plus a sample grid
(`evaluation.sample_many`) and `--ship` (`recipes.ship`).

    python scripts/evaluate_conditional.py --model outputs/t2i-shapes32/model --n 100 \
        --out outputs/t2i-shapes32/metrics.json [--ship ldm-kl-f4-shapes32-text --train-command "..."]

--model takes a model folder (save_pretrained) or a training checkpoint folder (<out_dir>/checkpoint: EMA weights
on the shipped autoencoder, `recipes.load`). The judge follows the model's conditioner
(`conditional.condition_kind`): text on shapes: single-shape held-out captions by the frozen ShapesClassifier (kind
and colour), FID on its features; two-shape captions by the shipped ShapesSegmenter + ldm_lite.grounding (every
attribute and the relation). Layout: the segmenter finds each requested object in its box. Class / MNIST captions:
the MNIST classifier (data/pretrained/mnist-classifier-32), FID on its features.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from ldm_lite import conditional, plotting, recipes
from ldm_lite.checkpoint import round_to_half
from ldm_lite.evaluation import sample_many
from ldm_lite.judge import evaluate
from ldm_lite.recipes import ship

SMOKE = {"n": 2, "guidance": [1.0], "steps": 2, "n_real": 8}  # --smoke: seconds, for tests


def flags(args: argparse.Namespace, leave_out: tuple[str, ...]) -> str:
    """The command-line flags that give `args` (those set, less `leave_out`), for the metrics' "command"."""
    out = []
    for k, v in vars(args).items():
        if v is None or v is False or v == "" or k in leave_out:
            continue
        flag = "--" + k.replace("_", "-")
        out.append(flag if v is True else f"{flag} {' '.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--condition", default=None, choices=["text", "frozen-text", "layout", "class", "mnist-text"],
                   help="ignored (older commands pass it): the model's conditioner says what it is")
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
    p.add_argument("--half", action="store_true", help="judge and ship the model with its parameters rounded to "
                   "float16 (stored so: half the folder); the metrics are those of the weights that ship")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes (seconds; for tests, not numbers): {SMOKE}")
    a = p.parse_args()
    if a.smoke:  # the tiny sizes, unless a flag sets its own
        p.set_defaults(**SMOKE)
        a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.model)
    ldm = recipes.load(path)
    if a.half:
        round_to_half(ldm)
    opts = {"sampler": a.sampler, "steps": a.steps}
    t0 = time.perf_counter()
    metrics = evaluate(ldm, n=a.n, guidance_scales=tuple(a.guidance), n_real=a.n_real, **opts)
    batch = conditional.example_conditions(ldm)
    metrics["evaluation_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["command"] = "python scripts/evaluate_conditional.py " + flags(a, ("ship", "train_command", "samples"))
    train_json = path.parent / "train.json"
    if train_json.exists():
        metrics["training"] = json.loads(train_json.read_text())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith(("guidance", "scorer"))}, indent=2))
    if a.samples:
        s = max(a.guidance)
        x = sample_many(ldm, batch=batch, guidance_scale=s, seed=0, **opts)
        titles = batch.get("caption") or [str(k.tolist()) for k in batch.get("label", batch.get("box_labels"))]
        plotting.image_grid(x.cpu(), titles, ncols=len(x) // 2 if len(x) > 8 else 4,
                            title=f"guidance {s:g}, {a.sampler} {a.steps} steps").savefig(a.samples, dpi=90)
    if a.ship:
        ship(ldm, a.ship, metrics, a.train_command, f"{a.ship}: conditional LDM ({metrics['condition_kind']})",
             "Trained with its recipe (`ldm-lite train <recipe>`; resumable, from the latent cache). Evaluated with:\n\n"
             f"    {metrics['command']}" + ("\n\nParameters stored in float16 (`--half`); loading casts them to "
                                          "float32, and the metrics above were measured on these weights." if a.half
                                          else ""), half=a.half)


if __name__ == "__main__":
    main()

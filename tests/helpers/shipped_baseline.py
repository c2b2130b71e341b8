"""Fixed-seed outputs of every shipped model, written once before the one-path refactor (issue 20) and compared
after it: each LDM's 8 DDIM-10 samples, each autoencoder's reconstructions, each judge's outputs.

    python tests/helpers/shipped_baseline.py --write    # rewrite tests/data/shipped_baseline.safetensors
    python tests/helpers/shipped_baseline.py --add      # add newly shipped models, keep the committed entries
    python tests/helpers/shipped_baseline.py --replace ldm-kl-f4-shapes32-layout   # a re-shipped model's entry
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "tests" / "data" / "shipped_baseline.safetensors"
N = 8


def _batch(side: int = 32) -> dict:
    from ldm_lite import datasets

    ds = datasets.shapes(side, n=N, seed=4242, max_shapes=2)
    return default_collate([ds[i] for i in range(N)])


def _ldm_condition(name: str, ldm, batch: dict) -> dict:
    """The sampling inputs for one shipped LDM (by conditioner kind), all from the fixed batch."""
    kind = type(ldm.conditioner).__name__ if ldm.conditioner is not None else None
    x = batch["image"]
    if kind is None:
        return {"n": N}
    if kind in ("TextConditioner", "FrozenTextConditioner"):
        return {"prompts": batch["caption"], "guidance_scale": 3.0}
    if kind == "ClassConditioner":
        return {"labels": torch.arange(N) % ldm.conditioner.config.num_classes, "guidance_scale": 3.0}
    if kind == "LayoutConditioner":
        return {"batch": {"boxes": batch["boxes"], "box_labels": batch["box_labels"]}, "guidance_scale": 3.0}
    if kind == "SuperResolutionConditioner":
        from ldm_lite.datasets import bicubic_degradation
        return {"batch": {ldm.conditioner.config.lowres_key: bicubic_degradation(x, 4)}}
    if kind == "InpaintingConditioner":
        m = torch.zeros(N, 32, 32)
        m[:, 8:24, 8:24] = 1
        c = ldm.conditioner.config
        return {"batch": {c.image_key: x, c.mask_key: m}}
    if kind == "SemanticConditioner":
        return {"batch": {ldm.conditioner.config.map_key: batch["mask"]}}
    raise ValueError(f"{name}: no baseline inputs for {kind}")


def outputs() -> dict[str, torch.Tensor]:
    from ldm_lite.autoencoder import Autoencoder
    from ldm_lite.ldm import LatentDiffusion

    torch.set_num_threads(1)
    batch = _batch()
    out: dict[str, torch.Tensor] = {}
    for d in sorted((ROOT / "data" / "pretrained").iterdir()):
        name = d.name
        if name.startswith("ldm-"):
            ldm = LatentDiffusion.from_pretrained(d).eval()
            kw = _ldm_condition(name, ldm, batch)
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                out[name] = ldm.sample(sampler="ddim", steps=10, generator=g, **kw)
        elif name.startswith("ae-"):
            ae = Autoencoder.from_pretrained(d).eval()
            x = batch["image"] if name.endswith("32") else _batch(64)["image"]
            with torch.no_grad():
                out[name] = ae.decode(ae.encode(x).mode())
        elif name.endswith("classifier-32") or name.startswith("shapes-judge"):
            from ldm_lite.classifier import MNISTClassifier, ShapesClassifier
            cls = ShapesClassifier if name.startswith("shapes") else MNISTClassifier
            m = cls.from_pretrained(d).eval()
            with torch.no_grad():
                y = m(batch["image"])
            out[name] = torch.cat([v.flatten(1) for v in (y.values() if isinstance(y, dict) else [y])], 1)
        elif name.startswith("shapes-segmenter"):
            from ldm_lite.segmenter import ShapesSegmenter
            m = ShapesSegmenter.from_pretrained(d).eval()
            with torch.no_grad():
                out[name] = m(batch["image"])
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if args not in (["--write"], ["--add"]) and not (args[:1] == ["--replace"] and len(args) > 1):
        sys.exit("usage: python tests/helpers/shipped_baseline.py --write | --add | --replace NAME [NAME ...]\n"
                 "  --write overwrites the committed baseline; --add only adds the shipped models it does not hold yet "
                 "(newly shipped ones); --replace rewrites the entries of re-shipped models NAME, keeps the others")
    o = outputs()
    if args[0] in ("--add", "--replace"):
        from safetensors.torch import load_file

        committed = load_file(str(BASELINE))
        unknown = sorted(set(args[1:]) - set(o))
        if unknown:
            sys.exit(f"--replace: {unknown} are not shipped models; shipped: {sorted(o)}")
        o = {**o, **committed} if args[0] == "--add" else {**committed, **{k: o[k] for k in args[1:]}}
    save_file({k: v.contiguous() for k, v in o.items()}, str(BASELINE))
    print(f"wrote {BASELINE}: {sorted(o)}", file=sys.stderr)

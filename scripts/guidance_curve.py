"""Plot the classifier-free guidance curves (condition accuracy and FID against the guidance scale) from the JSON
that `ldm-lite evaluate --guidance ...` wrote for the shipped text-to-image and layout models.

    ldm-lite evaluate --model data/pretrained/ldm-kl-f4-shapes32-text --n 100 --guidance 1 2 3 5 7 \
        --out benchmarks/results/guidance/text.json
    ldm-lite evaluate --model data/pretrained/ldm-kl-f4-shapes32-layout --n 100 --guidance 1 2 3 5 7 \
        --out benchmarks/results/guidance/layout.json
    python scripts/guidance_curve.py benchmarks/results/guidance      # -> curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = {  # file -> (metric, label) drawn on the accuracy axis
    "text.json": [("single_kind_and_color", "text: one shape, kind + colour"),
                  ("two_all_and_relation", "text: two shapes, every attribute + relation")],
    "layout.json": [("objects_found", "layout: objects in their box with their class")],
}


def plot(folder: Path) -> plt.Figure:
    """The two panels from `folder`/text.json and layout.json."""
    fig, (acc, fid) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, metrics in CURVES.items():
        runs = json.loads((folder / name).read_text())
        (res,) = [v for k, v in runs.items() if k != "command"]
        scales = sorted(float(k.split("_")[1]) for k in res if k.startswith("guidance_"))
        rows = [res[f"guidance_{s:g}"] for s in scales]
        for key, label in metrics:
            acc.plot(scales, [100 * r[key] for r in rows], "o-", label=label)
        if "fid" in rows[0]:
            fid.plot(scales, [r["fid"] for r in rows], "o-", label=name.split(".")[0])
    acc.set(xlabel="guidance scale w", ylabel="% of samples / objects", title="condition accuracy")
    fid.set(xlabel="guidance scale w", ylabel="FID (ShapesClassifier features)", title="sample quality")
    acc.legend(fontsize=8)
    fid.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=Path("benchmarks/results/guidance"),
                   help="folder with text.json and layout.json (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="the figure to write (default: <folder>/curve.png)")
    args = p.parse_args()
    missing = [name for name in CURVES if not (args.folder / name).is_file()]
    if missing:
        p.error(f"{args.folder} has no {' or '.join(missing)}; write them with `ldm-lite evaluate` as above")
    plot(args.folder).savefig(args.out or args.folder / "curve.png", dpi=110)


if __name__ == "__main__":
    main()

"""Rewrite committed metrics JSON files to the kit's one set of metric names (issue 20):

    fid_classifier_features -> fid (+ fid_features: the ShapesClassifier)     fid_lo_/fid_hi_/fid_boot_bias_... -> fid_lo/...
    fid_mnist_classifier_features -> fid (+ fid_features: the MNISTClassifier)

    python scripts/rename_metrics.py                 # every data/pretrained/*/metrics.json and benchmarks/results/**/*.json
    python scripts/rename_metrics.py a.json --check  # exit 1 if a file still holds an old name (writes nothing)

Files are rewritten atomically (a temporary file, then os.replace) and only when something changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ldm_lite.evaluation import FID_FEATURES  # noqa: E402

RENAMES = {"fid_classifier_features": ("fid", "shapes"), "fid_lo_classifier_features": ("fid_lo", "shapes"),
           "fid_hi_classifier_features": ("fid_hi", "shapes"), "fid_boot_bias_classifier_features": ("fid_boot_bias", "shapes"),
           "fid_mnist_classifier_features": ("fid", "mnist")}


def rename(value):
    """A JSON value with every old metric key renamed (recursively); `fid_features` added beside a renamed `fid`."""
    if isinstance(value, list):
        return [rename(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k in RENAMES:
            new, features = RENAMES[k]
            out[new] = rename(v)
            out.setdefault("fid_features", FID_FEATURES[features])
        else:
            out[k] = rename(v)
    return out


def default_files() -> list[Path]:
    return sorted([*ROOT.glob("data/pretrained/*/metrics.json"), *ROOT.glob("benchmarks/results/**/*.json")])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path, help="JSON files (default: the committed metrics and results)")
    p.add_argument("--check", action="store_true", help="only report files that still hold old names; exit 1 if any")
    p.add_argument("--smoke", action="store_true", help="rewrite a tiny example under outputs/ (for tests)")
    a = p.parse_args()
    files = a.files or default_files()
    if a.smoke:
        example = ROOT / "outputs" / "smoke" / "rename_metrics.json"
        example.parent.mkdir(parents=True, exist_ok=True)
        example.write_text(json.dumps({"guidance_1": {"fid_classifier_features": 40.0}, "recognisable": 0.9}))
        files = [example]
    stale = []
    for path in files:
        before = json.loads(path.read_text())
        after = rename(before)
        if after == before:
            continue
        stale.append(path)
        if not a.check:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(after, indent=2) + "\n")
            os.replace(tmp, path)
        print(f"{'stale' if a.check else 'renamed'}: {path}")
    print(f"{len(stale)} of {len(files)} file(s) {'hold old names' if a.check else 'rewritten'}")
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

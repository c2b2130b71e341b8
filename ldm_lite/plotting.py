"""Matplotlib figures shared by the notebooks, the CLI and the tests. Every function returns its figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def to_display(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) in [-1,1] -> (H,W,C) or (H,W) in [0,1] for imshow."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def image_grid(images: torch.Tensor | Sequence[torch.Tensor], titles: Sequence[str] | None = None, ncols: int = 8,
               title: str | None = None, size: float = 1.6, fontsize: int = 6) -> Figure:
    """A grid of (C,H,W) images in [-1,1] with optional per-image titles (e.g. captions)."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    lines = max((_wrap(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    row = size + lines * fontsize / 72 * 1.6 + 0.1  # each row also holds its captions, so none hides behind the row above
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row * nrows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = to_display(images[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(_wrap(titles[i]), fontsize=fontsize)
    if title:
        _suptitle(fig, title)
    fig.tight_layout()
    return fig


def dataset_grid(dataset, n: int = 16, ncols: int = 8, title: str | None = None, show_masks: bool = False) -> Figure:
    """Items of a dataset with their captions; with `show_masks` a second row of semantic masks per image row."""
    items = [dataset[i] for i in range(n)]
    if not show_masks:
        return image_grid([it["image"] for it in items], [it["caption"] for it in items], ncols, title)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(1.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    n_classes = int(max(int(it["mask"].max()) for it in items)) + 1
    for i, it in enumerate(items):
        r, c = 2 * (i // ncols), i % ncols
        axes[r, c].imshow(to_display(it["image"]), interpolation="nearest")
        axes[r, c].set_title(_wrap(it["caption"]), fontsize=6)
        axes[r + 1, c].imshow(it["mask"].numpy(), cmap="tab10", vmin=0, vmax=max(9, n_classes), interpolation="nearest")
        axes[r + 1, c].set_title("mask (class per pixel)", fontsize=6)
    if title:
        _suptitle(fig, title)
    fig.tight_layout()
    return fig


def curves(history: dict[str, Sequence[float]], keys: Sequence[str] | None = None, title: str = "training curves",
           xlabel: str = "step", logy: bool = True) -> Figure:
    """Loss curves from a training history (dict of lists); one panel per key."""
    keys = [k for k in (keys or history) if k != "step" and len(history.get(k, [])) > 0]
    width = max(6.0, 3.2 * max(1, len(keys)))  # one panel alone is still wide enough for its title
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(width, 3.0), squeeze=False)
    steps = history.get("step")
    for ax, k in zip(axes[0], keys):
        y = np.asarray(history[k], dtype=float)
        x = np.asarray(steps[: len(y)]) if steps is not None and len(steps) >= len(y) else np.arange(len(y))
        ax.plot(x, y)
        if logy and np.all(y > 0):
            ax.set_yscale("log")
        ax.set_title(k)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(k)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are counted: no "2.5" on a short run
    _suptitle(fig, title)
    fig.tight_layout()
    return fig


def layout_problems(fig: Figure, tol: float = 1.0) -> list[str]:
    """What a reader of `fig` would trip over, as sentences (empty: it reads): a title, caption or axis (its label and
    drawn tick labels) that reaches outside the figure (clipped when saved), and a title or caption that overlaps another one or
    an image other than its own. Draws the figure once; `tol` is in pixels."""
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure (e.g. a widget's): draw it with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    captions = []  # (name, box, own axes) of every title / caption
    problems = []

    def visible(t) -> bool:
        return t.get_visible() and t.get_text().strip() != ""

    texts = [("figure title" if t is fig._suptitle else "figure text", t, None) for t in fig.texts]  # noqa: SLF001
    for ax in fig.axes:
        texts += [(f"title {t.get_text()!r}", t, ax) for t in (ax.title, ax._left_title, ax._right_title)]  # noqa: SLF001
        texts += [(f"text {t.get_text()!r}", t, ax) for t in ax.texts]
        if ax.axison:  # the x / y axis with its drawn tick labels and its label
            texts += [(f"{a} axis of the axes titled {ax.get_title()!r}", axis, ax)
                      for a, axis in (("x", ax.xaxis), ("y", ax.yaxis))]
    for name, t, ax in texts:
        if hasattr(t, "get_text") and not visible(t):
            continue
        box = t.get_window_extent(renderer) if hasattr(t, "get_text") else t.get_tightbbox(renderer)
        if box is None or box.width == 0:
            continue
        if box.x0 < page.x0 - tol or box.x1 > page.x1 + tol or box.y0 < page.y0 - tol or box.y1 > page.y1 + tol:
            problems.append(f"{name} reaches outside the figure ({box.x0:.0f}..{box.x1:.0f} x {box.y0:.0f}..{box.y1:.0f}"
                            f" in a {page.width:.0f} x {page.height:.0f} px figure): it is clipped when saved")
        if name.startswith(("figure title", "title")):
            captions.append((name, box.shrunk(0.999, 0.999), ax))
    images = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes if ax.images]
    for i, (name, box, own) in enumerate(captions):
        for other, obox, _ in captions[i + 1:]:
            if box.overlaps(obox):
                problems.append(f"{name} overlaps {other}")
        for ax, abox in images:
            if ax is not own and box.overlaps(abox.shrunk(0.999, 0.999)):
                problems.append(f"{name} overlaps the image of the axes titled {ax.get_title()!r}")
    return problems


def _suptitle(fig: Figure, title: str) -> None:
    """The figure's title, wrapped to its width (~9 characters per inch at the default font size), so a narrow
    figure never clips it."""
    fig.suptitle(_wrap(title, int(fig.get_size_inches()[0] * 9)))


def _wrap(text: str, width: int = 28) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return "\n".join(lines)


class LiveCurve:
    """A loss curve that redraws in a notebook every `every` steps: pass it as `train_ldm(step_callback=...)`."""

    def __init__(self, title: str = "training loss", every: int = 20, ylabel: str = "loss"):
        from IPython.display import display  # local: IPython (~2 s) only for a live plot in a notebook

        self.steps: list[int] = []
        self.values: list[float] = []
        self.every, self.title, self.ylabel = every, title, ylabel
        self.fig, self.ax = plt.subplots(figsize=(5, 3))
        plt.close(self.fig)  # shown through the display handle only
        self.handle = display(self.fig, display_id=True)

    def __call__(self, step: int, value: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if step % self.every == 0:
            self.redraw()

    def redraw(self) -> None:
        self.ax.clear()
        self.ax.plot(self.steps, self.values, lw=0.8)
        if len(self.values) > 20:  # a running mean makes the trend readable
            k = 20
            smooth = np.convolve(self.values, np.ones(k) / k, mode="valid")
            self.ax.plot(self.steps[k - 1:], smooth, lw=2, label=f"mean of {k}")
            self.ax.legend()
        self.ax.set_yscale("log")
        self.ax.set_title(self.title)
        self.ax.set_xlabel("step")
        self.ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax.set_ylabel(self.ylabel)
        if self.handle is not None:
            self.handle.update(self.fig)


# ----------------------------------------------------------------------------------------------- trade-off (§4.1)
def _by_f(rows: Sequence[dict], kind: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        if r["kind"] == kind:
            out.setdefault(int(r["f"]), []).append(r)
    return out


def tradeoff_training(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Paper Fig. 6: quality of LDM-f during training against steps and against training time (one line per f);
    FID on classifier features with its bootstrap interval (top), share of recognisable shapes (bottom)."""
    runs = _by_f(rows, "training")
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.2), squeeze=False)
    clock = next((r.get("clock", "") for r in rows), "")
    for f, rs in sorted(runs.items()):
        rs = sorted(rs, key=lambda r: r["step"])
        for col, key in enumerate(("step", "train_seconds")):
            x = [r[key] for r in rs]
            fid = np.array([r["fid"] for r in rs])
            err = np.array([[r["fid"] - r["fid_lo"] for r in rs], [r["fid_hi"] - r["fid"] for r in rs]]).clip(0)
            axes[0, col].errorbar(x, fid, yerr=err, marker="o", capsize=2, label=f"LDM-{f}")
            axes[1, col].plot(x, [100 * r["recognisable"] for r in rs], marker="o", label=f"LDM-{f}")
    for col, xlabel in enumerate(("training steps", f"training time [s, {clock}]" if clock else "training time [s]")):
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel("FID (classifier features)")
        axes[1, col].set_ylabel("recognisable shapes [%]")
        axes[1, col].set_ylim(0, 100)
        for row in range(2):
            axes[row, col].set_xlabel(xlabel)
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or "Quality during training at equal budget (LDM paper Fig. 6)")
    fig.tight_layout()
    return fig


def tradeoff_sampling(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Paper Fig. 7: quality against sampling throughput; one line per f, one marker per number of DDIM steps.
    Panels: FID and KID on classifier features (KID is unbiased, so it stays meaningful with fewer samples than
    feature dimensions, where FID is not) and the share of recognisable shapes."""
    runs = _by_f(rows, "sampling")
    has_kid = any("kid" in r for rs in runs.values() for r in rs)
    panels = [("fid", "FID (classifier features)")] + ([("kid", "KID (classifier features)")] if has_kid else [])
    panels.append(("recognisable", "recognisable shapes [%]"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.6), squeeze=False)
    for f, rs in sorted(runs.items()):
        rs = sorted(rs, key=lambda r: r["sampler_steps"])
        x = [r["samples_per_second"] for r in rs]
        for ax, (key, _) in zip(axes[0], panels):
            y = [r.get(key, np.nan) * (100 if key == "recognisable" else 1) for r in rs]
            ax.plot(x, y, marker="o", label=f"LDM-{f}")
            for xi, yi, r in zip(x, y, rs):
                ax.annotate(str(r["sampler_steps"]), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    clock = next((r.get("clock", "") for r in rows), "")
    n = sorted({r["n"] for rs in runs.values() for r in rs})
    for ax, (key, ylabel) in zip(axes[0], panels):
        ax.set_xscale("log")
        ax.set_xlabel(f"samples / s ({clock})" if clock else "samples / s")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        values = [r.get(key, np.nan) for rs in runs.values() for r in rs]
        if key in ("fid", "kid") and np.nanmin(values) > 0:  # KID is unbiased, so it can dip below 0
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or f"Quality vs sampling throughput, DDIM steps at the markers, n = {n} samples per point "
                          "(LDM paper Fig. 7)", fontsize=10)
    fig.tight_layout()
    return fig


def samples_by_f(samples: dict[int, torch.Tensor], ncols: int = 8, title: str | None = None) -> Figure:
    """One row of samples (N, 3, H, W) per f."""
    fs = sorted(samples)
    fig, axes = plt.subplots(len(fs), ncols, figsize=(1.1 * ncols, 1.2 * len(fs) + 0.4), squeeze=False)
    for row, f in enumerate(fs):
        for col in range(ncols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(samples[f]):
                ax.imshow(to_display(samples[f][col]), interpolation="nearest")
        axes[row, 0].set_ylabel(f"LDM-{f}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

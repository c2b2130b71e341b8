"""Interactive panels (ipywidgets) for the notebooks: forward noising, the f control, the reverse-step scrubber,
cross-attention maps. Each panel takes plain tensors and callables, so it works with a trained model, an
untrained one or identity functions.

Panels (each returns a `Panel`, a `widgets.VBox`):

    forward_noise_panel(image, encode, decode, schedule)   t control: x_t and z_t = q_sample(z_0, t, ε) side by side
    f_panel(recon_fn, images, fs, kinds)                   f control + KL/VQ toggle: reconstruction, latent, metrics
    reverse_scrubber(trajectory, decode)                   step control: z_t, ε̂ and D(ẑ_0) at every reverse step
    attention_panel(image, attn_maps, tokens)              token control: cross-attention map over the image
    images_panel(title, main, others, render)              any controls -> a row of images / class maps (notebook 06)
    tradeoff_panel(rows, samples)                          f control over trained LDM-f: samples, cost, curves
    cross_attention_panel(image, maps, tokens, timesteps)  token + step controls: attention per word and per step
    prompt_panel(generate, prompt, guidance)               prompt box + guidance control: text-to-image on the fly

    callback, trajectory = record_trajectory(schedule)     collect a sampler's steps for `reverse_scrubber`
    noise_stats(schedule, t)                               ᾱ_t, √ᾱ_t, σ_t, SNR, log SNR as printed by the t panel

Conventions (tests/test_browser.py relies on them; keep them when adding a panel):

- the panel is a `Panel` (a `widgets.VBox`) with CSS class `ldm-panel`;
- its main control (the one a learner moves: a slider, a selection slider or a dropdown) has class
  `ldm-main-control`; moving it must change the picture;
- the picture is one `widgets.Image` (PNG bytes rendered from a matplotlib `Figure`) with class `ldm-panel-image`;
  every figure has a title and labelled axes;
- the numbers shown beside it are a `widgets.HTML` with class `ldm-panel-readout`;
- errors are never swallowed: when drawing fails, the traceback is written into a `widgets.HTML` with class
  `ldm-panel-error` and the exception is raised again (at construction it reaches the notebook cell; after a
  control moved it reaches the kernel log). The picture then keeps its old bytes, so the browser test reports
  "image did not change" for a broken callback;
- warnings raised while drawing (e.g. "a word the model never saw") are shown in the panel, in a `widgets.HTML`
  with class `ldm-panel-warning`, cleared by the next draw that raises none (after a control moved, a warning
  would otherwise reach only the kernel log);
- while drawing, a `widgets.HTML` with class `ldm-panel-busy` says so (sampling panels take seconds);
- a control that does nothing in the current setting of the others is disabled (`images_panel(disabled=...)`);
- its display also carries its first picture as a static PNG (`image/png` beside the widget view): JupyterLab
  shows the live widget, while a notebook run headless (nbclient) and rendered without widget state, or a text
  front end, shows the panel's first state instead of nothing.

`find(panel, css_class)` returns the widget of a panel carrying a class (used by the tests).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from ldm_lite.metrics import psnr
from ldm_lite.schedule import Schedule

PANEL_CLASS = "ldm-panel"
MAIN_CONTROL_CLASS = "ldm-main-control"
IMAGE_CLASS = "ldm-panel-image"
READOUT_CLASS = "ldm-panel-readout"
ERROR_CLASS = "ldm-panel-error"
WARNING_CLASS = "ldm-panel-warning"
BUSY_CLASS = "ldm-panel-busy"

LATENT_RANGE = 3.0  # latent channels are drawn with a fixed colour range [-3, 3] (unit-variance latents)

__all__ = ["Panel", "forward_noise_panel", "f_panel", "reverse_scrubber", "attention_panel", "images_panel",
           "cross_attention_panel", "prompt_panel", "record_trajectory", "TrajectoryStep", "find", "figure_png",
           "noise_stats", "tradeoff_panel"]


# ---------------------------------------------------------------------------------------------- shared helpers
def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render a matplotlib figure to PNG bytes (without pyplot, so nothing is displayed twice)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def find(panel: widgets.Widget, css_class: str) -> widgets.Widget:
    """The first widget inside `panel` (depth first, the panel included) that carries `css_class`."""
    stack = [panel]
    while stack:
        w = stack.pop(0)
        if css_class in getattr(w, "_dom_classes", ()):
            return w
        stack.extend(getattr(w, "children", ()))
    raise LookupError(f"no widget with CSS class {css_class!r} in this panel")


class Panel(widgets.VBox):
    """A panel's box. Displayed, it gives the live widget and, beside it, a static copy of its picture (`image/png`)
    and a one-line text: a front end that can show the widget (JupyterLab, Notebook 7, VS Code) ranks the widget
    first; one that cannot (an executed notebook rendered without widget state, GitHub, a terminal) shows the
    picture of the first state, so a headless run leaves a figure where the panel is."""

    panel_title = ""  # shown by the text form
    first_png = b""  # the picture as it was drawn when the panel was built

    def _repr_mimebundle_(self, **kwargs) -> dict:
        data = super()._repr_mimebundle_(**kwargs)
        if self.first_png:
            data["image/png"] = base64.b64encode(self.first_png).decode("ascii")
        data["text/plain"] = f"{self.panel_title} (an interactive panel; the picture is its first state)"
        return data


def _panel(title: str, main: widgets.Widget, others: Sequence[widgets.Widget],
           draw: Callable[[], tuple[Figure, str]],
           disabled: Mapping[widgets.Widget, Callable[[], bool]] | None = None, note: str = "") -> Panel:
    """Assemble a panel: controls, busy note, readout, image, warning and error boxes; `draw()` -> (figure, readout
    HTML) on every change. `disabled`: control -> predicate, re-evaluated before every draw (True: greyed out).
    `note`: a line under the title (e.g. the model's measured accuracy, `conditional.measured_note`)."""
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    readout, error, warned, busy = widgets.HTML(), widgets.HTML(), widgets.HTML(), widgets.HTML()
    main.add_class(MAIN_CONTROL_CLASS)
    image.add_class(IMAGE_CLASS)
    readout.add_class(READOUT_CLASS)
    error.add_class(ERROR_CLASS)
    warned.add_class(WARNING_CLASS)
    busy.add_class(BUSY_CLASS)
    disabled = dict(disabled or {})

    def update(change: Any = None) -> None:
        for control, predicate in disabled.items():
            control.disabled = bool(predicate())
        busy.value = "<i>drawing…</i>"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fig, text = draw()
                png = figure_png(fig)
        except Exception:
            error.value = f"<pre style='color:#b00020'>{html.escape(traceback.format_exc())}</pre>"
            raise  # never swallowed: the cell (or the kernel log) shows it, and the image does not change
        finally:
            busy.value = ""
        error.value = ""
        warned.value = "".join(f"<div style='color:#8a5a00'>⚠ {html.escape(f'{w.category.__name__}: {w.message}')}"
                               "</div>" for w in _unique(caught))
        readout.value = text
        image.value = png

    for control in (main, *others):
        control.observe(update, names="value")
    update()
    head = f"<b>{html.escape(title)}</b>" + (f"<br><small>{html.escape(note)}</small>" if note else "")
    box = Panel([widgets.HTML(head), widgets.HBox([main, *others]), busy, readout, warned, image, error])
    box.panel_title, box.first_png = title, image.value
    box.layout.align_items = "flex-start"  # the image keeps its natural size instead of stretching to the cell
    box.add_class(PANEL_CLASS)
    return box


def _unique(caught: Sequence[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    """One of each (category, message): a warning raised in a loop is shown once."""
    seen: dict[tuple[type, str], warnings.WarningMessage] = {}
    for w in caught:
        seen.setdefault((w.category, str(w.message)), w)
    return list(seen.values())


def _as_image_batch(x: Tensor, name: str) -> Tensor:
    """(C,H,W) or (B,C,H,W) tensor -> (B,C,H,W) float32 on the CPU, with a clear error otherwise."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor (C,H,W) or (B,C,H,W) in [-1, 1], got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (C,H,W) or (B,C,H,W), got {tuple(x.shape)}")
    return x.detach().float().cpu()


def _call_model(fn: Callable[[Tensor], Any], x: Tensor, name: str) -> Tensor:
    """Call encode/decode without gradients; the result must be a (B, ...) 4-D tensor; returned on the CPU."""
    with torch.no_grad():
        out = fn(x)
    if not torch.is_tensor(out) or out.ndim != 4 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"{name} must map a (B, ...) tensor to a (B, C, H, W) tensor, got {got}; for an "
                         "autoencoder pass e.g. `lambda x: ae.encode(x).mode()` and `ae.decode`")
    return out.detach().float().cpu()


def _rgb(x: Tensor) -> np.ndarray:
    """(C,H,W) in [-1,1] -> (H,W,3) or (H,W) in [0,1]."""
    x = ((x.clamp(-1, 1) + 1) / 2).numpy()
    return x[0] if x.shape[0] == 1 else x[:3].transpose(1, 2, 0)


def _show(ax, img: np.ndarray, title: str, space: str = "pixel", **kw) -> None:
    gray = img.ndim == 2
    if gray and "vmin" not in kw:
        kw.update(vmin=0, vmax=1)
    ax.imshow(img, cmap=kw.pop("cmap", "gray" if gray else None), interpolation="nearest", **kw)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(f"x ({space})", fontsize=6)
    ax.set_ylabel(f"y ({space})", fontsize=6)
    ax.tick_params(labelsize=5)


def _show_channel(ax, channel: Tensor, title: str) -> None:
    _show(ax, channel.numpy(), title, "latent", cmap="RdBu_r", vmin=-LATENT_RANGE, vmax=LATENT_RANGE)


def _grid(nrows: int, ncols: int, title: str, size: float = 1.7) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size * ncols, size * nrows + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig, axes


def _on(ax):
    ax.set_axis_on()
    return ax


# ---------------------------------------------------------------------------------------------- forward process
def forward_noise_panel(image: Tensor, encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                        schedule: Schedule, t: int | None = None, step: int | None = None,
                        seed: int = 0) -> Panel:
    """A t control noising an image and its latent side by side (DDPM eq. 4 in both spaces, fixed ε).

    image: (C,H,W) or (1,C,H,W) in [-1,1]. encode: (B,C,H,W) -> (B,c,h,w) latent, e.g. `ae.to_latent` (scaled to
    unit variance, as the diffusion sees it) or `lambda x: x`; decode: its inverse (`ae.from_latent`). Shows x_0,
    x_t, D(z_t) and every channel of z_t, with ᾱ_t, σ_t, SNR and the PSNR of x_t and D(z_t) against x_0.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an ldm_lite.schedule.Schedule, got {type(schedule).__name__}")
    x0 = _as_image_batch(image, "image")[:1]  # (1, C, H, W)
    z0 = _call_model(encode, x0, "encode")  # (1, c, h, w)
    g = torch.Generator().manual_seed(seed)
    eps_x, eps_z = torch.randn(x0.shape, generator=g), torch.randn(z0.shape, generator=g)
    T = schedule.T
    step = step or max(1, T // 50)
    slider = widgets.IntSlider(value=T // 4 if t is None else t, min=0, max=T - 1, step=step, description="t",
                               continuous_update=False)
    n_lat = z0.shape[1]

    def draw() -> tuple[Figure, str]:
        tt = torch.tensor([slider.value])
        x_t = schedule.q_sample(x0, tt, eps_x)
        z_t = schedule.q_sample(z0, tt, eps_z)
        xz = _call_model(decode, z_t, "decode")
        if xz.shape != x0.shape:
            raise ValueError(f"decode(encode(image)) has shape {tuple(xz.shape)}, expected {tuple(x0.shape)}")
        s = noise_stats(schedule, slider.value)
        p_x, p_z = float(psnr(x_t, x0)), float(psnr(xz, x0))
        fig, axes = _grid(2, max(3, n_lat), f"t = {slider.value}, ᾱ_t = {s['alpha_bar']:.3g}\n"
                                            "pixel space (top) vs latent space (bottom)")
        _show(_on(axes[0, 0]), _rgb(x0[0]), "x_0 (clean image)")
        _show(_on(axes[0, 1]), _rgb(x_t[0]), f"x_t, PSNR {p_x:.1f} dB")
        _show(_on(axes[0, 2]), _rgb(xz[0]), f"D(z_t), PSNR {p_z:.1f} dB")
        for c in range(n_lat):
            _show_channel(_on(axes[1, c]), z_t[0, c], f"z_t channel {c}")
        text = (f"t = {slider.value} &nbsp; ᾱ_t = {s['alpha_bar']:.6g} &nbsp; √ᾱ_t = {s['sqrt_alpha_bar']:.6g} "
                f"&nbsp; σ_t = {s['sigma']:.6g} &nbsp; SNR = {s['snr']:.6g} (log SNR = {s['log_snr']:.4g}) "
                f"&nbsp; PSNR(x_t, x_0) = {p_x:.2f} dB &nbsp; PSNR(D(z_t), x_0) = {p_z:.2f} dB")
        return fig, text

    return _panel("Forward process q(z_t | z_0): noise an image and its latent", slider, [], draw)


def noise_stats(schedule: Schedule, t: int) -> dict[str, float]:
    """ᾱ_t, √ᾱ_t, σ_t, SNR and log SNR at timestep t, as floats (what the forward panel prints)."""
    return {k: float(getattr(schedule, k)[t]) for k in ("alpha_bar", "sqrt_alpha_bar", "sigma", "snr", "log_snr")}


# ---------------------------------------------------------------------------------------------- the f control
RECON_KEYS = ("recon", "latent", "psnr", "lpips")


def f_panel(recon_fn: Callable[[int, str, Tensor], dict | None], images: Tensor,
            fs: Sequence[int] = (1, 2, 4, 8, 16), kinds: Sequence[str] = ("kl", "vq"),
            max_images: int = 4) -> Panel:
    """An f control (main) and a KL/VQ toggle over autoencoders (paper §3.1, Table 8).

    recon_fn(f, kind, images) -> dict(recon=(B,C,H,W), latent=(B,c,H/f,W/f), psnr=float, lpips=float or None), or
    None when there is no model for that (f, kind): the panel then says so. Results are cached per (f, kind).
    Shows the inputs, their reconstructions, every latent channel of the first image, the latent shape, the
    compression ratio (C·H·W)/(c·h·w) and the metrics.
    """
    fs, kinds = list(fs), list(kinds)
    if not fs or not kinds:
        raise ValueError("f_panel needs at least one f and one kind, e.g. fs=(4, 8), kinds=('kl',)")
    x = _as_image_batch(images, "images")[:max_images]
    f_ctrl = widgets.SelectionSlider(options=fs, value=4 if 4 in fs else fs[0], description="f",
                                     continuous_update=False)
    kind_ctrl = widgets.ToggleButtons(options=kinds, value=kinds[0], description="kind")
    cache: dict[tuple[int, str], dict | None] = {}

    def result(f: int, kind: str) -> dict | None:
        if (f, kind) not in cache:
            with torch.no_grad():
                cache[f, kind] = _check_recon(recon_fn(f, kind, x), x, f, kind)
        return cache[f, kind]

    def draw() -> tuple[Figure, str]:
        f, kind = f_ctrl.value, kind_ctrl.value
        r = result(f, kind)
        n = x.shape[0]
        if r is None:
            fig, axes = _grid(1, n, f"no {kind.upper()} autoencoder with f = {f}: train one (see notebook 01)")
            for i in range(n):
                _show(_on(axes[0, i]), _rgb(x[i]), f"input {i}")
            return fig, f"<b>no {kind.upper()} model with f = {f}</b> in this notebook"
        lat = r["latent"]
        c = lat.shape[1]
        ncols = max(n, min(c, 8))
        fig, axes = _grid(2 + math.ceil(c / ncols), ncols,
                          f"{kind.upper()} autoencoder, f = {f}: inputs, reconstructions, latent channels of input 0")
        for i in range(n):
            _show(_on(axes[0, i]), _rgb(x[i]), f"input {i}")
            _show(_on(axes[1, i]), _rgb(r["recon"][i]), f"reconstruction {i}")
        for ch in range(c):
            _show_channel(_on(axes[2 + ch // ncols, ch % ncols]), lat[0, ch], f"latent channel {ch}")
        ratio = x[0].numel() / lat[0].numel()
        lp = "n/a" if r["lpips"] is None else f"{r['lpips']:.4f}"
        text = (f"f = {f}, {kind.upper()} &nbsp; image {tuple(x.shape[1:])} → latent {tuple(lat.shape[1:])} "
                f"&nbsp; compression {ratio:.3g}× &nbsp; PSNR = {r['psnr']:.2f} dB &nbsp; LPIPS = {lp}")
        return fig, text

    return _panel("Perceptual compression: move the downsampling factor f", f_ctrl, [kind_ctrl], draw)


def _check_recon(r: dict | None, x: Tensor, f: int, kind: str) -> dict | None:
    if r is None:
        return None
    if not isinstance(r, dict) or any(k not in r for k in RECON_KEYS):
        got = sorted(r) if isinstance(r, dict) else type(r).__name__
        raise ValueError(f"recon_fn({f}, {kind!r}, images) must return a dict with keys {RECON_KEYS} (or None when "
                         f"there is no such model), got {got}")
    recon = _call_model(lambda _: r["recon"], x, "recon_fn(...)['recon']")
    latent = _call_model(lambda _: r["latent"], x, "recon_fn(...)['latent']")
    if recon.shape != x.shape:
        raise ValueError(f"recon_fn({f}, {kind!r}) returned a reconstruction of shape {tuple(recon.shape)}; "
                         f"expected the images' shape {tuple(x.shape)}")
    lp = r["lpips"]
    return {"recon": recon, "latent": latent, "psnr": _scalar(r["psnr"]), "lpips": None if lp is None else _scalar(lp)}


def _scalar(v: Any) -> float:
    return float(torch.as_tensor(v, dtype=torch.float64).mean())


# ---------------------------------------------------------------------------------------------- reverse process
class TrajectoryStep(NamedTuple):
    """One reverse step as a sampler's callback saw it; tensors (B, c, h, w) on the CPU."""

    step: int
    t: int
    z_t: Tensor  # the sample the denoiser saw
    z0_hat: Tensor  # its prediction of z_0 (DDPM eq. 15)
    eps_hat: Tensor  # the implied noise prediction ε̂ = (z_t - √ᾱ_t ẑ_0) / σ_t


def record_trajectory(schedule: Schedule) -> tuple[Callable[[int, int, Tensor, Tensor], None], list[TrajectoryStep]]:
    """A sampler callback `callback(step, t, z_t, z0_hat)` and the list it fills with `TrajectoryStep`s.

        callback, trajectory = record_trajectory(sched)
        ll.samplers.ddim(denoiser, sched, noise, steps=50, callback=callback)
        reverse_scrubber(trajectory, ae.from_latent)
    """
    trajectory: list[TrajectoryStep] = []

    def callback(step: int, t: int, z_t: Tensor, z0_hat: Tensor) -> None:
        tt = torch.full((z_t.shape[0],), int(t), dtype=torch.long)
        eps_hat = schedule.eps_from_x0(z_t, tt, z0_hat)
        trajectory.append(TrajectoryStep(int(step), int(t), *(v.detach().float().cpu().clone()
                                                               for v in (z_t, z0_hat, eps_hat))))

    return callback, trajectory


def reverse_scrubber(trajectory: Sequence[TrajectoryStep | tuple], decode: Callable[[Tensor], Tensor],
                     sample: int = 0) -> Panel:
    """A step control over a recorded reverse process: every channel of z_t and of ε̂, and x̂_0 = D(ẑ_0).

    trajectory: records (step, t, z_t, z0_hat, eps_hat) from `record_trajectory`; decode: latent -> image
    (e.g. `ae.from_latent`, or `lambda z: z` in pixel space); sample: which item of the batch to show.
    """
    steps = [TrajectoryStep(*r) for r in trajectory]
    if not steps:
        raise ValueError("the trajectory is empty: pass the list from record_trajectory() after running a sampler "
                         "with its callback")
    if not 0 <= sample < steps[0].z_t.shape[0]:
        raise ValueError(f"sample={sample} is outside the batch of {steps[0].z_t.shape[0]} trajectories")
    slider = widgets.IntSlider(value=1, min=1, max=len(steps), step=1, description="step",  # 1-based, as printed
                               continuous_update=False)
    decoded: dict[int, Tensor] = {}
    c = steps[0].z_t.shape[1]

    def draw() -> tuple[Figure, str]:
        i = slider.value - 1
        rec = steps[i]
        if i not in decoded:
            decoded[i] = _call_model(decode, rec.z0_hat[sample:sample + 1].float(), "decode")
        fig, axes = _grid(2, c + 1, f"reverse step {i + 1} of {len(steps)} (t = {rec.t}): z_t and ε̂ per channel, "
                                    "decoded prediction x̂_0")
        for ch in range(c):
            _show_channel(_on(axes[0, ch]), rec.z_t[sample, ch], f"z_t channel {ch}")
            _show_channel(_on(axes[1, ch]), rec.eps_hat[sample, ch], f"ε̂ channel {ch}")
        _show(_on(axes[0, c]), _rgb(decoded[i][0]), "x̂_0 = D(ẑ_0)")
        text = (f"step {i + 1}/{len(steps)} &nbsp; t = {rec.t} &nbsp; std(z_t) = {float(rec.z_t[sample].std()):.3f} "
                f"&nbsp; std(ε̂) = {float(rec.eps_hat[sample].std()):.3f}")
        return fig, text

    return _panel("Reverse process: scrub through the sampler's steps", slider, [], draw)


# ---------------------------------------------------------------------------------------------- cross-attention
def attention_panel(image: Tensor, attn_maps: Tensor, tokens: Sequence[str],
                    map_size: tuple[int, int] | None = None, alpha: float = 0.6) -> Panel:
    """A token control overlaying the cross-attention map of one token on the image (paper §3.3; the paper
    shows no attention maps: per-token maps like these are how Prompt-to-Prompt, Hertz et al. 2022, inspects them).

    image: (C,H,W) in [-1,1]. attn_maps: softmax weights (..., Q, L): Q = h·w image queries, L = len(tokens) keys;
    leading dims (heads, layers, ...) are averaged. map_size: (h, w) of the query grid (default: square).
    """
    x = _as_image_batch(image, "image")[0]
    if not torch.is_tensor(attn_maps) or attn_maps.ndim < 2:
        raise ValueError("attn_maps must be a tensor (..., Q, L) of attention weights (Q image queries, L tokens)")
    maps = attn_maps.detach().float().cpu().reshape(-1, *attn_maps.shape[-2:]).mean(0)  # (Q, L), heads averaged
    q, n_tok = maps.shape
    if n_tok != len(tokens):
        raise ValueError(f"attn_maps has {n_tok} keys in its last dimension but {len(tokens)} tokens were given")
    h, w = map_size or (math.isqrt(q), math.isqrt(q))
    if h * w != q:
        raise ValueError(f"{q} queries do not form a {h}x{w} grid; pass map_size=(h, w)")
    maps = maps.T.reshape(n_tok, 1, h, w)
    up = torch.nn.functional.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    token_ctrl = widgets.Dropdown(options=[(f"{i}: {tok}", i) for i, tok in enumerate(tokens)], value=0,
                                  description="token")

    def draw() -> tuple[Figure, str]:
        k = token_ctrl.value
        m = maps[k, 0]
        fig, axes = _grid(1, 3, f"cross-attention to token {k} {tokens[k]!r} (heads averaged)", size=2.2)
        _show(_on(axes[0, 0]), _rgb(x), "image")
        _show(_on(axes[0, 1]), m.numpy(), f"attention map ({h}x{w})", "query grid", cmap="magma",
              vmin=0, vmax=max(float(maps.max()), 1e-8))
        _show(_on(axes[0, 2]), _rgb(x), "overlay")
        axes[0, 2].imshow(up[k].numpy(), cmap="magma", alpha=alpha, interpolation="bilinear")
        text = f"token {k} {html.escape(repr(tokens[k]), quote=False)} &nbsp; max weight {float(m.max()):.3f} &nbsp; mean {float(m.mean()):.3f}"
        return fig, text

    return _panel("Cross-attention: where does each token look?", token_ctrl, [], draw)


# ---------------------------------------------------------------------------------------------- image rows
def images_panel(title: str, main: widgets.Widget, others: Sequence[widgets.Widget],
                 render: Callable[[], tuple[dict[str, Tensor], str]], size: float = 2.0,
                 disabled: Mapping[widgets.Widget, Callable[[], bool]] | None = None, note: str = "") -> Panel:
    """A generic panel: whenever a control moves, `render()` -> ({caption: picture}, readout text) is drawn as one
    row. A picture is an image (C, H, W) in [-1, 1] or a class map (H, W) of integers (drawn with a fixed
    categorical palette, class 0 black). `disabled` maps a control to a predicate: while it returns True the
    control does nothing and is greyed out, e.g. `{strength: lambda: kind.value in ("bicubic", "realistic")}`.
    Used by notebook 06 (super-resolution, inpainting, semantic maps, SDEdit)."""

    def draw() -> tuple[Figure, str]:
        pictures, text = render()
        if not pictures:
            raise ValueError("render() returned no pictures")
        fig, axes = _grid(1, len(pictures), title, size=size)
        for ax, (caption, pic) in zip(axes[0], pictures.items()):
            pic = pic.detach().cpu()
            if pic.ndim == 2:
                _show(_on(ax), pic.numpy(), caption, cmap=_CLASS_CMAP, vmin=0, vmax=_CLASS_CMAP.N - 1)
            else:
                _show(_on(ax), _rgb(_as_image_batch(pic, caption)[0]), caption)
        return fig, text

    return _panel(title, main, others, draw, disabled, note)


def _class_cmap():
    return ListedColormap(["black", "tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan",
                           "tab:pink", "tab:olive", "tab:brown"])


_CLASS_CMAP = _class_cmap()


# ---------------------------------------------------------------------------------------------- trade-off (§4.1)
def tradeoff_panel(rows: Sequence[dict], samples: dict[int, Tensor], batch_size: int | None = None,
                   max_images: int = 8, x: str = "train_seconds", judge: str = "", note: str = "") -> Panel:
    """An f control over the LDM-f of a trade-off sweep (`ldm_lite.tradeoff`, paper §4.1, Fig. 6).

    rows: the sweep's result rows (`tradeoff.collect(out)`); samples: {f: (N, 3, H, W) in [-1, 1]} from each trained
    LDM-f. Shows the samples of the chosen f beside every f's FID-vs-training-time curve (the chosen one
    highlighted), and reads out the latent size, UNet parameters, measured cost of a training step (ms with
    `batch_size`, FLOPs), the steps the budget bought and the quality at its end. x: the curves' axis,
    "train_seconds" (equal compute) or "step" (equal steps); judge: named beside "recognisable" (which classifier
    scored it); note: a line under the title (e.g. the data's caveat).
    """
    if x not in ("train_seconds", "step"):
        raise ValueError(f"x must be 'train_seconds' or 'step', got {x!r}")
    runs: dict[int, list[dict]] = {}
    for r in rows:
        if r["kind"] == "training":
            runs.setdefault(int(r["f"]), []).append(r)
    fs = sorted(set(runs) | set(samples))
    if not fs:
        raise ValueError("tradeoff_panel needs result rows or samples of at least one f; run tradeoff.run_tradeoff")
    f_ctrl = widgets.SelectionSlider(options=fs, value=4 if 4 in fs else fs[0], description="f",
                                     continuous_update=False)

    def draw() -> tuple[Figure, str]:
        f = f_ctrl.value
        imgs = samples.get(f)
        n = 0 if imgs is None else min(max_images, len(imgs))
        cols = max(1, (n + 1) // 2)
        fig = Figure(figsize=(1.2 * cols + 4.2, 3.0))
        grid = fig.add_gridspec(2, cols + 3)
        for i in range(n):
            ax = fig.add_subplot(grid[i // cols, i % cols])
            ax.imshow(_rgb(imgs[i].detach().cpu()), interpolation="nearest")
            ax.axis("off")
        ax = fig.add_subplot(grid[:, cols:])
        for g, rs in sorted(runs.items()):
            rs = sorted(rs, key=lambda r: r["step"])
            ax.plot([r[x] for r in rs], [r["fid"] for r in rs], marker="o", label=f"LDM-{g}",
                    lw=2.5 if g == f else 0.8, alpha=1.0 if g == f else 0.4)
        ax.set_yscale("log")
        ax.set_xlabel("training time [s]" if x == "train_seconds" else "training steps")
        ax.set_ylabel("FID (classifier features)")
        ax.set_title("quality during training", fontsize=8)
        if runs:
            ax.legend(fontsize=6)
        fig.suptitle(f"LDM-{f}: samples" + ("" if n else " (none kept for this f)") + " and the quality curves")
        fig.tight_layout()
        mine = sorted(runs.get(f, []), key=lambda r: r["step"])
        if not mine:
            return fig, f"<b>LDM-{f}</b>: no results in these rows"
        end = mine[-1]
        ms = f"{1000 * batch_size / end['train_samples_per_second']:.0f} ms, " if batch_size else ""
        text = (f"<b>LDM-{f}</b> &nbsp; latent {end['latent']} &nbsp; UNet {end['unet_params'] / 1e6:.2f} M parameters"
                f" &nbsp; training step: {ms}{end['flops_per_train_step'] / 1e9:.1f} GFLOPs &nbsp; "
                f"{end['step']} steps in the budget &nbsp; at the end: FID {end['fid']:.1f} (n = {end.get('n', '?')}), "
                f"{100 * end['recognisable']:.1f}% recognisable" + (f" ({html.escape(judge)})" if judge else ""))
        return fig, text

    return _panel("The compression trade-off: move f", f_ctrl, [], draw, note=note)


# ---------------------------------------------------------------------------------------------- notebook 05
def cross_attention_panel(image: Tensor, maps: Tensor, tokens: Sequence[str], timesteps: Sequence[int],
                          alpha: float = 0.6, note: str = "") -> Panel:
    """A token control and a step control over cross-attention maps recorded during sampling (§3.3):
    which word looks where, and when.

    image: (C,H,W) in [-1,1], the final sample. maps: (S, L, h, w) attention weights per reverse step and token
    (heads and layers already averaged, e.g. `ll.conditional.attention_over_steps`); timesteps: the t of each step.
    Only the prompt's tokens are listed; the softmax also gave the padding positions after [SEP] their share
    (1 − the tokens' sum at each query), which the readout states beside the token's share of all attention.
    """
    x = _as_image_batch(image, "image")[0]
    if not torch.is_tensor(maps) or maps.ndim != 4:
        raise ValueError("maps must be a tensor (S, L, h, w): one map per reverse step and token")
    s, n_tok, h, w = maps.shape
    if n_tok != len(tokens) or s != len(timesteps):
        raise ValueError(f"maps has {s} steps and {n_tok} tokens but {len(timesteps)} timesteps and {len(tokens)} "
                         "tokens were given")
    maps = maps.detach().float().cpu()
    up = torch.nn.functional.interpolate(maps.reshape(s * n_tok, 1, h, w), size=x.shape[-2:], mode="bilinear",
                                         align_corners=False).view(s, n_tok, *x.shape[-2:])
    token_ctrl = widgets.Dropdown(options=[(f"{i}: {tok}", i) for i, tok in enumerate(tokens)],
                                  value=min(1, n_tok - 1), description="token")
    step_ctrl = widgets.IntSlider(value=s, min=1, max=s, step=1, description="step", continuous_update=False)

    def draw() -> tuple[Figure, str]:
        k, i = token_ctrl.value, step_ctrl.value - 1
        m = maps[i, k]
        fig, axes = _grid(1, 3, f"step {i + 1}/{s} (t = {timesteps[i]}): cross-attention to {tokens[k]!r}", size=2.2)
        _show(_on(axes[0, 0]), _rgb(x), "final sample")
        _show(_on(axes[0, 1]), m.numpy(), f"attention map ({h}x{w})", "query grid", cmap="magma", vmin=0,
              vmax=max(float(maps[i].max()), 1e-8))
        _show(_on(axes[0, 2]), _rgb(x), "overlay")
        axes[0, 2].imshow(up[i, k].numpy(), cmap="magma", alpha=alpha, interpolation="bilinear")
        share, padding = float(maps[i, k].mean()), 1.0 - float(maps[i].sum(0).mean())  # of all attention
        text = (f"token {k} {html.escape(repr(tokens[k]), quote=False)} &nbsp; step {i + 1} (t = {timesteps[i]}) "
                f"&nbsp; share of all attention {share:.1%} (padding positions: {padding:.0%}) &nbsp; "
                f"max weight {float(m.max()):.3f}")
        return fig, text

    return _panel("Cross-attention over the reverse process: which word looks where, and when", token_ctrl,
                  [step_ctrl], draw, note=note)


def prompt_panel(generate: Callable[[str, float], Tensor], prompt: str = "a large red circle",
                 guidance: float = 3.0, max_guidance: float = 8.0, ncols: int = 8, note: str = "") -> Panel:
    """A prompt box and a guidance control that generate on the fly: `generate(prompt, guidance_scale)` ->
    images (B, C, H, W) in [-1, 1] (e.g. a closure over `ldm.sample(prompts=[prompt] * 8, ...)`)."""
    box = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                       layout=widgets.Layout(width="420px"))
    scale = widgets.FloatSlider(value=guidance, min=0.0, max=max_guidance, step=0.5, description="guidance",
                                continuous_update=False)

    def draw() -> tuple[Figure, str]:
        t0 = time.perf_counter()
        with torch.no_grad():
            x = _as_image_batch(generate(box.value, scale.value), "generate(prompt, guidance)")
        seconds = time.perf_counter() - t0
        cols = min(ncols, len(x))
        rows = math.ceil(len(x) / cols)
        fig, axes = _grid(rows, cols, f"{box.value!r} at guidance {scale.value:g}", size=1.3)
        for i, img in enumerate(x):
            _show(_on(axes[i // cols, i % cols]), _rgb(img), f"sample {i}")
        text = f"{len(x)} images in {seconds:.1f} s &nbsp; guidance s = {scale.value:g}"
        return fig, text

    return _panel("Text-to-image: type a prompt (Enter), move the guidance", box, [scale], draw, note=note)

"""The notebook panels at the Python level: moving the main control redraws, the numbers shown are the schedule's,
bad inputs fail with messages that say what to change, and a failing callback is never swallowed."""

import io
import re

import pytest
import torch
import torch.nn.functional as F

import ldm_lite as ll
from ldm_lite import widgets as W

SCHED = ll.schedule.Schedule.scaled_linear(T=1000)
IMAGE = ll.datasets.shapes(resolution=16, n=4, seed=0)[0]["image"]  # (3, 16, 16)
IMAGES = torch.stack([ll.datasets.shapes(resolution=16, n=4, seed=0)[i]["image"] for i in range(3)])


def encode(x):  # a stand-in f=4 "autoencoder": average pooling and nearest upsampling
    return F.avg_pool2d(x, 4)


def decode(z):
    return F.interpolate(z, scale_factor=4)


def recon_fn(f, kind, x):
    if kind == "vq" and f == 16:
        return None
    z = F.avg_pool2d(x, f)
    rec = F.interpolate(z, scale_factor=f)
    return dict(recon=rec, latent=z, psnr=ll.metrics.psnr(rec, x).mean(), lpips=None)


def parts(panel):
    return (W.find(panel, W.MAIN_CONTROL_CLASS), W.find(panel, W.IMAGE_CLASS), W.find(panel, W.READOUT_CLASS),
            W.find(panel, W.ERROR_CLASS))


def assert_panel_convention(panel):
    assert W.PANEL_CLASS in panel._dom_classes
    main, image, readout, error = parts(panel)
    assert image.format == "png" and image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert error.value == ""
    return main, image, readout


def test_forward_panel_redraws_and_prints_the_schedule():
    panel = W.forward_noise_panel(IMAGE, encode, decode, SCHED, t=100)
    main, image, readout = assert_panel_convention(panel)
    for t in (100, 600, 999):
        before = image.value
        main.value = t
        if t != 100:
            assert image.value != before
        shown = dict(re.findall(r"(?:^|\s)(?<!log\s)(ᾱ_t|σ_t|SNR) = ([-\d.e+]+)", readout.value))
        assert float(shown["ᾱ_t"]) == pytest.approx(float(SCHED.alpha_bar[t]), rel=1e-5)
        assert float(shown["σ_t"]) == pytest.approx(float(SCHED.sigma[t]), rel=1e-5)
        assert float(shown["SNR"]) == pytest.approx(float(SCHED.snr[t]), rel=1e-5)
        assert f"t = {t} " in readout.value


def test_forward_panel_psnr_falls_with_t_and_matches_q_sample():
    panel = W.forward_noise_panel(IMAGE, lambda x: x, lambda z: z, SCHED, seed=3)
    main, _, readout = parts(panel)[:3]
    values = []
    for t in (0, 300, 900):
        main.value = t
        values.append(float(re.search(r"PSNR\(x_t, x_0\) = ([\d.]+)", readout.value).group(1)))
    assert values[0] > values[1] > values[2]
    g = torch.Generator().manual_seed(3)  # the panel draws ε for x then for z from one generator seeded with `seed`
    x0 = IMAGE[None]
    x_t = SCHED.q_sample(x0, torch.tensor([900]), torch.randn(x0.shape, generator=g))
    assert values[2] == pytest.approx(float(ll.metrics.psnr(x_t, x0)), abs=0.01)


def test_noise_stats_are_the_schedule_values():
    s = W.noise_stats(SCHED, 500)
    assert s["alpha_bar"] == float(SCHED.alpha_bar[500]) and s["snr"] == pytest.approx(s["alpha_bar"] / (1 - s["alpha_bar"]))


def test_f_panel_redraws_says_when_a_model_is_missing_and_reports_compression():
    calls = []
    panel = W.f_panel(lambda f, k, x: calls.append((f, k)) or recon_fn(f, k, x), IMAGES)
    main, image, readout = assert_panel_convention(panel)
    kind = panel.children[1].children[1]  # the KL/VQ toggle sits beside the main control
    assert main.value == 4 and "compression 16×" in readout.value and "latent (3, 4, 4)" in readout.value
    before = image.value
    main.value = 8
    assert image.value != before and "compression 64×" in readout.value
    main.value = 16
    kind.value = "vq"
    assert "no VQ model with f = 16" in readout.value
    main.value = 4
    main.value = 8
    assert calls.count((8, "kl")) == 1  # cached


def test_f_panel_rejects_a_bad_recon_fn():
    with pytest.raises(ValueError, match="must return a dict with keys"):
        W.f_panel(lambda f, k, x: {"recon": x}, IMAGES)
    with pytest.raises(ValueError, match="reconstruction of shape"):
        W.f_panel(lambda f, k, x: dict(recon=x[:, :1], latent=x, psnr=1.0, lpips=0.1), IMAGES)


def test_reverse_scrubber_shows_every_recorded_step():
    callback, trajectory = W.record_trajectory(SCHED)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ll.samplers.ddim(lambda z, t, c: 0.3 * z, SCHED, noise, steps=5, callback=callback)
    assert [r.step for r in trajectory] == list(range(5)) and trajectory[0].t == int(SCHED.timesteps(5)[0])
    r = trajectory[2]  # ε̂ is consistent with z_t and ẑ_0 (DDPM eq. 15)
    assert torch.allclose(SCHED.x0_from_eps(r.z_t, torch.tensor([r.t, r.t]), r.eps_hat), r.z0_hat, atol=1e-5)
    panel = W.reverse_scrubber(trajectory, decode, sample=1)
    main, image, readout = assert_panel_convention(panel)
    seen = {image.value}
    assert main.min == 1 and main.max == 5  # steps are numbered from 1, as printed
    for i in range(2, 6):
        main.value = i
        seen.add(image.value)
        assert f"step {i}/5" in readout.value and f"t = {trajectory[i - 1].t} " in readout.value
    assert len(seen) == 5


def test_attention_panel_redraws_per_token_and_checks_shapes():
    maps = torch.softmax(torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(0)), dim=-1)  # (heads, Q, L)
    panel = W.attention_panel(IMAGE, maps, ["a", "red", "circle"])
    main, image, readout = assert_panel_convention(panel)
    before = image.value
    main.value = 2
    assert image.value != before and "'circle'" in readout.value
    assert f"{float(maps.mean(0)[:, 2].max()):.3f}" in readout.value
    with pytest.raises(ValueError, match="3 keys .* but 2 tokens"):
        W.attention_panel(IMAGE, maps, ["a", "red"])
    with pytest.raises(ValueError, match="map_size"):
        W.attention_panel(IMAGE, maps[:, :15], ["a", "red", "circle"])


def test_bad_inputs_say_what_to_change():
    with pytest.raises(ValueError, match=r"\(C,H,W\) or \(B,C,H,W\)"):
        W.forward_noise_panel(IMAGE[0], encode, decode, SCHED)
    with pytest.raises(TypeError, match="Schedule"):
        W.forward_noise_panel(IMAGE, encode, decode, "cosine")
    with pytest.raises(ValueError, match="encode must map"):
        W.forward_noise_panel(IMAGE, lambda x: x.flatten(), decode, SCHED)
    with pytest.raises(ValueError, match="trajectory is empty"):
        W.reverse_scrubber([], decode)


def test_a_failing_callback_raises_and_leaves_the_image():
    state = {"broken": False}

    def flaky_decode(z):
        if state["broken"]:
            raise RuntimeError("decoder exploded")
        return decode(z)

    panel = W.forward_noise_panel(IMAGE, encode, flaky_decode, SCHED)
    main, image, _, error = parts(panel)
    before = image.value
    state["broken"] = True
    with pytest.raises(RuntimeError, match="decoder exploded"):
        main.value = 900
    assert image.value == before and "decoder exploded" in error.value
    state["broken"] = False
    main.value = 800
    assert image.value != before and error.value == ""


def test_tradeoff_panel_switches_between_the_models_of_each_f():
    def row(f, step, fid):
        return {"kind": "training", "f": f, "step": step, "train_seconds": step * f, "fid": fid, "recognisable": 0.5,
                "latent": f"3x{32 // f}x{32 // f}", "unet_params": 1_300_000, "flops_per_train_step": 2e9 / f,
                "train_samples_per_second": 32.0 * f}
    rows = [row(f, s, 100.0 / s) for f in (1, 4) for s in (10, 20)] + [{"kind": "sampling", "f": 4}]
    samples = {1: IMAGES, 4: -IMAGES}
    panel = W.tradeoff_panel(rows, samples, batch_size=32)
    main, image, readout = assert_panel_convention(panel)
    assert list(main.options) == [1, 4] and main.value == 4
    assert "latent 3x8x8" in readout.value and "250 ms" in readout.value and "FID 5.0" in readout.value
    before = image.value
    main.value = 1
    assert image.value != before and "latent 3x32x32" in readout.value and "1000 ms, 2.0 GFLOPs" in readout.value
    with pytest.raises(ValueError, match="run_tradeoff"):
        W.tradeoff_panel([], {})


def test_a_warning_raised_while_drawing_is_shown_in_the_panel_and_cleared_after():
    import warnings

    import ipywidgets as widgets

    word = widgets.Dropdown(options=["red", "crimson"], value="crimson")

    def render():
        if word.value == "crimson":
            for _ in range(3):  # raised in a loop: shown once
                warnings.warn("'crimson' was never seen in training", UserWarning, stacklevel=2)
        return {"image": IMAGE}, f"word = {word.value}"

    panel = W.images_panel("words", word, [], render)
    warned = W.find(panel, W.WARNING_CLASS)
    assert warned.value.count("never seen in training") == 1 and "UserWarning" in warned.value
    word.value = "red"  # a draw without a warning clears the box
    assert warned.value == "" and W.find(panel, W.ERROR_CLASS).value == ""
    word.value = "crimson"  # after a control moved, too (it would otherwise reach only the kernel log)
    assert "never seen in training" in warned.value


def test_a_control_that_does_nothing_in_a_mode_is_disabled():
    import ipywidgets as widgets

    from ldm_lite.image_to_image import SR_CONTROLS, sr_degrade

    kind = widgets.Dropdown(options=SR_CONTROLS, value="bicubic")
    strength = widgets.FloatSlider(value=0.5, min=0.0, max=1.0)
    hr = IMAGES[:1].repeat(1, 1, 2, 2)  # (1, 3, 32, 32)

    def render():
        return {"low-res": sr_degrade(hr, kind.value, strength.value)[0]}, ""

    unused = ("bicubic", "realistic")
    panel = W.images_panel("SR", kind, [strength], render, disabled={strength: lambda: kind.value in unused})
    for k in SR_CONTROLS:
        kind.value = k
        # the reference: does the strength change the low-res input of this kind?
        changes = not torch.equal(sr_degrade(hr, k, 0.0), sr_degrade(hr, k, 1.0))
        assert strength.disabled == (not changes) == (k in unused), k
    assert W.find(panel, W.ERROR_CLASS).value == ""


def test_the_busy_note_shows_while_drawing_and_clears_after():
    import ipywidgets as widgets

    seen = []
    control = widgets.IntSlider(value=0, min=0, max=3)
    holder = {}

    def render():
        if "panel" in holder:
            seen.append(W.find(holder["panel"], W.BUSY_CLASS).value)
        return {"image": IMAGE * (1 - control.value / 3)}, ""

    holder["panel"] = panel = W.images_panel("busy", control, [], render)
    control.value = 2
    assert seen and "drawing" in seen[-1]
    assert W.find(panel, W.BUSY_CLASS).value == ""


def _every_panel():
    """One panel of each kind, built from the stand-ins above (name -> panel)."""
    import ipywidgets as widgets

    callback, trajectory = W.record_trajectory(SCHED)
    ll.samplers.ddim(lambda z, t, c: 0.3 * z, SCHED, torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
                     steps=3, callback=callback)
    maps = torch.softmax(torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    row = {"kind": "training", "f": 4, "step": 10, "train_seconds": 1.0, "fid": 9.0, "recognisable": 0.5,
           "latent": "3x8x8", "unet_params": 1e6, "flops_per_train_step": 1e9, "train_samples_per_second": 32.0}
    level = widgets.IntSlider(value=0, min=0, max=3)
    return {
        "forward": W.forward_noise_panel(IMAGE, encode, decode, SCHED, t=100),
        "f": W.f_panel(recon_fn, IMAGES),
        "reverse": W.reverse_scrubber(trajectory, decode),
        "attention": W.attention_panel(IMAGE, maps, ["a", "red", "circle"]),
        "images": W.images_panel("rows", level, [], lambda: ({"image": IMAGE * (1 - level.value / 3)}, "")),
        "tradeoff": W.tradeoff_panel([row, {**row, "f": 8}], {4: IMAGES, 8: -IMAGES}),
        "cross_attention": W.cross_attention_panel(IMAGE, torch.rand(3, 2, 4, 4), ["a", "circle"], [900, 500, 100]),
        "prompt": W.prompt_panel(lambda prompt, s: IMAGES * (s / 8), ncols=3),
    }


def _move(control) -> None:
    """Move a main control to another value, as a learner does (a slider, a selection or a text box)."""
    if hasattr(control, "max"):
        control.value = control.max if control.value != control.max else control.min
    elif hasattr(control, "options"):
        control.index = 1 if control.index == 0 else 0
    else:
        control.value += " blue"


def test_every_panel_also_displays_a_static_picture_of_its_first_state(monkeypatch):
    """Built headless (no front end), a panel's display carries its first picture as image/png beside the widget
    view, so an executed notebook shows a figure where the panel is; moving a control changes the live picture only.
    Every first picture reads: no title clipped or hidden (`plotting.layout_problems`)."""
    import base64

    from IPython.core.formatters import format_display_data
    from matplotlib.image import imread

    figures = []
    render = W.figure_png
    monkeypatch.setattr(W, "figure_png", lambda fig, dpi=90: figures.append(fig) or render(fig, dpi))
    panels = _every_panel()
    assert len(figures) == len(panels)
    for name, fig in zip(panels, figures):
        assert ll.plotting.layout_problems(fig) == [], name
    for name, panel in panels.items():
        first = W.find(panel, W.IMAGE_CLASS).value
        data, _ = format_display_data(panel)  # what IPython publishes for a panel left at the end of a cell
        assert "application/vnd.jupyter.widget-view+json" in data, name
        assert base64.b64decode(data["image/png"]) == first, name
        assert imread(io.BytesIO(first)).shape[:2] >= (100, 100), name  # a real picture, not a placeholder
        assert data["text/plain"].startswith(panel.panel_title) and "interactive panel" in data["text/plain"], name
    for name in ("f", "prompt"):  # one shared Panel class: a selection and a text box stand for every control
        panel = panels[name]
        image = W.find(panel, W.IMAGE_CLASS)
        first = image.value
        _move(W.find(panel, W.MAIN_CONTROL_CLASS))
        assert image.value != first, name  # the control still redraws the live picture...
        data, _ = format_display_data(panel)
        assert base64.b64decode(data["image/png"]) == first, name  # ...while the static copy stays the first state

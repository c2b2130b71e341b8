"""ldm_lite.exercises: every reference solution passes its check; for every check, planted wrong answers (written
the way a learner would) fail with a hint naming the mistake; unsolved stubs fall back to the library; the DDIM
step reference is the step `ll.samplers.ddim` takes; the "plug it into the model" demos agree with the library."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ldm_lite as ll
from ldm_lite import exercises as ex
from ldm_lite.exercises.diffusion import ddim_step_reference

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("solutions_exercises", ROOT / "solutions" / "exercises.py")
SOL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SOL)
CHECKS = [name[len("check_"):] for name in ex.__all__ if name.startswith("check_")]


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv("LDM_LITE_SMOKE", raising=False)  # a learner's run unless a test says otherwise


def test_every_check_has_a_solution_and_there_are_at_least_24():
    assert len(CHECKS) >= 24 and all(hasattr(SOL, name) for name in CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_the_solution_passes(name, capsys):
    v = getattr(ex, f"check_{name}")(getattr(SOL, name), demo=False)
    assert v.passed and v.attempted and v.fn is getattr(SOL, name), v.message
    assert capsys.readouterr().out.startswith(f"✓ {name}: right on all")


# ------------------------------------------------------------------------------------------ planted wrong answers
def _ab(alpha_bar, t):
    return alpha_bar[t].view(-1, 1, 1, 1)


def _emb(t, dim, denom=None, sin_first=False):
    half = dim // 2
    args = t.float()[:, None] * torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / (denom or half))
    return torch.cat([args.sin(), args.cos()] if sin_first else [args.cos(), args.sin()], dim=-1)


def _vq(z_e, codebook, pick="argmin", permute=True, straight_through=True):
    b, c, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, c) if permute else z_e.reshape(-1, c)
    d = torch.cdist(flat, codebook)
    idx = (d.argmin(1) if pick == "argmin" else d.argmax(1)).view(b, h, w)
    codes = codebook[idx].permute(0, 3, 1, 2)
    return (z_e + (codes - z_e).detach() if straight_through else codes), idx


def _res(b, x, e, time=True, emb_silu=True, skip=True):
    h = b.conv1(F.silu(b.norm1(x)))
    if time:
        h = h + b.emb(F.silu(e) if emb_silu else e)[:, :, None, None]
    h = b.conv2(F.silu(b.norm2(h)))
    return h + b.skip(x) if skip else h


def _ddim(z, e, a, ap, eta, n, root_prev=True, sigma_in_direction=True, noise=True):
    x0 = (z - (1 - a) ** 0.5 * e) / a**0.5
    s = eta * ((1 - ap) / (1 - a)) ** 0.5 * (1 - a / ap) ** 0.5
    out = (ap**0.5 if root_prev else ap) * x0 + (1 - ap - (s**2 if sigma_in_direction else 0)) ** 0.5 * e
    return out + s * n if noise else out


def _unet(u, x, t, fifo=False, silu_out=True, time_mlp=True, down_skip=True):
    e = ll.unet.timestep_embedding(t, u.config.model_channels)
    emb = u.time_mlp(e) if time_mlp else e
    h = u.conv_in(x)
    skips = [h]
    for level, blocks in enumerate(u.down):
        for blk in blocks:
            h = blk(h, emb, None)
            skips.append(h)
        if level < len(u.down) - 1:
            h = u.downsample[level](h)
            if down_skip:
                skips.append(h)
    h = u.mid2(u.mid1(h, emb, None), emb, None)
    for i, blocks in enumerate(u.up):
        for blk in blocks:
            h = blk(torch.cat([h, skips.pop(0) if fifo else skips.pop()], dim=1), emb, None)
        if i < len(u.up) - 1:
            h = u.upsample[i](h)
    h = u.norm_out(h)
    return u.conv_out(F.silu(h) if silu_out else h)


def _xattn(x, c, wq, wk, wv, kv_from_x=False, swap=False):
    src = x if kv_from_x else c
    q, k, v = x @ wq, src @ wk, src @ wv
    if swap:
        k, v = v, k
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


def _attn_block(b, x, residual=True, reshape_only=False):
    bs, c, h, w = x.shape
    tokens = b.norm(x).flatten(2).transpose(1, 2)
    q, k, v = (y.reshape(bs, h * w, b.attn.heads, -1).transpose(1, 2) for y in b.attn.to_qkv(tokens).chunk(3, -1))
    out = b.attn.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bs, h * w, c))
    out = out.reshape(bs, c, h, w) if reshape_only else out.transpose(1, 2).reshape(bs, c, h, w)
    return x + out if residual else out


def _alpha_bar(T, b0, b1, roots=True, prod=True):
    betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2 if roots else \
        torch.linspace(b0, b1, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0) if prod else 1 - torch.cumsum(betas, 0)


def _ddpm(z, e, a, ap, n, var="tilde", noise=True):
    beta = 1 - a / ap
    x0 = (z - (1 - a) ** 0.5 * e) / a**0.5
    mean = (ap**0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - ap) * z) / (1 - a)
    v = (1 - ap) / (1 - a) * beta if var == "tilde" else beta
    return mean + v**0.5 * n if noise else mean


def _inpaint(z, x, m, enc, hole="keep", pool="area"):
    m4 = m[:, None]
    masked = x * m4 if hole == "inverted" else x * (1 - m4)
    small = F.adaptive_avg_pool2d(m4, z.shape[-2:]) if pool == "area" else F.interpolate(m4, size=z.shape[-2:])
    return torch.cat([z, enc(masked), small], 1)


WRONG = {  # check -> [(planted wrong answer, words its hint must contain)]
    "to_model_range": [(lambda img: torch.from_numpy(img).permute(2, 0, 1).float() / 255, "maps to [0, 1]"),
                       (lambda img: torch.from_numpy(img).float() / 127.5 - 1, "channels are still last"),
                       (lambda img: torch.from_numpy(img.transpose(2, 0, 1) / 127.5 - 1), "float64")],
    "psnr": [(lambda x, y: 10 * torch.log10(1 / ((x - y) ** 2).mean(dim=(1, 2, 3))), "6.02 dB too low"),
             (lambda x, y: 10 * torch.log10(1 / (((x - y) / 2) ** 2).mean()), "one PSNR per image"),
             (lambda x, y: 20 * torch.log10(1 / (((x - y) / 2) ** 2).mean(dim=(1, 2, 3))), "10·log10")],
    "kl_sample": [(lambda m, lv, n: m + lv.exp() * n, "missing square root"),
                  (lambda m, lv, n: m + lv * n, "logvar is log σ²"),
                  (lambda m, lv, n: torch.exp(0.5 * lv) * n, "mean is missing")],
    "kl_divergence": [(lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).mean(dim=(1, 2, 3)), "averaged over (c, h, w)"),
                      (lambda m, lv: (m**2 + lv.exp() - 1 - lv).sum(dim=(1, 2, 3)), "factor ½"),
                      (lambda m, lv: 0.5 * (m**2 + lv.exp() - lv).sum(dim=(1, 2, 3)), "−1 term is missing")],
    "vq_lookup": [(lambda z, cb: _vq(z, cb, straight_through=False), "straight-through"),
                  (lambda z, cb: _vq(z, cb, pick="argmax"), "argmax picks the farthest"),
                  (lambda z, cb: _vq(z, cb, permute=False), "channels last")],
    "q_sample": [(lambda ab, z, t, n: _ab(ab, t) * z + (1 - _ab(ab, t)) * n, "missing square roots"),
                 (lambda ab, z, t, n: _ab(ab, t - 1).sqrt() * z + (1 - _ab(ab, t - 1)).sqrt() * n, "off-by-one in t"),
                 (lambda ab, z, t, n: ab[t].sqrt() * z + (1 - ab[t]).sqrt() * n, "(B, 1, 1, 1)")],
    "snr": [(lambda ab: ab.sqrt() / (1 - ab).sqrt(), "ratio of amplitudes"),
            (lambda ab: (1 - ab) / ab, "noise-to-signal")],
    "scale_factor": [(lambda z: 1 / z.var().item(), "missing a square root"),
                     (lambda z: z.std().item(), "LDM divides by it")],
    "ldm_loss": [(lambda m, ab, z, t, n: F.mse_loss(m(_ab(ab, t).sqrt() * z + (1 - _ab(ab, t)).sqrt() * n, t), z),
                  "target is the noise ε, not z_0"),
                 (lambda m, ab, z, t, n: F.mse_loss(m(z, t), n), "must see the noised z_t"),
                 (lambda m, ab, z, t, n: F.mse_loss(m(_ab(ab, t).sqrt() * z + (1 - _ab(ab, t)).sqrt() * n,
                                                      (t + 1).clamp(max=999)), n), "off-by-one in t")],
    "timestep_embedding": [(lambda t, d: _emb(t, d, sin_first=True), "sin and cos are swapped"),
                           (lambda t, d: _emb(t, d, denom=d), "divides by dim/2")],
    "resblock_forward": [(lambda b, x, e: _res(b, x, e, time=False), "time embedding is never added"),
                         (lambda b, x, e: _res(b, x, e, emb_silu=False), "goes through SiLU"),
                         (lambda b, x, e: _res(b, x, e, skip=False), "skip connection is missing")],
    "attention": [(lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1], -1) @ v, "missing square root"),
                  (lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -2) @ v, "over the keys"),
                  (lambda q, k, v: torch.softmax(q @ v.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ k,
                   "keys and values are swapped")],
    "attention_block": [(lambda b, x: _attn_block(b, x, residual=False), "residual is missing"),
                        (lambda b, x: _attn_block(b, x, reshape_only=True), "transpose before the reshape")],
    "scaled_linear_alpha_bar": [(lambda T, b0, b1: _alpha_bar(T, b0, b1, roots=False), "linear in √β"),
                                (lambda T, b0, b1: _alpha_bar(T, b0, b1, prod=False), "a product, not a sum"),
                                (lambda T, b0, b1: torch.cat([torch.ones(1, dtype=torch.float64),
                                                              _alpha_bar(T, b0, b1)[:-1]]), "off by one")],
    "ddpm_step": [(lambda *a: _ddpm(*a, var="beta"), "β̃_t"), (lambda *a: _ddpm(*a, noise=False), "no fresh noise"),
                  (lambda z, e, a, ap, n: ll.exercises.diffusion.ddim_step_reference(z, e, a, ap, 0.0, n),
                   "that is DDIM")],
    "inpaint_unet_input": [(lambda *a: _inpaint(*a, hole="inverted"), "known pixels were removed"),
                           (lambda *a: _inpaint(*a, pool="nearest"), "average-pooled")],
    "unet_forward": [(lambda u, x, t: _unet(u, x, t, fifo=True), "last in, first out"),
                     (lambda u, x, t: _unet(u, x, t, silu_out=False), "SiLU before conv_out"),
                     (lambda u, x, t: _unet(u, x, t, time_mlp=False), "time_mlp"),
                     (lambda u, x, t: _unet(u, x, t, down_skip=False), "every downsample output")],
    "predict_x0": [(lambda ab, z, t, e: (z - (1 - _ab(ab, t)) * e) / _ab(ab, t), "missing square roots"),
                   (lambda ab, z, t, e: (z + (1 - _ab(ab, t)).sqrt() * e) / _ab(ab, t).sqrt(), "noise is subtracted")],
    "ddim_step": [(lambda *a: _ddim(*a, root_prev=False), "√ᾱ_prev"),
                  (lambda *a: _ddim(*a, sigma_in_direction=False), "σ_t² is missing"),
                  (lambda *a: _ddim(*a, noise=False), "no fresh noise")],
    "cfg": [(lambda u, c, s: c + s * (u - c), "swapped"), (lambda u, c, s: c + s * (c - u), "(1 + w) convention"),
            (lambda u, c, s: u + s * c, "scales the difference")],
    "sr_unet_input": [(lambda z, y: torch.cat([F.interpolate(y, size=z.shape[-2:], mode="bicubic", antialias=True)
                                               if y.shape[-1] != z.shape[-1] else y, z], 1), "z_t comes first"),
                      (lambda z, y: torch.cat([z, F.interpolate(y, size=z.shape[-2:], mode="nearest")], 1),
                       "bicubic")],
    "keep_known": [(lambda z, e, ab, zk, k: torch.where(k > 0, e, (z - ab**0.5 * zk) / (1 - ab) ** 0.5),
                    "keep = 1 marks the known cells"),
                   (lambda z, e, ab, zk, k: torch.where(k > 0, (z - ab * zk) / (1 - ab), e), "missing square roots"),
                   (lambda z, e, ab, zk, k: torch.where(k > 0, ab**0.5 * zk + (1 - ab) ** 0.5 * e, e),
                    "not an ε")],
    "conv2d_flops": [(lambda ci, co, k, h, w: ci * co * k * k * h * w, "multiply-adds (MACs)"),
                     (lambda ci, co, k, h, w: 2 * ci * co * k * h * w, "k²")],
    "cross_attention": [(lambda x, c, wq, wk, wv: _xattn(x, c, wq, wk, wv, kv_from_x=True),
                         "keys and values come from the image tokens"),
                        (lambda x, c, wq, wk, wv: _xattn(x, c, wq, wk, wv, swap=True), "keys and values are swapped"),
                        (lambda x, c, wq, wk, wv: torch.softmax((x @ wq) @ (c @ wk).transpose(-1, -2)
                                                                / x.shape[-1] ** 0.5, -1) @ (c @ wv), "head width")],
}
PLANTED = [(name, i) for name in CHECKS for i in range(len(WRONG[name]))]


def test_every_check_has_at_least_two_planted_wrong_answers():
    assert all(len(WRONG[name]) >= 2 for name in CHECKS)


@pytest.mark.parametrize(("name", "i"), PLANTED, ids=[f"{n}-{i}" for n, i in PLANTED])
def test_a_planted_wrong_answer_fails_with_its_hint(name, i, capsys):
    wrong, words = WRONG[name][i]
    v = getattr(ex, f"check_{name}")(wrong, demo=False)
    out = capsys.readouterr().out
    assert not v.passed and v.attempted and v.case, out
    assert words in (v.hint or ""), out
    assert out.startswith(f"✗ {name}: wrong in case") and "Hint: " in out and "carries on with the library" in out
    assert v.fn is not wrong  # the notebook continues with the library's implementation


def test_the_verdict_names_the_case_and_shows_expected_and_got(capsys):
    v = ex.check_ddim_step(WRONG["ddim_step"][1][0], demo=False)  # σ² missing: right at η = 0, wrong at η = 1
    assert v.case == "η = 1, t = 500 -> 480"
    assert "max |got - expected|" in v.message and "(expected [" in v.message and "got [" in v.message


# ------------------------------------------------------------------------------------------ stubs and smoke mode
def _stub(*args):
    raise NotImplementedError


def test_an_unsolved_stub_is_not_attempted_and_falls_back_to_the_library(capsys):
    v = ex.check_q_sample(_stub)
    assert not v.passed and not v.attempted and "not attempted yet" in capsys.readouterr().out
    sched = ll.schedule.Schedule.scaled_linear()
    z0, t, n = torch.randn(2, 3, 8, 8), torch.tensor([0, 999]), torch.randn(2, 3, 8, 8)
    assert torch.allclose(v.fn(sched.alpha_bar.float(), z0, t, n), sched.q_sample(z0, t, n))


def test_checking_the_handed_back_library_version_again_does_not_pass(capsys):
    q_sample = ex.check_q_sample(WRONG["q_sample"][0][0]).fn  # the notebook idiom `f = check_f(f).fn`, after a miss
    v = ex.check_q_sample(q_sample)  # the learner re-runs only the check cell
    assert not v.passed and not v.attempted and "Run the cell that defines q_sample again" in v.message


def test_in_smoke_mode_an_unsolved_stub_is_checked_with_the_solution(monkeypatch, capsys):
    monkeypatch.setenv("LDM_LITE_SMOKE", "1")
    v = ex.check_snr(_stub)
    assert v.passed and v.fn is not _stub and "[smoke mode" in capsys.readouterr().out


def test_code_that_raises_is_reported_with_the_case(capsys):
    v = ex.check_kl_sample(lambda m, lv, n: m + torch.exp(0.5 * lv) * n[:, :1, :1])  # shape bug in the noise
    assert not v.passed and v.attempted and v.case == "random μ, log σ² in [-3, 1]"
    v = ex.check_snr(lambda ab: 1 / 0)
    assert "it raised ZeroDivisionError" in v.message


# ------------------------------------------------------------------------------------------ references and demos
def test_the_ddim_step_reference_is_the_step_of_ll_samplers_ddim():
    sched = ll.schedule.Schedule.scaled_linear()
    torch.manual_seed(0)
    w = torch.randn(3, 3)
    denoiser = lambda z, t, c: torch.tanh(torch.einsum("ij,bjhw->bihw", w, z)) * (1 + t[:, None, None, None] / 1000)
    noise = torch.randn(2, 3, 4, 4)
    want = ll.samplers.ddim(denoiser, sched, noise, 10, eta=1.0, generator=torch.Generator().manual_seed(1))
    g, z = torch.Generator().manual_seed(1), noise
    ts = sched.timesteps(10).tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        eps = denoiser(z, torch.full((2,), t), None)
        z = ddim_step_reference(z, eps, sched.alpha_bar_at(t), sched.alpha_bar_at(t_prev), 1.0,
                              torch.randn(z.shape, generator=g))
    assert torch.allclose(z, want, atol=1e-5)


@pytest.mark.slow  # ~12 s on a busy 2-core machine: every shipped model's demo at smoke sizes
def test_demos_plug_the_solution_into_the_model(monkeypatch):
    monkeypatch.setenv("LDM_LITE_SMOKE", "1")  # small demo sizes
    d = ex.check_ddim_step(SOL.ddim_step).demo
    assert d["max_diff"] < 1e-4 and d["images"].shape[1:] == (3, 32, 32)
    d = ex.check_ldm_loss(SOL.ldm_loss).demo
    assert len(d["losses"]) == 3 and max(abs(a - b) for a, b in zip(d["losses"], d["library_losses"])) < 1e-5
    for check in (ex.check_resblock_forward, ex.check_attention, ex.check_timestep_embedding, ex.check_cfg,
                  ex.check_unet_forward, ex.check_keep_known, ex.check_attention_block, ex.check_ddpm_step,
                  ex.check_scaled_linear_alpha_bar, ex.check_cross_attention, ex.check_sr_unet_input,
                  ex.check_inpaint_unet_input):
        assert check(getattr(SOL, check.__name__[len("check_"):])).demo["max_diff"] < 1e-4
    assert ex.check_vq_lookup(SOL.vq_lookup).demo["psnr"] > 20  # the shipped VQ-f4 reconstructs through it


# ------------------------------------------------------------------------------------------ hints, hidden until asked
@pytest.fixture
def fresh_hints(monkeypatch):
    from ldm_lite.exercises import hints
    monkeypatch.setattr(hints, "_next", {})
    return hints


def test_every_exercise_has_three_hints_and_nothing_else_has_any(fresh_hints):
    assert set(ex.HINTS) == set(CHECKS)
    assert all(len(h) == 3 and all(len(x) > 15 for x in h) for h in ex.HINTS.values())


def test_hint_shows_the_next_one_on_each_call_then_says_there_are_no_more(fresh_hints):
    shown = [ex.hint("q_sample") for _ in range(4)]
    for level, text in enumerate(shown[:3], start=1):
        assert text.startswith(f"q_sample, hint {level} of 3") and ex.HINTS["q_sample"][level - 1] in text
    assert "√ᾱ_t · z_0 + √(1 − ᾱ_t) · ε" in shown[1]  # the formula is hint 2
    assert "no more hints" in shown[3] and "solutions/exercises.py" in shown[3]
    assert repr(shown[0]) == str(shown[0])  # ends a notebook cell as plain text, not a quoted string
    assert ex.hint("snr").startswith("snr, hint 1 of 3")  # each exercise keeps its own place
    assert ex.hint("q_sample", 1).startswith("q_sample, hint 1 of 3")  # any one again, on request


def test_hint_rejects_an_unknown_exercise_or_level(fresh_hints):
    with pytest.raises(ValueError, match="no exercise named 'q_smaple'.*q_sample"):
        ex.hint("q_smaple")
    with pytest.raises(ValueError, match="level must be an int from 1 to 3 for 'cfg'; got 4"):
        ex.hint("cfg", 4)


def test_an_undiagnosed_wrong_answer_points_to_the_hints(capsys):
    v = ex.check_snr(lambda ab: ab * 0 + 0.5, demo=False)  # wrong in a way no listed mistake explains
    assert not v.passed and v.hint is None
    assert "ex.hint('snr')" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("0[0-7]_*.py")), ids=lambda p: p.stem)
def test_the_notebooks_offer_each_hint_and_keep_the_formula_out_of_the_text_above_the_stub(path):
    """The markdown cell above each stub says what to compute; an equation ($...=...$ with a LaTeX command, e.g.
    $z = \\mu + \\sigma \\odot \\varepsilon$) there would be the answer: it belongs in hint 2."""
    import re
    cells = re.split(r"^# %%.*$", path.read_text(), flags=re.M)
    markdown = ""
    found = []
    for cell in cells:
        if cell.lstrip("\n").startswith("# "):  # a markdown cell (every line a comment)
            markdown = cell
        for name in re.findall(r"^def (\w+)\(", cell, flags=re.M):
            if name in ex.HINTS:
                found.append(name)
                assert f'ex.hint("{name}")' in path.read_text(), f"{path.name}: no ex.hint for {name}"
                equations = [m for m in re.findall(r"\$([^$]+)\$", markdown) if "=" in m and "\\" in m]
                assert not equations, f"{path.name}, {name}: the text above the stub gives the formula {equations}"
    assert found, path.name

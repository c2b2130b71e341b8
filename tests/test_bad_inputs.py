"""Bad input gets an error that says what to change (issue 8): one row per case, the same rows as the table in
docs/bad_inputs.md (a test keeps the two in sync). Each case builds its own small input and expects the exception
type and a message fragment that names the fix."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ldm_lite as ll
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder
from ldm_lite.checkpoint import CheckpointError
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad_inputs.md"


def tiny_ae():
    return Autoencoder(AutoencoderConfig.kl(f=4, base_channels=8, norm_groups=4))


def tiny_unet(c=3, **kw):
    return UNet(UNetConfig(in_channels=c, out_channels=c, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(2,), head_dim=32, **kw))


def tiny_ldm():
    torch.manual_seed(0)
    return LatentDiffusion(IdentityAutoencoder(), tiny_unet(), image_size=16)


def folder(tmp: Path, files: dict[str, bytes | Image.Image]) -> Path:
    d = tmp / "imgs"
    d.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Image.Image):
            content.save(d / name)
        else:
            (d / name).write_bytes(content)
    return d


def png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def saved(tmp: Path, model=None) -> Path:
    (model or tiny_ldm()).save_pretrained(tmp / "m")
    return tmp / "m"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldm_lite.cli", *args], capture_output=True, text=True, timeout=300)


class Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def _train_ldm(**kw):
    ll.train.train_ldm(tiny_ldm(), ll.datasets.shapes(16, n=8, seed=0), **{"steps": 1, "batch_size": 4,
                                                                            "progress": False, "device": "cpu", **kw})


class NaNData(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"image": torch.full((3, 16, 16), float("nan"))}


def _cli_expect(args, code, *fragments):
    proc = cli(*args)
    assert proc.returncode == code, proc.stderr[-1000:]
    for f in fragments:
        assert re.search(f, proc.stderr, re.S), proc.stderr[-1000:]


# (id, area, what the user did, callable(tmp) that must raise, exception, message regex)
CASES = [
    # ------------------------------------------------------------------ datasets
    ("shapes-resolution", "datasets", "shapes(resolution=7)", lambda t: ll.datasets.shapes(7, n=4),
     ValueError, "out of range; use 16..256"),
    ("unknown-dataset", "datasets", "datasets.get('cifar')", lambda t: ll.datasets.get("cifar"),
     ValueError, "unknown dataset 'cifar'.*hub:"),
    ("unknown-dataset-recipes", "datasets", "a training stage with --dataset cifar",
     lambda t: ll.recipes.training_data("cifar"), ValueError, "unknown dataset 'cifar'.*folder of images"),
    ("folder-missing", "datasets", "image_folder('does/not/exist')", lambda t: ll.datasets.image_folder(t / "nope"),
     FileNotFoundError, "does not exist"),
    ("folder-empty", "datasets", "image_folder of a folder without images",
     lambda t: ll.datasets.image_folder(folder(t, {"notes.txt": b"hi"})), ValueError, "no images .* put your images"),
    ("image-truncated", "datasets", "a truncated PNG in the image folder (stops with the file's name)",
     lambda t: ll.datasets.image_folder(folder(t, {"a.png": png_bytes(Image.new("RGB", (32, 32)))[:60]}))[0],
     ValueError, r"cannot read image .*a\.png.*re-save it or remove it"),
    ("image-not-an-image", "datasets", "a text file named .jpg in the image folder",
     lambda t: ll.datasets.image_folder(folder(t, {"b.jpg": b"not an image"}))[0], ValueError,
     r"cannot read image .*b\.jpg"),
    ("caption-encoding", "datasets", "a caption .txt that is not UTF-8",
     lambda t: ll.datasets.image_folder(folder(t, {"c.png": Image.new("RGB", (32, 32)), "c.txt": "caf\xe9".encode("latin-1")}))[0],
     ValueError, "not UTF-8 .* re-save it with UTF-8"),
    ("metadata-bad-line", "datasets", "metadata.jsonl with a line that is not JSON",
     lambda t: ll.datasets.image_folder(folder(t, {"d.png": Image.new("RGB", (32, 32)), "metadata.jsonl": b"{oops\n"})),
     ValueError, "line 1: not a JSON object .*file_name"),
    ("mnist-split", "datasets", "mnist(split='validation')", lambda t: ll.datasets.mnist(32, split="validation"),
     ValueError, "split must be 'train', 'test' or 'all'"),
    ("channels-2", "datasets", "image_folder(..., channels=2)",
     lambda t: ll.datasets.image_folder(folder(t, {"e.png": Image.new("RGB", (32, 32))}), channels=2)[0],
     ValueError, "channels must be 1 or 3"),
    # ------------------------------------------------------------------ models
    ("f-3", "models", "AutoencoderConfig.kl(f=3)", lambda t: AutoencoderConfig.kl(f=3), ValueError,
     "power of two between 1 and 32"),
    ("image-size-not-divisible", "models", "encode a 30x30 image with f=4",
     lambda t: tiny_ae().encode(torch.zeros(1, 3, 30, 30)), ValueError, "not divisible by f=4; use 32 or pad"),
    ("wrong-channels", "models", "encode a 1-channel image with an RGB autoencoder",
     lambda t: tiny_ae().encode(torch.zeros(1, 1, 32, 32)), ValueError, "expected 3 image channels, got 1"),
    ("unet-latent-channels", "models", "LatentDiffusion with a UNet for 4 latent channels on a 3-channel autoencoder",
     lambda t: LatentDiffusion(IdentityAutoencoder(), tiny_unet(4), image_size=16), ValueError,
     r"UNetConfig\(in_channels=3, out_channels=3\)"),
    ("image-size-vs-f", "models", "LatentDiffusion(image_size=30) on an f=4 autoencoder",
     lambda t: LatentDiffusion(tiny_ae(), tiny_unet(), image_size=30), ValueError, "not divisible by the autoencoder's f=4"),
    ("other-kind", "models", "LatentDiffusion.from_pretrained on an autoencoder folder",
     lambda t: (tiny_ae().save_pretrained(t / "ae"), LatentDiffusion.from_pretrained(t / "ae")), CheckpointError,
     r"holds a Autoencoder.*Autoencoder\.from_pretrained"),
    ("truncated-safetensors", "models", "a model.safetensors cut short",
     lambda t: ((saved(t) / "model.safetensors").write_bytes((saved(t) / "model.safetensors").read_bytes()[:100]),
                LatentDiffusion.from_pretrained(t / "m")), CheckpointError, "not a readable safetensors file.*corrupt"),
    ("corrupt-config", "models", "a config.json that is not JSON",
     lambda t: ((saved(t) / "config.json").write_text("{"), LatentDiffusion.from_pretrained(t / "m")),
     CheckpointError, "not valid JSON.*corrupt"),
    ("newer-format", "models", "a checkpoint written by a newer ldm_lite",
     lambda t: ((saved(t) / "config.json").write_text((saved(t) / "config.json").read_text().replace('"format": 1', '"format": 99')),
                LatentDiffusion.from_pretrained(t / "m")), CheckpointError, "newer ldm_lite.*upgrade"),
    ("unknown-config-field", "models", "a config.json with a field this version does not know",
     lambda t: ((saved(t) / "config.json").write_text((saved(t) / "config.json").read_text().replace('"T":', '"warp": 1, "T":')),
                LatentDiffusion.from_pretrained(t / "m")), CheckpointError, r"\['warp'\] are not fields"),
    ("pickle-checkpoint", "models", "a torch.save pickle that would run code, given as model.safetensors",
     lambda t: ((saved(t) / "model.safetensors").write_bytes(pickle.dumps(Evil())),
                LatentDiffusion.from_pretrained(t / "m")), CheckpointError, "not a readable safetensors"),
    ("symlink-outside", "models", "a checkpoint whose weights are a symlink to a file outside it",
     lambda t: ((saved(t) / "model.safetensors").unlink(), (t / "m" / "model.safetensors").symlink_to("/etc/hostname"),
                LatentDiffusion.from_pretrained(t / "m")), CheckpointError, "symlink.*outside the checkpoint folder"),
    ("not-a-folder", "models", "from_pretrained('missing')", lambda t: LatentDiffusion.from_pretrained(t / "missing"),
     CheckpointError, "is not a folder; pass the folder written by save_pretrained"),
    # ------------------------------------------------------------------ sampling
    ("steps-0", "sampling", "sample(steps=0)", lambda t: tiny_ldm().sample(1, steps=0), ValueError,
     "steps=0 must be between 1 and T=1000"),
    ("steps-over-T", "sampling", "sample(steps=2000)", lambda t: tiny_ldm().sample(1, steps=2000), ValueError,
     "steps=2000 must be between 1 and T=1000"),
    ("unknown-sampler", "sampling", "sample(sampler='euler')", lambda t: tiny_ldm().sample(1, sampler="euler"),
     ValueError, "unknown sampler 'euler'; known"),
    ("negative-guidance", "sampling", "sample(labels=..., guidance_scale=-1) (ran silently before)",
     lambda t: ll.samplers.guided(lambda z, tt, c: z, -1.0, None), ValueError, "must be >= 0.*negative prompt"),
    ("eta-out-of-range", "sampling", "ddim(eta=2) (ran silently before)",
     lambda t: tiny_ldm().sample(1, steps=2, eta=2.0), ValueError, r"eta=2.0 must lie in \[0, 1\]"),
    ("labels-on-unconditional", "sampling", "sample(labels=[1]) on an unconditional model (ignored before)",
     lambda t: tiny_ldm().sample(labels=[1], steps=2), ValueError, "unconditional"),
    ("n-missing", "sampling", "sample() on an unconditional model without n", lambda t: tiny_ldm().sample(steps=2),
     ValueError, "pass n"),
    # ------------------------------------------------------------------ training
    ("batch-over-dataset", "training", "train_ldm(batch_size=64) on 8 images", lambda t: _train_ldm(batch_size=64),
     ValueError, "fewer than batch_size=64; lower batch_size"),
    ("lr-not-positive", "training", "train_ldm(lr=0)", lambda t: _train_ldm(lr=0.0), ValueError,
     "learning rate must be > 0"),
    ("nan-data", "training", "a dataset whose images hold NaN",
     lambda t: ll.train.train_ldm(tiny_ldm(), NaNData(), steps=2, batch_size=4, progress=False, device="cpu"),
     ll.fit.TrainingDiverged, "loss became nan at step 0; stopped"),
    ("cuda-without-gpu", "training", "device='cuda' on a machine without a GPU",
     lambda t: ll.runtime.pick_device("cuda"), ValueError, "no usable CUDA GPU; use device='auto'"),
    ("unknown-device", "training", "device='gpu'", lambda t: ll.runtime.pick_device("gpu"), ValueError,
     "unknown device 'gpu'.*cuda"),
    ("ae-norm-groups", "training", "train-ae --base-channels 8 (not divisible by the 16 norm groups)",
     lambda t: AutoencoderConfig.kl(f=4, base_channels=8), ValueError, "not divisible by norm_groups=16"),
    # ------------------------------------------------------------------ CLI
    ("cli-unknown-option", "CLI", "ldm-lite sample --temperature 2",
     lambda t: _cli_expect(["sample", "--model", "x", "--temperature", "2"], 2, "unrecognized arguments: --temperature"),
     None, None),
    ("cli-unknown-stage", "CLI", "ldm-lite trian-ldm", lambda t: _cli_expect(["trian-ldm"], 2, "invalid choice"),
     None, None),
    ("cli-out-not-writable", "CLI", "ldm-lite train-ae --name x with outputs/ under a regular file",
     lambda t: ((t / "file").write_text("x"), _cli_expect_env(t)), None, None),
]


def _cli_expect_env(t: Path):
    import os

    env = {**os.environ, "LDM_LITE_OUTPUTS": str(t / "file" / "outputs"), "LDM_LITE_SMOKE": "1"}
    proc = subprocess.run([sys.executable, "-m", "ldm_lite.cli", "train-ae", "--steps", "1", "--n-train", "4",
                           "--batch-size", "2", "--loss", "short"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "cannot create the output folder" in proc.stderr and "choose a writable" in proc.stderr and "autoencoder:" not in proc.stderr, proc.stderr[-1500:]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(case, tmp_path, capsys):
    _id, _area, _what, fn, exc, pattern = case
    if exc is None:  # the case checks a subprocess itself
        fn(tmp_path)
        return
    with pytest.raises(exc, match=re.compile(pattern, re.S)):
        fn(tmp_path)
    assert "pickle code ran" not in capsys.readouterr().out


def test_odd_but_valid_images_load_as_the_model_expects(tmp_path):
    """Grayscale, RGBA and 16-bit images are converted, not rejected: (3, R, R) in [-1, 1]."""
    grey16 = Image.fromarray((np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16))
    rgba = Image.new("RGBA", (40, 32), (255, 0, 0, 0))  # fully transparent red -> black
    d = folder(tmp_path, {"g.png": Image.new("L", (32, 32), 128), "r.png": rgba, "w.png": grey16})
    ds = ll.datasets.image_folder(d, resolution=16)
    items = {Path(f).name: ds[i]["image"] for i, f in enumerate(ds.files)}
    for x in items.values():
        assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1
    assert torch.allclose(items["r.png"], torch.full_like(items["r.png"], -1.0))  # transparent -> black background
    w = items["w.png"]
    assert w.min() < -0.8 and w.max() > 0.8  # the 16-bit ramp keeps its range (clipping would make it all white)


def test_the_docs_table_lists_every_case():
    text = DOC.read_text()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in text]
    assert not missing, f"docs/bad_inputs.md lacks rows for {missing}; regenerate it (see its header)"
    assert len(CASES) >= 30


if __name__ == "__main__":  # regenerate docs/bad_inputs.md from CASES
    rows = [f"| `{c[0]}` | {c[1]} | {c[2]} | {c[4].__name__ if c[4] else 'exit code 2'} |" for c in CASES]
    DOC.write_text(
        "# Bad inputs and the errors they give\n\nEach row is a test case in `tests/test_bad_inputs.py` (regenerate this "
        "table with `python tests/test_bad_inputs.py`). Every error names what to change; nothing is lost: checkpoints "
        "are written atomically (`tests/test_crash_safety.py`). Image folders: an unreadable or truncated file stops "
        "with the file's name (skipping it would silently change the dataset); grayscale, RGBA (transparent = black) "
        "and 16-bit images are converted. Widgets: a failing callback shows its error in the panel "
        "(`tests/test_widgets.py`).\n\n| case | area | what the user did | error |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    print(f"wrote {DOC} ({len(rows)} cases)")

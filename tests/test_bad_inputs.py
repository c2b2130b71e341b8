"""Bad input gets an error that says what to change (issue 8): one row per case, the same rows as the table in
docs/bad_inputs.md (a test keeps the two in sync). Each case builds its own small input and expects the exception
type and a message fragment that names the fix."""

from __future__ import annotations

import functools
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
from ldm_lite.errors import NonFiniteError, UsageError
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.spatial import sdedit
from ldm_lite.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad_inputs.md"
PRETRAINED = ROOT / "data" / "pretrained"
NAN, INF = float("nan"), float("inf")


@functools.cache
def shipped(name: str) -> LatentDiffusion:
    """A shipped model (they load in well under a second; sampling is never reached by an error case)."""
    return LatentDiffusion.from_pretrained(PRETRAINED / name)


def text_model():
    return shipped("ldm-kl-f4-shapes32-text")


def class_model():  # MNIST digits: 10 classes
    return shipped("ldm-kl-f4-mnist32-class")


def images(b=1, side=32, value=0.0):
    return torch.full((b, 3, side, side), value)


def with_nan(x, index=(0, 0, 0, 0)):
    x = x.clone()
    x[index] = NAN
    return x


def inpaint_mask(b=1, side=32, value=1.0):
    m = torch.zeros(b, side, side)
    m[:, 8:16, 8:16] = value
    return m


def nan_weights(t: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = saved(t) / "model.safetensors"
    state = load_file(str(path))
    state["unet.conv_in.weight"][0, 0, 0, 0] = NAN
    save_file(state, str(path))
    LatentDiffusion.from_pretrained(t / "m")


def diverging_denoiser(z, t, cond):
    """ε̂ = NaN once t < 500: with 5 DDIM steps (t = 800, 600, 400, 200, 0) the latent breaks at step 2."""
    return torch.full_like(z, NAN) if int(t[0]) < 500 else torch.zeros_like(z)


def run_sampler(name="ddim", steps=5, **kw):
    args = {"noise": torch.zeros(1, 3, 4, 4), **kw}
    return ll.samplers.SAMPLERS[name](lambda z, t, c: torch.zeros_like(z), ll.schedule.Schedule.scaled_linear(),
                                      args.pop("noise"), steps, **args)


def _cli_in_process(args, code, *fragments):
    """`ldm_lite.cli.main(args)` in this process (no interpreter start-up): it must exit with `code` and print one
    error line matching `fragments`; any other exception (a traceback) escapes and fails the case."""
    import contextlib
    import io
    import logging

    from ldm_lite import cli as cli_module

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
            cli_module.main([str(a) for a in args])
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    assert info.value.code == code, err.getvalue()[-1000:]
    errors = [line for line in err.getvalue().splitlines() if "error:" in line]
    assert len(errors) == 1, err.getvalue()[-1000:]
    for f in fragments:
        assert re.search(f, errors[0]), errors[0]


def cli_main_raising(exc: Exception) -> None:
    """`ldm_lite.cli.main` with a stage that raises `exc`: a bug must escape with its traceback (not exit 2)."""
    from ldm_lite import cli

    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv=None):
        args = original(argv)
        args.func = lambda a: (_ for _ in ()).throw(exc)
        return args

    parser.parse_args = parse
    real = cli.build_parser
    cli.build_parser = lambda: parser
    try:
        cli.main(["tour"])
    finally:
        cli.build_parser = real


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
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-1000:]  # one line says what went wrong
    for f in fragments:
        assert re.search(f, errors[0]), proc.stderr[-1000:]


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
    ("cond-drop-prob-over-1", "models", "LatentDiffusion(..., cond_drop_prob=10) (a percentage?)",
     lambda t: LatentDiffusion(IdentityAutoencoder(), tiny_unet(), image_size=16, cond_drop_prob=10), ValueError,
     r"cond_drop_prob must lie in \[0, 1\], got 10"),
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
    ("nan-weights", "models", "from_pretrained of a checkpoint whose weights hold NaN (all-NaN samples before)",
     nan_weights, CheckpointError, r"tensor 'unet.conv_in.weight' .* holds 1 NaN"),
    ("encode-uint8", "models", "ae.encode(<uint8 image>)",
     lambda t: tiny_ae().encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)), TypeError, r"uint8.*127.5 - 1"),
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
     r"steps must lie in \[1, 1000\], got 0"),
    ("steps-over-T", "sampling", "sample(steps=2000)", lambda t: tiny_ldm().sample(1, steps=2000), ValueError,
     r"steps must lie in \[1, 1000\], got 2000"),
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
    ("steps-float", "sampling", "sample(steps=10.5) (ran 11 steps before)", lambda t: tiny_ldm().sample(1, steps=10.5),
     TypeError, "steps must be an int, got 10.5"),
    ("steps-string", "sampling", "sample(steps='50')", lambda t: tiny_ldm().sample(1, steps="50"), TypeError,
     "steps must be an int, got '50'"),
    ("n-0", "sampling", "sample(0)", lambda t: tiny_ldm().sample(0, steps=2), ValueError, "n must be >= 1, got 0"),
    ("n-float", "sampling", "sample(2.0)", lambda t: tiny_ldm().sample(2.0, steps=2), TypeError, r"n must be an int.*n=2"),
    ("guidance-inf", "sampling", "sample(labels=[1], guidance_scale=inf) (all-NaN images before)",
     lambda t: class_model().sample(labels=[1], guidance_scale=INF, steps=2), NonFiniteError,
     "guidance_scale must be a finite number, got inf"),
    ("guidance-nan-guided", "sampling", "samplers.guided(denoiser, nan, uncond)",
     lambda t: ll.samplers.guided(lambda z, tt, c: z, NAN, None), NonFiniteError, "guidance_scale must be a finite"),
    ("guidance-string", "sampling", "sample(guidance_scale='3')",
     lambda t: class_model().sample(labels=[1], guidance_scale="3", steps=2), TypeError,
     "guidance_scale must be a number, got '3'"),
    ("generator-string", "sampling", "sample(generator='0') (an int is a seed; see the notes)",
     lambda t: tiny_ldm().sample(1, steps=2, generator="0"), TypeError,
     r"generator must be a torch.Generator, an int seed or None"),
    ("generator-negative-seed", "sampling", "sample(generator=-1)", lambda t: tiny_ldm().sample(1, steps=2, generator=-1),
     ValueError, "negative seed"),
    ("callback-not-callable", "sampling", "sample(callback=print_me) with a string",
     lambda t: tiny_ldm().sample(1, steps=2, callback="print"), TypeError, "callback must be a function"),
    ("noise-shape", "sampling", "sample(2, noise=<latents for 3 images>)",
     lambda t: tiny_ldm().sample(2, steps=2, noise=torch.zeros(3, 3, 16, 16)), ValueError,
     r"noise must be latents of shape \(2, 3, 16, 16\)"),
    ("noise-nan", "sampling", "sample(noise=<z_T holding NaN>)",
     lambda t: tiny_ldm().sample(1, steps=2, noise=with_nan(torch.zeros(1, 3, 16, 16))), NonFiniteError,
     "noise holds 1 NaN"),
    ("sampler-option-unknown", "sampling", "sample(temperature=2) (a TypeError deep in the sampler before)",
     lambda t: tiny_ldm().sample(1, steps=2, temperature=2.0), TypeError,
     "sampler 'ddim' has no option temperature; its options: eta, spacing"),
    ("ddpm-eta", "sampling", "sample(sampler='ddpm', eta=1) (eta is a DDIM option)",
     lambda t: tiny_ldm().sample(1, steps=2, sampler="ddpm", eta=1.0), TypeError, "sampler 'ddpm' has no option eta"),
    ("size-not-int", "sampling", "sample(size=32.0)", lambda t: tiny_ldm().sample(1, steps=2, size=32.0), TypeError,
     "size must be an int"),
    ("batch-not-dict", "sampling", "sample(batch=['a red circle']) on a text model",
     lambda t: text_model().sample(batch=["a red circle"], steps=2), TypeError, "batch must be a dict"),
    ("labels-null-value", "conditions", "labels=[10] on the 10-class model (sampled ∅ silently before)",
     lambda t: class_model().sample(labels=[10], steps=2), ValueError,
     r"labels must lie in 0..9.*got \[10\].*guidance_scale=0"),
    ("labels-fractional", "conditions", "labels=[2.7, 3.2] (truncated to 2, 3 before)",
     lambda t: class_model().sample(labels=[2.7, 3.2], steps=2), ValueError, r"labels must be whole class indices"),
    ("labels-scalar", "conditions", "labels=3 (one int, not a list)", lambda t: class_model().sample(labels=3, steps=2),
     TypeError, r"labels must be a list.*labels=\[3\]"),
    ("labels-negative", "conditions", "labels=[-1]", lambda t: class_model().sample(labels=[-1], steps=2), ValueError,
     r"labels must lie in 0..9.*got \[-1\]"),
    ("labels-2d", "conditions", "labels=[[1, 2]]", lambda t: class_model().sample(labels=[[1, 2]], steps=2), ValueError,
     r"labels must be a non-empty 1-D list"),
    ("labels-strings", "conditions", "labels=['seven']", lambda t: class_model().sample(labels=["seven"], steps=2),
     TypeError, "labels must be a tensor"),
    ("labels-nan", "conditions", "labels=[nan]", lambda t: class_model().sample(labels=[NAN], steps=2),
     NonFiniteError, "labels holds 1 NaN"),
    ("prompts-not-strings", "conditions", "prompts=[1, 2]", lambda t: text_model().sample(prompts=[1, 2], steps=2),
     TypeError, "prompts must hold strings, got 1 .* at index 0"),
    ("prompts-empty", "conditions", "prompts=[]", lambda t: text_model().sample(prompts=[], steps=2), ValueError,
     "prompts is empty"),
    ("negative-count", "conditions", "3 negative_prompts for 2 prompts at guidance 3",
     lambda t: text_model().sample(prompts=["a red circle"] * 2, negative_prompts=["a blue star"] * 3,
                                   guidance_scale=3.0, steps=2), ValueError, "3 negative conditions for 2 images"),
    ("negative-at-guidance-1", "conditions", "negative_prompts at guidance_scale=1 (ignored before, any count)",
     lambda t: text_model().sample(prompts=["a red circle"] * 2, negative_prompts=["x"] * 5, steps=2), ValueError,
     "negative_prompts / negative_batch act only through guidance.*guidance_scale > 1"),
    ("negative-on-class-model", "conditions", "negative_prompts on a class-conditional model",
     lambda t: class_model().sample(labels=[1], negative_prompts=["a seven"], guidance_scale=3.0, steps=2),
     ValueError, "negative_prompts need a text-conditional model"),
    ("condition-not-taken", "conditions", "sample(low_res=...) on a text model",
     lambda t: text_model().sample(low_res=images(1, 8), steps=2), ValueError,
     r"TextConditioner\) takes prompts=.*not low_res"),
    ("condition-missing", "conditions", "sample(4) on a class-conditional model",
     lambda t: class_model().sample(4, steps=2), ValueError, r"conditional \(ClassConditioner\): pass labels=\["),
    ("n-vs-condition", "conditions", "sample(3, prompts=<2 prompts>)",
     lambda t: text_model().sample(3, prompts=["a red circle"] * 2, steps=2), ValueError,
     "n=3 but the condition holds 2 items"),
    ("layout-nan-box", "conditions", "a layout box with a NaN coordinate (all-NaN images before)",
     lambda t: shipped("ldm-kl-f4-shapes32-layout").sample(layout=([[[0.1, NAN, 0.5, 0.5]]], [[0]]), steps=2),
     NonFiniteError, "boxes holds 1 NaN"),
    ("layout-not-pair", "conditions", "layout=<boxes only>",
     lambda t: shipped("ldm-kl-f4-shapes32-layout").sample(layout=[[[0.1, 0.1, 0.5, 0.5]]], steps=2), ValueError,
     r"layout must be a pair \(boxes"),
    ("layout-fractional-class", "conditions", "box_labels=[[1.5]]",
     lambda t: shipped("ldm-kl-f4-shapes32-layout").sample(layout=([[[0.1, 0.1, 0.5, 0.5]]], [[1.5]]), steps=2),
     ValueError, "box_labels must be whole class indices"),
    ("sr-nan-pixel", "image-to-image", "one NaN pixel in a super-resolution input (all-NaN output before)",
     lambda t: shipped("ldm-sr4-bicubic-shapes32").sample(low_res=with_nan(images(1, 8)), steps=2), NonFiniteError,
     "low_res holds 1 NaN"),
    ("sr-0-255", "image-to-image", "a super-resolution input in 0..255 (used as it was before)",
     lambda t: shipped("ldm-sr4-bicubic-shapes32").sample(low_res=images(1, 8, 200.0), steps=2), ValueError,
     r"low_res must lie in \[-1, 1\].*looks like 0..255.*127.5"),
    ("sr-0-1", "image-to-image", "a super-resolution input in [0, 1.2]",
     lambda t: shipped("ldm-sr4-bicubic-shapes32").sample(low_res=images(1, 8, 1.2), steps=2), ValueError,
     r"low_res must lie in \[-1, 1\].*rescale"),
    ("sr-uint8", "image-to-image", "a uint8 super-resolution input",
     lambda t: shipped("ldm-sr4-bicubic-shapes32").sample(low_res=torch.zeros(1, 3, 8, 8, dtype=torch.uint8), steps=2),
     TypeError, r"low_res is a uint8 image.*127.5 - 1"),
    ("sr-one-image", "image-to-image", "low_res=<one image (3, h, w) without the batch axis>",
     lambda t: shipped("ldm-sr4-bicubic-shapes32").sample(low_res=torch.zeros(3, 8, 8), steps=2), ValueError,
     r"low_res\[None\]"),
    ("inpaint-image-only", "image-to-image", "inpainting with image= but no mask=",
     lambda t: shipped("ldm-inpaint-shapes32").sample(image=images(), steps=2), ValueError,
     "needs both the image and the mask"),
    ("inpaint-mask-soft", "image-to-image", "an inpainting mask of 0.5s",
     lambda t: shipped("ldm-inpaint-shapes32").sample(image=images(), mask=inpaint_mask(value=0.5), steps=2),
     ValueError, r"mask must be binary.*mask > 0.5"),
    ("inpaint-mask-nan", "image-to-image", "an inpainting mask holding NaN",
     lambda t: shipped("ldm-inpaint-shapes32").sample(image=images(), mask=with_nan(inpaint_mask(), (0, 0, 0)), steps=2),
     NonFiniteError, "mask holds 1 NaN"),
    ("inpaint-image-0-255", "image-to-image", "an image to inpaint in 0..255",
     lambda t: shipped("ldm-inpaint-shapes32").sample(image=images(1, 32, 255.0), mask=inpaint_mask(), steps=2),
     ValueError, "image must lie in .*looks like 0..255"),
    ("inpaint-mask-size", "image-to-image", "a 16x16 mask for a 32x32 image",
     lambda t: shipped("ldm-inpaint-shapes32").sample(image=images(), mask=inpaint_mask(side=16), steps=2),
     ValueError, r"mask must be \(B, H, W\) = \(1, 32, 32\)"),
    ("semantic-unknown-class", "image-to-image", "a semantic map holding class 9 of 7",
     lambda t: shipped("ldm-semantic-shapes32").sample(semantic_map=torch.full((1, 32, 32), 9), steps=2), ValueError,
     r"semantic_map .*holds unknown classes \[9\]"),
    ("semantic-fractional", "image-to-image", "a semantic map of fractional values",
     lambda t: shipped("ldm-semantic-shapes32").sample(semantic_map=torch.full((1, 32, 32), 0.5), steps=2),
     ValueError, "semantic_map .*fractional"),
    ("sdedit-0-255", "image-to-image", "SDEdit of an image in 0..255 (used as it was before)",
     lambda t: sdedit(shipped("ldm-kl-f4-shapes32"), images(1, 32, 128.0), 0.5), ValueError,
     r"images must lie in \[-1, 1\].*looks like 0..255"),
    ("sdedit-strength-nan", "image-to-image", "sdedit(strength=nan)",
     lambda t: sdedit(shipped("ldm-kl-f4-shapes32"), images(), NAN), NonFiniteError, "strength must be a finite"),
    ("sdedit-strength-string", "image-to-image", "sdedit(strength='0.5')",
     lambda t: sdedit(shipped("ldm-kl-f4-shapes32"), images(), "0.5"), TypeError, "strength must be a number"),
    ("sdedit-condition-missing", "image-to-image", "sdedit on a class-conditional model without labels",
     lambda t: sdedit(class_model(), images(), 0.5), ValueError, r"conditional \(ClassConditioner\): pass labels="),
    ("sdedit-batch-on-unconditional", "image-to-image", "sdedit(batch={'label': ...}) on an unconditional model "
     "(ignored before)", lambda t: sdedit(shipped("ldm-kl-f4-shapes32"), images(), 0.5, batch={"label": [1]}),
     ValueError, "unconditional: it cannot follow batch"),
    ("keep-known-shape", "samplers", "samplers.keep_known with a mask of another size",
     lambda t: ll.samplers.keep_known(lambda z, tt, c: z, ll.schedule.Schedule.linear(), torch.zeros(1, 3, 8, 8),
                                      torch.ones(1, 1, 4, 4)), ValueError, "keep must be a 0/1 mask"),
    ("sdedit-steps-float", "image-to-image", "sdedit(steps=2.5)",
     lambda t: sdedit(shipped("ldm-kl-f4-shapes32"), images(), 0.5, steps=2.5), TypeError, "steps must be an int"),
    ("sampler-steps-float", "samplers", "samplers.ddim(..., steps=10.5)", lambda t: run_sampler("ddim", 10.5),
     TypeError, "steps must be an int, got 10.5"),
    ("sampler-ddpm-steps-0", "samplers", "samplers.ddpm(..., steps=0) (ran all T steps before)",
     lambda t: run_sampler("ddpm", 0), ValueError, r"steps must lie in \[1, 1000\], got 0"),
    ("sampler-noise-nan", "samplers", "samplers.plms(noise=<z_T holding NaN>)",
     lambda t: run_sampler("plms", noise=with_nan(torch.zeros(1, 3, 4, 4))), NonFiniteError, "noise holds 1 NaN"),
    ("sampler-generator-type", "samplers", "samplers.ddpm(generator=np.random.default_rng(0))",
     lambda t: run_sampler("ddpm", generator=np.random.default_rng(0)), TypeError, "generator must be a torch.Generator"),
    ("sampler-diverges", "samplers", "a denoiser that returns NaN (stops with the step and t)",
     lambda t: ll.samplers.ddim(diverging_denoiser, ll.schedule.Schedule.scaled_linear(), torch.zeros(1, 3, 4, 4), 5,
                                spacing="leading"), NonFiniteError, r"ddim: the latent became NaN/inf at step 2 of 5 \(t=400\)"),
    # ------------------------------------------------------------------ training
    ("batch-over-dataset", "training", "train_ldm(batch_size=64) on 8 images", lambda t: _train_ldm(batch_size=64),
     ValueError, "fewer than batch_size=64; lower batch_size"),
    ("lr-not-positive", "training", "train_ldm(lr=0)", lambda t: _train_ldm(lr=0.0), ValueError,
     "learning rate must be > 0"),
    ("nan-data", "training", "a dataset whose images hold NaN",
     lambda t: ll.train.train_ldm(tiny_ldm(), NaNData(), steps=2, batch_size=4, progress=False, device="cpu"),
     ll.fit.TrainingDiverged, "loss became nan at step 0; stopped"),
    ("train-steps-float", "training", "train_ldm(steps=2.5)", lambda t: _train_ldm(steps=2.5), TypeError,
     "steps must be an int, got 2.5"),
    ("train-lr-nan", "training", "train_ldm(lr=nan)", lambda t: _train_ldm(lr=NAN), NonFiniteError,
     "lr must be a finite number"),
    ("train-batch-size-0", "training", "train_ldm(batch_size=0)", lambda t: _train_ldm(batch_size=0), ValueError,
     "batch_size must be >= 1, got 0"),
    ("train-ema-over-1", "training", "train_ldm(ema=1.5)", lambda t: _train_ldm(ema=1.5), ValueError,
     r"ema is the decay .* in \(0, 1\)"),
    ("train-dataset-name", "training", "train_ldm(ldm, 'shapes') (a name, not a dataset)",
     lambda t: ll.train.train_ldm(tiny_ldm(), "shapes", steps=1), TypeError, r"dataset must be .*got 'shapes'"),
    ("train-ae-dataset-name", "training", "train_autoencoder(ae, 'shapes')",
     lambda t: ll.train.train_autoencoder(tiny_ae(), "shapes", steps=1), TypeError, r"dataset must be .*got 'shapes'"),
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
    ("cli-sample-n-0", "CLI", "ldm-lite sample --n 0 (ZeroDivisionError before)",
     lambda t: _cli_in_process(["sample", "--model", str(PRETRAINED / "ldm-kl-f4-shapes32"), "--n", "0"], 2,
                           "argument --n: must be >= 1, got 0"), None, None),
    ("cli-sample-out-folder", "CLI", "ldm-lite sample --out <an existing folder> (wrote <folder>.png before)",
     lambda t: _cli_in_process(["sample", "--model", str(PRETRAINED / "ldm-kl-f4-shapes32"), "--out", str(t)], 2,
                           r"error: --out .* is a folder; give a file name"), None, None),
    ("cli-hub-offline", "CLI", "ldm-lite train-ldm --dataset hub:x offline (a traceback before)",
     lambda t: _cli_in_process(["train-ldm", "--ae", str(PRETRAINED / "ae-kl-f4-shapes32"), "--dataset", "hub:x",
                            "--steps", "1", "--out", str(t / "o")], 2, r"^ldm-lite train-ldm: error: cannot load 'x'"),
     None, None),
    ("cli-labels-not-ints", "CLI", "ldm-lite sample --labels one,two",
     lambda t: _cli_in_process(["sample", "--model", "x", "--labels", "one,two"], 2, "comma-separated class indices"),
     None, None),
    ("cli-guidance-inf", "CLI", "ldm-lite sample --labels 1 --guidance inf (NaN images before)",
     lambda t: _cli_in_process(["sample", "--model", str(PRETRAINED / "ldm-kl-f4-mnist32-class"), "--labels", "1",
                            "--guidance", "inf", "--out", str(t / "x.png")], 2, "guidance_scale must be a finite"),
     None, None),
    ("cli-model-missing", "CLI", "ldm-lite sample --model does/not/exist",
     lambda t: _cli_in_process(["sample", "--model", str(t / "nope"), "--out", str(t / "x.png")], 2, "no such folder"),
     None, None),
    ("cli-bug-keeps-traceback", "CLI", "a bug inside a stage (e.g. a plain ValueError) is not hidden as exit 2",
     lambda t: cli_main_raising(ValueError("an internal bug")), ValueError, "an internal bug"),
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


# ------------------------------------------------------------------ every public signature, argument by argument
def _sample(**kw):
    return tiny_ldm().sample(**{"n": 1, "steps": 2, **kw})


def _sdedit(**kw):
    args = {"ldm": tiny_ldm(), "images": torch.zeros(1, 3, 16, 16), "strength": 0.5, "steps": 2, **kw}
    return sdedit(args.pop("ldm"), args.pop("images"), args.pop("strength"), **args)


def _sampler(name):
    def call(**kw):
        args = {"denoiser": lambda z, t, c: torch.zeros_like(z), "schedule": ll.schedule.Schedule.scaled_linear(),
                "noise": torch.zeros(1, 3, 4, 4), "steps": 3, **kw}
        return ll.samplers.SAMPLERS[name](args.pop("denoiser"), args.pop("schedule"), args.pop("noise"),
                                          args.pop("steps"), **args)
    return call


def _train_ldm_kw(**kw):
    return ll.train.train_ldm(tiny_ldm(), torch.zeros(8, 3, 16, 16), **{"steps": 1, "batch_size": 4, "progress": False,
                                                                        "device": "cpu", **kw})


def _train_ae_kw(**kw):
    return ll.train.train_autoencoder(tiny_ae(), torch.zeros(8, 3, 32, 32), **{"steps": 1, "batch_size": 4,
                                                                               "progress": False, "device": "cpu", **kw})


NAN_Z = with_nan(torch.zeros(1, 3, 4, 4))
SIGNATURES = {  # public call -> (argument, a wrong value) pairs; each must raise ValueError/TypeError naming it
    "LatentDiffusion.sample": (_sample, [
        ("n", "2"), ("n", -3), ("n", 1.5), ("steps", 2.5), ("steps", None), ("steps", True), ("guidance_scale", "x"),
        ("guidance_scale", NAN), ("guidance_scale", -INF), ("generator", "x"), ("generator", 1.5), ("callback", 3),
        ("size", "32"), ("size", 0), ("sampler", 3), ("sampler", "Euler"), ("noise", "z"),
        ("noise", torch.zeros(1, 3, 16, 16, dtype=torch.long)), ("eta", "x"), ("eta", NAN), ("eta", 1.5),
        ("offset", 0.5), ("known", 3), ("batch", [1]), ("labels", [1]), ("prompts", ["x"]), ("layout", 1),
        ("low_res", torch.zeros(1, 3, 4, 4)), ("semantic_map", torch.zeros(1, 16, 16)),
        ("negative_prompts", ["x"])]),
    "spatial.sdedit": (_sdedit, [
        ("images", "x"), ("images", torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), ("images", torch.zeros(3, 16, 16)),
        ("images", with_nan(torch.zeros(1, 3, 16, 16))), ("strength", 2.0), ("strength", None), ("steps", 0),
        ("generator", "g"), ("sampler", "euler"), ("guidance_scale", -1.0), ("noise", torch.zeros(2, 3, 16, 16))]),
    **{f"samplers.{name}": (_sampler(name), [
        ("steps", 2.5), ("steps", "4"), ("steps", 0), ("steps", 5000), ("noise", "z"), ("noise", NAN_Z),
        ("generator", "g"), ("callback", 1), ("offset", 0.5), ("prediction", "x0"), ("denoiser", None),
        ("schedule", "linear")]) for name in ll.samplers.SAMPLERS},
    "train.train_ldm": (_train_ldm_kw, [
        ("steps", "5"), ("steps", -1), ("batch_size", 2.5), ("lr", "1e-3"), ("lr", INF), ("warmup", -1),
        ("weight_decay", -1.0), ("grad_clip", "1"), ("ema", 2.0), ("checkpoint_every", 1.5), ("seed", "0"),
        ("max_seconds", -1.0), ("min_steps", -1), ("log_every", 0), ("dataset", 3)]),
    "train.train_autoencoder": (_train_ae_kw, [
        ("steps", -1), ("batch_size", 0), ("lr", 0.0), ("ema", 2.0), ("seed", 0.5), ("dataset", "x")]),
    "LatentDiffusion": (lambda **kw: LatentDiffusion(IdentityAutoencoder(), tiny_unet(), **{"image_size": 16, **kw}), [
        ("image_size", "16"), ("image_size", 0), ("T", 10.0), ("cond_drop_prob", 1.5), ("cond_drop_prob", NAN),
        ("schedule", 3), ("schedule", "quadratic"), ("prediction", "x0")]),
    "datasets.shapes": (lambda **kw: ll.datasets.shapes(**{"resolution": 32, "n": 4, **kw}), [
        ("resolution", "32"), ("resolution", 7), ("n", 2.5), ("n", 0)]),
    "datasets.image_folder": (lambda **kw: ll.datasets.image_folder(**kw), [("path", 3)]),
    **{f"Schedule.{name}": (getattr(ll.schedule.Schedule, name), [("T", 10.5), ("T", "1000")])
       for name in ("linear", "scaled_linear", "cosine")},
    "AutoencoderConfig.kl": (lambda **kw: AutoencoderConfig.kl(**kw), [("f", "4"), ("f", 3), ("f", 4.0)]),
    "LatentDiffusion.from_pretrained": (lambda directory: LatentDiffusion.from_pretrained(directory),
                                        [("directory", 42), ("directory", None)]),
}
SIGNATURE_CASES = [(call, arg, bad) for call, (_, pairs) in SIGNATURES.items() for arg, bad in pairs]


@pytest.mark.parametrize("call, arg, bad", SIGNATURE_CASES,
                         ids=[f"{c}-{a}={str(b)[:12]}" for c, a, b in SIGNATURE_CASES])
def test_every_public_argument_is_checked(call, arg, bad):
    """A wrong type or value for any argument of a public call raises ValueError/TypeError naming the argument."""
    fn = SIGNATURES[call][0]
    if call.startswith("train.") and arg == "dataset":
        with pytest.raises((ValueError, TypeError)) as info:
            (ll.train.train_ldm(tiny_ldm(), bad, steps=1) if call == "train.train_ldm"
             else ll.train.train_autoencoder(tiny_ae(), bad, steps=1))
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            fn(**{arg: bad})
    assert isinstance(info.value, UsageError), f"{type(info.value).__name__}: {info.value}"  # the CLI's exit 2
    assert re.search(rf"\b{arg}\b", str(info.value)), str(info.value)


def test_an_int_generator_is_a_seed():
    """generator=5 is torch.Generator().manual_seed(5) (documented in ldm_lite.validation), for sample and samplers."""
    a = tiny_ldm().sample(2, steps=2, generator=5, sampler="ddpm")
    b = tiny_ldm().sample(2, steps=2, generator=torch.Generator().manual_seed(5), sampler="ddpm")
    assert torch.equal(a, b) and not torch.equal(a, tiny_ldm().sample(2, steps=2, generator=6, sampler="ddpm"))


def test_images_within_the_tolerance_are_clamped_not_refused():
    from ldm_lite.validation import check_images

    x = torch.tensor([-1.0005, 0.0, 1.0009]).view(1, 3, 1, 1)
    assert torch.equal(check_images("x", x), torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\], got values in \[-1.002"):
        check_images("x", torch.tensor([-1.002, 0.0, 0.0]).view(1, 3, 1, 1))


def test_a_gpu_sampler_checks_every_few_steps_but_names_the_first_bad_step():
    """Off the CPU the guard records the first non-finite step on the device and reads it every `every` steps and at
    the end; the error still names the step where it happened (simulated here on the CPU)."""
    from ldm_lite.samplers import _FiniteGuard

    ts = list(range(900, -1, -100))  # 10 steps
    guard = _FiniteGuard("ddim", ts, torch.device("cpu"), every=4)
    guard.first = torch.full((), -1)  # the deferred (GPU) path
    ok, bad = torch.zeros(2), torch.tensor([0.0, NAN])
    guard(0, ok)
    guard(1, ok)
    guard(2, bad)  # recorded, not yet read
    with pytest.raises(NonFiniteError, match=r"at step 2 of 10 \(t=700\)"):
        guard(3, ok)  # (3 + 1) % 4 == 0: read now
    late = _FiniteGuard("ddim", ts, torch.device("cpu"), every=100)
    late.first = torch.full((), -1)
    for i in range(9):
        late(i, bad if i >= 7 else ok)
    with pytest.raises(NonFiniteError, match=r"at step 7 of 10 \(t=200\)"):
        late(9, ok)  # the last step always reads


def test_a_sampler_on_a_broken_model_stops_at_once_on_the_cpu():
    calls = []

    def denoiser(z, t, c):
        calls.append(int(t[0]))
        return diverging_denoiser(z, t, c)

    with pytest.raises(NonFiniteError, match="step 2 of 5"):
        ll.samplers.ddim(denoiser, ll.schedule.Schedule.scaled_linear(), torch.zeros(1, 3, 4, 4), 5)
    assert calls == [800, 600, 400]  # no denoiser call after the bad step


def test_the_docs_table_lists_every_case():
    text = DOC.read_text()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in text]
    assert not missing, f"docs/bad_inputs.md lacks rows for {missing}; regenerate it (see its header)"
    assert len(CASES) >= 60


if __name__ == "__main__":  # regenerate docs/bad_inputs.md from CASES
    rows = [f"| `{c[0]}` | {c[1]} | {c[2]} | {c[4].__name__ if c[4] else 'exit code 2'} |" for c in CASES]
    DOC.write_text(
        "# Bad inputs and the errors they give\n\nEach row is a test case in `tests/test_bad_inputs.py` (regenerate this "
        "table with `python tests/test_bad_inputs.py`). Every error names what to change; nothing is lost: checkpoints "
        "are written atomically (`tests/test_crash_safety.py`). Image folders: an unreadable or truncated file stops "
        "with the file's name (skipping it would silently change the dataset); grayscale, RGBA (transparent = black) "
        "and 16-bit images are converted. Widgets: a failing callback shows its error in the panel "
        "(`tests/test_widgets.py`).\n\n"
        "## The boundary (`ldm_lite.errors`, `ldm_lite.validation`)\n\n"
        "Every public call checks its arguments before any work, and the message names the argument, what it got and "
        "what it expects. The errors are `UsageError` (a `ValueError`), `UsageTypeError` (also a `TypeError`) and "
        "`NonFiniteError` (NaN/inf); `CheckpointError` is a `UsageError` too. `test_every_public_argument_is_checked` "
        "feeds a wrong type or value to each argument of `LatentDiffusion.sample`, `spatial.sdedit`, the four "
        "samplers, `train_ldm`, `train_autoencoder` and `from_pretrained`. Choices made:\n\n"
        "- Images are float tensors (B, C, H, W) in [-1, 1]. Up to 1e-3 outside is clamped (rounding); further out is "
        "an error that says how to convert (above 1.5: \"looks like 0..255: use x / 127.5 - 1\"). uint8 images are "
        "refused with that conversion, never converted silently.\n"
        "- Class labels are integers 0..K-1 (whole-number floats pass, 2.7 does not); ∅ is `guidance_scale=0` or "
        "`conditioner.null(B)`, never a label value.\n"
        "- `generator=<int>` is a seed: `torch.Generator().manual_seed(int)` (a CPU generator, so a seed gives the same "
        "samples on every device); any other type is a `TypeError`.\n"
        "- Step counts are ints (`steps=10.5` is an error, not 11 steps); bools are not numbers; `guidance_scale`, "
        "`eta`, `strength` and learning rates must be finite.\n"
        "- `negative_prompts` must hold one prompt per image and need `guidance_scale != 1` (at 1 they would be "
        "ignored).\n"
        "- Non-finite values never pass silently: inputs and conditions are checked at the boundary; "
        "`from_pretrained` names a tensor holding NaN/inf; a sampler whose latent becomes NaN/inf stops with the step "
        "and t (every step on a CPU; on a GPU the first bad step is recorded on the device and read every 10 steps "
        "and after the last, so the check adds no per-step sync); `sample()` never returns an image with NaN.\n"
        "- CLI: a `UsageError` (including checkpoint errors), a missing file or a diverged training run is one line "
        "on stderr and exit code 2; any other exception is a bug and keeps its traceback.\n\n"
        "| case | area | what the user did | error |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    print(f"wrote {DOC} ({len(rows)} cases)")

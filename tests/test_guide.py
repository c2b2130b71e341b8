"""docs/guide.md runs: its ```python blocks, in order, on a tiny image folder, with its size constants made tiny;
its ```bash commands run, on the same folder."""

import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
# the guide's real sizes -> tiny ones (each name must be assigned once in the guide, so the two cannot drift)
TINY = {"RESOLUTION": "32", "BATCH": "4", "AE_STEPS": "2", "LDM_STEPS": "2", "SAMPLE_STEPS": "2", "N_SAMPLES": "4"}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)


def my_images(root: Path) -> Path:
    """Two classes (subfolders) of 10 coloured discs each, with a caption beside every image."""
    colours = {"red": (220, 40, 40), "blue": (40, 60, 220)}
    for name, rgb in colours.items():
        (root / f"{name}s").mkdir(parents=True)
        for i in range(10):
            im = Image.new("RGB", (40, 40), (250, 250, 250))
            r = 6 + i // 2 * 2
            ImageDraw.Draw(im).ellipse((20 - r, 20 - r, 20 + r, 20 + r), fill=rgb)
            im.save(root / f"{name}s" / f"{i:02d}.png")
            (root / f"{name}s" / f"{i:02d}.txt").write_text(f"a {'small' if i < 5 else 'large'} {name} disc")
    return root


def test_every_python_block_of_the_guide_runs(tmp_path, capsys):
    code = blocks("python")
    assert len(code) >= 10
    source = "\n".join(code)
    for name, tiny in {**TINY, "FOLDER": repr(str(my_images(tmp_path / "my_images"))),
                       "OUT": repr(str(tmp_path / "out"))}.items():
        source, n = re.subn(rf"^{name} = .*$", f"{name} = {tiny}", source, flags=re.M)
        assert n == 1, f"{name} is assigned {n} times in the guide"
    torch.manual_seed(0)
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FID from 4 samples warns, as the guide says
        exec(compile(source, str(GUIDE), "exec"), scope)  # noqa: S102 (the guide's own code)
    out = tmp_path / "out"
    for path in ("ae/model/config.json", "ldm/model/model.safetensors", "samples.png", "curves.png",
                 "text/model/config.json", "labels/model/config.json"):
        assert (out / path).exists(), path
    assert scope["classes"] == ["blues", "reds"] and len(scope["train"]) + len(scope["held_out"]) == 20
    assert scope["images"].shape == (8, 3, 32, 32) and scope["more"].shape == (8, 3, 32, 32)
    assert 0 < scope["s"] < 100 and scope["fid"] >= 0
    # the closed-form denoiser: every sampler lands on mu, and the callback saw every step of each
    samplers = scope["ll"].samplers.SAMPLERS
    errors = dict(re.findall(r"^(\w+): max \|z0 - mu\| = (\S+)$", capsys.readouterr().out, flags=re.M))
    assert set(errors) == set(samplers) and all(float(e) < 1e-3 for e in errors.values()), errors
    assert len(scope["seen"]) >= 2 * len(samplers)


def test_every_command_of_the_guide_runs(tmp_path, monkeypatch):
    """The command-line section, in order, on the tiny folder (in this process: no second torch import), with tiny
    sizes appended (argparse takes the last value)."""
    import ldm_lite as ll
    from ldm_lite import cli

    tiny = {"train-ae": "--steps 2 --batch-size 4 --loss short --base-channels 16 --threads 0",
            "train-ldm": "--steps 1 --batch-size 4 --model-channels 32", "sample": "--n 2 --steps 1"}
    commands = [shlex.split(line.split("#")[0]) for block in blocks("bash") for line in block.splitlines()
                if line.startswith("ldm-lite ")]
    assert [c[1] for c in commands] == ["train-ae", "train-ldm", "sample"]
    my_images(tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ll.paths, "OUTPUTS_DIR", tmp_path / "outputs")  # read at call time by recipes and the CLI
    for argv in commands:
        assert cli.main([*argv[1:], *tiny[argv[1]].split()]) == 0, argv
    assert [p.name for p in (tmp_path / "outputs" / "samples").iterdir()] == ["my_images-kl-f4-my_images32-ddim1-seed0.png"]


def test_a_unet_built_for_other_channels_than_the_autoencoder_is_refused_naming_both():
    import ldm_lite as ll

    ae = ll.autoencoder.Autoencoder(ll.autoencoder.AutoencoderConfig.kl(f=4))  # c = 3
    ae.scale_factor.fill_(0.5)  # as if estimated (no ScaleFactorWarning)
    with pytest.raises(ValueError, match=r"UNetConfig\(\) defaults to 4.*latent_channels=3.*in_channels=3"):
        ll.ldm.LatentDiffusion(ae, ll.unet.UNet(ll.unet.UNetConfig(model_channels=32)))
    ll.ldm.LatentDiffusion(ae, ll.unet.UNet(ll.unet.UNetConfig.small(in_channels=ae.latent_channels,
                                                                    model_channels=32)))

"""A newcomer's path through the `ldm-lite` command (issue 22): runs that never collide silently, stages that say
where their output went and what to run next, errors in terms of the command's flags."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import ldm_lite as ll
from ldm_lite import cli
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder


def ldm_lite(*args, tmp_path, expect=0):
    env = {**os.environ, "LDM_LITE_SMOKE": "1", "LDM_LITE_OUTPUTS": str(tmp_path / "outputs"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "ldm_lite.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def ldm_lite_here(*args, tmp_path, monkeypatch, caplog) -> str:
    """The same command in this process (no second torch import): what it logged."""
    monkeypatch.setattr(ll.paths, "OUTPUTS_DIR", tmp_path / "outputs")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ldm_lite"):
        assert cli.main([*map(str, args)]) == 0
    return caplog.text


def error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def tiny_autoencoder(path: Path, f: int) -> Path:
    torch.manual_seed(f)
    ae = Autoencoder(AutoencoderConfig.kl(f=f, base_channels=16))
    ae.scale_factor.fill_(1.5)
    ae.save_pretrained(path / "model")  # a train-ae run folder: <run>/model
    return path


def test_version_and_threads_on_every_stage(capsys):
    with pytest.raises(SystemExit, match="0"):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"ldm-lite {ll.__version__}"
    parser = cli.build_parser()
    stages = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse keeps them there)
    for name in set(stages) - {"bench"}:  # bench runs scripts in their own processes
        argv = {"experiment": [name, "tradeoff"], "evaluate": [name, "--model", "m"], "train": [name, "list"],
                "convert": [name, "compvis", "x.ckpt", "--out", "o"]}.get(name, [name])
        assert parser.parse_args([*argv, "--threads", "3"]).threads == 3, name


def test_runs_on_one_folder_with_two_autoencoders_do_not_collide(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (32, 32), (25 * i, 100, 0)).save(folder / f"{i:02d}.png")
    f4, f8 = tiny_autoencoder(tmp_path / "ae-f4", 4), tiny_autoencoder(tmp_path / "ae-f8", 8)
    common = ["--dataset", folder, "--steps", 1, "--batch-size", 4, "--model-channels", 32]
    here = {"tmp_path": tmp_path, "monkeypatch": monkeypatch, "caplog": caplog}
    first = ldm_lite_here("train-ldm", "--ae", f4, *common, **here)  # a run folder stands for its model/
    runs = tmp_path / "outputs" / "ldm"
    assert (runs / "imgs-ae-f4" / "model" / "config.json").exists()
    assert "imgs: 10 images, the last 1 (10%) held out" in first
    assert re.search(r"ldm: model saved to .*imgs-ae-f4/model\n.*next: ldm-lite sample --model .*imgs-ae-f4/model\n", first)
    ldm_lite_here("train-ldm", "--ae", f8, *common, **here)
    assert sorted(p.name for p in runs.iterdir()) == ["imgs-ae-f4", "imgs-ae-f8"]
    # into the f4 run's folder on purpose: one line naming the field and the two ways out
    clash = error_line(ldm_lite("train-ldm", "--ae", f8, *common, "--out", runs / "imgs-ae-f4", tmp_path=tmp_path,
                                expect=2))
    assert "autoencoder.channel_mult: [1, 2, 2] in the checkpoint, [1, 2, 2, 2] now" in clash
    assert "--out" in clash and "--fresh" in clash and len(clash) < 500
    again = ldm_lite_here("train-ldm", "--ae", f4, *common, **here)
    assert "at step 1 of 1: already trained" in again
    ldm_lite_here("train-ldm", "--ae", f8, *common, "--out", runs / "imgs-ae-f4", "--fresh", **here)
    assert ll.ldm.LatentDiffusion.from_pretrained(runs / "imgs-ae-f4" / "model").autoencoder.f == 8


def test_sample_never_overwrites_what_it_did_not_just_write(tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                             attention_resolutions=(), head_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=8).save_pretrained(tmp_path / "run" / "model")
    args = ["sample", "--model", tmp_path / "run", "--n", 2, "--steps", 1, "--guidance", 1]
    ldm_lite_here(*args, tmp_path=tmp_path, monkeypatch=monkeypatch, caplog=caplog)
    assert "run-ddim1-seed0-2.png (2 images)" in ldm_lite_here(*args, tmp_path=tmp_path, monkeypatch=monkeypatch,
                                                               caplog=caplog)
    samples = tmp_path / "outputs" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["run-ddim1-seed0-2.png", "run-ddim1-seed0.png"]
    refused = error_line(ldm_lite(*args, "--out", samples / "run-ddim1-seed0.png", tmp_path=tmp_path, expect=2))
    assert refused.endswith("exists; pass --overwrite to replace it, or another --out")


def test_sample_sdedit_from_an_image_and_one_png_per_image(tmp_path, monkeypatch, caplog, capsys):
    """--init-image with --strength 0 gives the image back through the (identity) first stage: the PNGs that
    --separate writes are the input, byte for byte; --strength 1 is a new sample."""
    import numpy as np

    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                             attention_resolutions=(), head_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=8).save_pretrained(tmp_path / "m")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "init.png")
    here = {"tmp_path": tmp_path, "monkeypatch": monkeypatch, "caplog": caplog}
    for strength in ("0", "1"):
        ldm_lite_here("sample", "--model", tmp_path / "m", "--init-image", tmp_path / "init.png", "--strength", strength,
                      "--n", 2, "--steps", 2, "--separate", **here)
        folder = tmp_path / "outputs" / "samples" / f"m-ddim2-sdedit-init-s{strength}-seed0"
        assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png"]
        same = np.array_equal(np.asarray(Image.open(folder / "001.png")), pixels)
        assert same == (strength == "0")
    with pytest.raises(SystemExit, match="2"):
        cli.main(["sample", "--model", str(tmp_path / "m"), "--init-image", "x.png", "--strength", "2"])
    assert "argument --strength: must lie in [0, 1]" in capsys.readouterr().err


def test_sample_file_names_say_what_was_asked(tmp_path, monkeypatch, caplog):
    from ldm_lite.conditioning import ClassConditioner, ClassConditionerConfig

    torch.manual_seed(0)
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                             attention_resolutions=(1,), head_dim=32, context_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), ClassConditioner(ClassConditionerConfig(dim=32)),
                           image_size=8).save_pretrained(tmp_path / "cls" / "model")
    logged = ldm_lite_here("sample", "--model", tmp_path / "cls" / "model", "--labels", "0,1", "--guidance", "2",
                           "--steps", 1, "--seed", 7, tmp_path=tmp_path, monkeypatch=monkeypatch, caplog=caplog)
    assert "cls-ddim1-labels0-1-g2-seed7.png (2 images)" in logged
    assert cli._slug("A large red circle!") == "a-large-red-circle"  # noqa: SLF001 (the part a --prompt adds)


def test_errors_name_the_flag_and_missing_folders_say_so(tmp_path, capsys):
    ae = tiny_autoencoder(tmp_path / "ae", 4)
    no_data = error_line(ldm_lite("train-ldm", "--ae", ae, "--dataset", tmp_path / "nope", tmp_path=tmp_path, expect=2))
    assert no_data.endswith(f"--dataset {tmp_path / 'nope'}: no such folder of images ({tmp_path / 'nope'})")
    with pytest.raises(SystemExit, match="2"):
        cli.main(["train-ldm", "--ae", str(tmp_path / "missing")])
    assert capsys.readouterr().err.strip().endswith(f"--ae {tmp_path / 'missing'}: no such folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--model .*empty: no model there .*run folder or the model/ inside it"):
        cli._model_dir(tmp_path / "empty", "--model")  # noqa: SLF001


def test_train_classifier_writes_under_outputs_unless_shipped(tmp_path, monkeypatch):
    from ldm_lite.classifier import ShapesClassifier

    runs, shipped = [], []
    monkeypatch.setattr(ll.paths, "OUTPUTS_DIR", tmp_path / "outputs")
    monkeypatch.setattr(ll.paths, "PRETRAINED_DIR", tmp_path / "pretrained")

    def fake_train(name, out=None, **kw):
        cfg = ll.recipes.config(name, **{k: v for k, v in kw.items() if k not in ("resume", "progress")})
        run = Path(out) if out is not None else ll.recipes.default_out(name, cfg)
        runs.append(run)
        return ll.recipes.TrainResult(ShapesClassifier(), {}, {}, run, cfg)

    monkeypatch.setattr(ll.recipes, "train", fake_train)
    monkeypatch.setattr(ll.recipes, "ship", lambda model, dest, *a, **k: shipped.append(dest))
    cli.main(["train-classifier", "--steps", "1"])
    cli.main(["train-classifier", "--steps", "1", "--ship"])
    cli.main(["train-classifier", "--steps", "1", "--out", str(tmp_path / "clf")])
    assert runs == [tmp_path / "outputs" / "shapes-classifier-32"] * 2 + [tmp_path / "clf"]
    assert shipped == ["shapes-classifier-32"]  # data/pretrained only when asked, under the judge's own name


def test_a_resumed_run_with_another_config_names_the_differing_field():
    from ldm_lite.checkpoint import config_difference

    assert config_difference(AutoencoderConfig.kl(f=4), AutoencoderConfig.vq(f=4)) == \
        "regularizer: 'kl' in the checkpoint, 'vq' now"
    many = config_difference(AutoencoderConfig.kl(base_channels=16, latent_channels=4, norm_groups=8, attention=True),
                             AutoencoderConfig.kl())
    assert many.count(" now") == 3 and many.endswith("; 1 more")


def test_image_folder_subfolders_are_class_labels(tmp_path):
    for cls in ("dogs", "cats"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    ds = ll.datasets.image_folder(tmp_path, resolution=8)
    assert ds.classes == ["cats", "dogs"]
    assert [(f.relative_to(tmp_path).as_posix(), ds[i]["label"]) for i, f in enumerate(ds.files)] == \
        [("cats/a.png", 0), ("dogs/a.png", 1), ("loose.png", -1)]


def test_a_training_curve_keeps_its_title_inside_the_figure():
    import matplotlib

    matplotlib.use("Agg")
    history = {"step": [0, 10, 20], "loss": [1.0, 0.5, 0.4]}
    for title in ("LDM training loss ||eps - eps_theta||^2 (eq. 2)", "a much longer title " * 6):
        fig = ll.plotting.curves(history, keys=["loss"], title=title)
        fig.canvas.draw()
        box, page = fig._suptitle.get_window_extent(), fig.bbox  # noqa: SLF001
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
        assert fig.get_size_inches()[0] * 110 >= 600  # outputs/main/curves.png is saved at dpi 110


def test_grid_captions_never_hide_behind_the_row_above():
    """Every caption of a dataset grid (one to four lines) lies clear of every other image in the figure."""
    import matplotlib

    matplotlib.use("Agg")
    for ds in (ll.datasets.shapes(32, n=16, seed=0), ll.datasets.shapes(32, n=16, seed=0, max_shapes=1)):
        fig = ll.plotting.dataset_grid(ds, n=16, title="grid")
        fig.canvas.draw()
        images = [(ax, ax.get_window_extent()) for ax in fig.axes if ax.images]
        for ax, _ in images:
            caption = ax.title.get_window_extent()
            clash = [box for other, box in images if other is not ax and caption.overlaps(box)]
            assert not clash, (ax.get_title(), clash)


def test_evaluate_judges_a_model_of_ones_own_folder_against_its_held_out_images(tmp_path, monkeypatch, caplog):
    import json

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (32, 32), (12 * i, 100, 0)).save(folder / f"{i:02d}.png")
    cfg = ll.unet.UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                             attention_resolutions=(), head_dim=32)
    ll.ldm.LatentDiffusion(IdentityAutoencoder(), ll.unet.UNet(cfg), image_size=32).save_pretrained(tmp_path / "m")
    out = tmp_path / "e.json"
    ldm_lite_here("evaluate", "--model", tmp_path / "m", "--dataset", folder, "--samplers", "ddim:1", "--n", 4,
                  "--out", out, tmp_path=tmp_path, monkeypatch=monkeypatch, caplog=caplog)
    r = json.loads(out.read_text())["ddim:1"]
    assert r["dataset"] == str(folder) and r["n"] == 4 and r["n_real"] == 2  # the folder's last 10%: 2 images
    assert r["fid"] > 0 and "kid" in r and r["fid_features"].startswith("Inception")
    refused = error_line(ldm_lite("evaluate", "--model", tmp_path / "m", "--dataset", tmp_path / "nope",
                                  tmp_path=tmp_path, expect=2))
    assert "--dataset" in refused and "no such folder" in refused

"""ldm_lite.recipes: shipped-or-trained models, loss presets, datasets by name, shipping with a README."""

import json

import pytest
import torch

import ldm_lite as ll
from ldm_lite import recipes as R
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig

IMAGES = torch.stack([ll.datasets.shapes(resolution=16, n=8, seed=0)[i]["image"] for i in range(8)])  # (8, 3, 16, 16)


def tiny(kind="kl", f=4):
    return Autoencoder(AutoencoderConfig.preset(f"{kind}-f{f}", base_channels=16, codebook_size=16))


def test_shipped_name_matches_the_shipping_script():
    assert R.shipped_name("kl", 4, "shapes") == "ae-kl-f4-shapes32"
    assert R.shipped_name("vq", 8, "mnist", 64) == "ae-vq-f8-mnist64"


def test_short_loss_has_no_lpips_and_no_gan_and_full_loss_has_both():
    s, full = R.short_loss(), R.full_loss(1000)
    assert s.perceptual_weight == 0 and s.disc_start is None and not s.gan_within(10**9)
    assert full.perceptual_weight > 0 and full.disc_start == 750 and full.gan_within(1000) and not full.gan_within(750)


def test_trains_when_nothing_is_shipped_then_reuses_the_cached_model(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "PRETRAINED_DIR", tmp_path / "none")
    ae, source = R.get_autoencoder("kl", 2, "shapes", IMAGES, steps=2, batch_size=4, out=tmp_path, progress=False)
    assert source.startswith("trained now (2 steps, short-loss")
    assert ae.f == 2 and not ae.training
    with torch.no_grad():
        z = ae.encode(IMAGES).sample(torch.Generator().manual_seed(0))
    assert abs(float(ae.scale_factor) * float(z.std()) - 1) < 0.3  # scale factor estimated: 1/std(z)
    again, source2 = R.get_autoencoder("kl", 2, "shapes", IMAGES, steps=2, batch_size=4, out=tmp_path)
    assert source2.startswith("trained here earlier")
    for (k, a), b in zip(ae.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    # other settings -> another run, not the cached one
    _, source3 = R.get_autoencoder("kl", 2, "shapes", IMAGES, steps=3, batch_size=4, out=tmp_path, progress=False)
    assert source3.startswith("trained now (3 steps")


def test_loads_the_shipped_checkpoint_unless_told_not_to(tmp_path, monkeypatch):
    shipped = tiny("vq", 4)
    shipped.scale_factor.fill_(0.25)
    shipped.save_pretrained(tmp_path / "ae-vq-f4-shapes32")
    monkeypatch.setattr(R, "PRETRAINED_DIR", tmp_path)
    ae, source = R.get_autoencoder("vq", 4, "shapes", IMAGES, steps=2, out=tmp_path / "out")
    assert source == "shipped (ae-vq-f4-shapes32)"
    assert float(ae.scale_factor) == 0.25 and ae.config.codebook_size == 16
    _, source = R.get_autoencoder("vq", 4, "shapes", IMAGES, steps=1, batch_size=4, prefer_shipped=False,
                                  out=tmp_path / "out", progress=False)
    assert source.startswith("trained now")


@pytest.mark.slow
def test_training_data_by_name_and_clear_error(tmp_path):
    train, held = R.training_data("shapes", resolution=16, n_train=10)
    assert len(train) == 10 and len(held) == 512 and train[0]["image"].shape == (3, 16, 16)
    mtrain, mtest = R.training_data("mnist", resolution=16)
    assert mtrain[0]["image"].shape == (3, 16, 16) and len(mtest) > 0
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (20, 20), (25 * i, 0, 0)).save(folder / f"{i}.png")
    ftrain, ftest = R.training_data(str(folder), resolution=16)
    assert len(ftrain) == 9 and len(ftest) == 1 and ftrain[0]["image"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*hub:"):
        R.training_data("cifar")


def test_ship_writes_model_metrics_and_readme_atomically(tmp_path):
    ae = tiny()
    dest = R.ship(ae, tmp_path / "ae-test", {"psnr": 30.0}, "ldm-lite train-ae --ship ae-test", "A test")
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    assert json.loads((dest / "metrics.json").read_text())["psnr"] == 30.0
    assert "ldm-lite train-ae --ship ae-test" in (dest / "README.md").read_text()
    back = Autoencoder.from_pretrained(dest)
    assert not back.training and all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(),
                                                                       back.state_dict().values()))

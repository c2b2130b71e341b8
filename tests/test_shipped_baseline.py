"""Every shipped model still loads and computes what it computed before the one-path refactor (issue 20):
8 DDIM-10 samples per LDM at seed 0, reconstructions per autoencoder, judges' outputs (max abs diff <= 1e-5).
The baseline was written by `tests/helpers/shipped_baseline.py` at commit 6b78079, before any change."""

import pytest
from helpers.shipped_baseline import BASELINE, ROOT, outputs
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def now():
    return outputs()


def test_every_shipped_model_has_a_baseline(now):
    shipped = {d.name for d in (ROOT / "data" / "pretrained").iterdir() if d.is_dir()}
    assert set(load_file(str(BASELINE))) == shipped == set(now)


@pytest.mark.parametrize("name", sorted(load_file(str(BASELINE))))
def test_shipped_model_reproduces_baseline(now, name):
    ref = load_file(str(BASELINE))[name]
    assert now[name].shape == ref.shape
    assert (now[name] - ref).abs().max().item() <= 1e-5, name

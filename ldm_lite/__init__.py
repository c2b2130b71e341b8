"""ldm_lite: a compact, readable kit to learn Latent Diffusion Models by building one.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.

Submodules are imported lazily so `import ldm_lite` stays fast:

    import ldm_lite as ll
    ds = ll.datasets.shapes(resolution=32, n=1000, seed=0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "paths",
    "errors",
    "validation",
    "runtime",
    "checkpoint",
    "fit",
    "datasets",
    "autoencoder",
    "losses",
    "schedule",
    "attention",
    "unet",
    "conditioning",
    "spatial",
    "text",
    "image_to_image",
    "segmenter",
    "conditional",
    "grounding",
    "ldm",
    "samplers",
    "train",
    "metrics",
    "plotting",
    "widgets",
    "cli",
    "pipeline",
    "classifier",
    "introspect",
    "evaluation",
    "compression",
    "exercises",
    "tradeoff",
    "perceptual",
    "recipes",
    "latents",
)

__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ldm_lite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

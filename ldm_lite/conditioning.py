"""Conditioners τ_θ(y): turn a batch's conditioning input y into what the UNet reads (LDM §3.3).

The paper has two routes, and one `Condition` carries both:

    cond = conditioner(batch)     # Condition(context (B, L, d) | None, concat (B, c_cond, h, w) | None)
    null = conditioner.null(B)    # ∅ for classifier-free guidance and condition dropout (context-only)
    null = conditioner.null_like(cond)  # ∅ shaped like `cond` (spatial part: zeros unless a conditioner says else)

- `context`: a token sequence the UNet's cross-attention attends to (eq. 3: Q from the image, K and V from τ_θ(y)).
- `concat`: a spatial map at latent resolution concatenated to z_t along channels (super-resolution, inpainting,
  semantic maps, §3.3 "concatenation").

A conditioner declares `context_dim` (None = no context) and `concat_channels` (0 = no concat);
`LatentDiffusion` checks them against the UNet and never switches on the kind of conditioner.
`attach_autoencoder(ae)` is called once by `LatentDiffusion` (a conditioner that encodes images, e.g. the masked
image for inpainting, keeps a reference; the default does nothing).

`ClassConditioner` (class-conditional LDMs, paper §4.3.1) maps `batch["label"]` to one learned token; a reserved
last row of its table is ∅.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Pretrained


@dataclass
class Condition:
    """What a conditioner gives the UNet (either part may be None)."""

    context: Tensor | None = None  # (B, L, d): tokens for cross-attention
    concat: Tensor | None = None  # (B, c_cond, h, w): spatial map concatenated to z_t

    @property
    def batch_size(self) -> int:
        part = self.context if self.context is not None else self.concat
        if part is None:
            raise ValueError("an empty Condition has no batch size")
        return part.shape[0]

    def where(self, drop: Tensor, null: Condition) -> Condition:
        """Row b from `null` where drop[b] (a (B,) bool tensor), else from self: condition dropout."""

        def pick(x: Tensor | None, n: Tensor | None) -> Tensor | None:
            if x is None:
                return None
            return torch.where(drop.to(x.device).view(-1, *[1] * (x.ndim - 1)), n.to(x.dtype).expand_as(x), x)

        return Condition(pick(self.context, null.context), pick(self.concat, null.concat))

    def to(self, device: torch.device | str) -> Condition:
        return Condition(*(None if x is None else x.to(device) for x in (self.context, self.concat)))


class Conditioner(nn.Module):
    """Base of every τ_θ: `forward(batch) -> Condition`, `null(B) -> Condition`, optional `null_like(cond)`."""

    context_dim: int | None = None  # width d of the context tokens; None = no cross-attention
    concat_channels: int = 0  # channels of the spatial condition; 0 = no concatenation

    def attach_autoencoder(self, autoencoder: nn.Module) -> None:
        """Called by LatentDiffusion with its frozen first stage; conditioners that encode images keep it."""

    def null(self, batch_size: int) -> Condition:
        raise NotImplementedError

    def null_like(self, cond: Condition) -> Condition:
        """∅ with the batch and spatial size of `cond`: the null context, and zeros for the spatial map."""
        b = cond.batch_size
        context = self.null(b).context if cond.context is not None else None
        concat = torch.zeros_like(cond.concat) if cond.concat is not None else None
        return Condition(context, concat)


@dataclass
class ClassConditionerConfig:
    num_classes: int = 6  # number of classes (shapes: the 6 kinds)
    dim: int = 128  # d: features per context token (= the UNet's context_dim)
    label_key: str = "label"  # which batch field holds the class index


class ClassConditioner(Pretrained, Conditioner):
    """y -> one token e_y (B, 1, d); row `num_classes` is the null class ∅ used for guidance."""

    config_class = ClassConditionerConfig

    def __init__(self, config: ClassConditionerConfig | None = None):
        super().__init__()
        self.config = config or ClassConditionerConfig()
        self.embedding = nn.Embedding(self.config.num_classes + 1, self.config.dim)

    @property
    def context_dim(self) -> int:
        return self.config.dim

    def forward(self, batch: dict[str, Any]) -> Condition:
        labels = torch.as_tensor(batch[self.config.label_key], device=self.embedding.weight.device).long()
        if labels.ndim != 1:
            raise ValueError(f"class labels must be a 1-D tensor (B,), got shape {tuple(labels.shape)}")
        bad = (labels < 0) | (labels > self.config.num_classes)
        if bool(bad.any()):
            raise ValueError(f"class labels must lie in 0..{self.config.num_classes - 1} "
                             f"(or {self.config.num_classes} for ∅); got {labels[bad][:5].tolist()}")
        return Condition(context=self.embedding(labels)[:, None, :])  # (B, 1, d)

    def null(self, batch_size: int) -> Condition:
        idx = torch.full((batch_size,), self.config.num_classes, device=self.embedding.weight.device)
        return Condition(context=self.embedding(idx)[:, None, :])  # (B, 1, d)


CONDITIONERS: dict[str, type[nn.Module]] = {"ClassConditioner": ClassConditioner}

# the spatial conditioners (super-resolution, inpainting, semantic maps) register themselves on import
from . import spatial as _spatial  # noqa: E402,F401

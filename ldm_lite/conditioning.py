"""Conditioners τ_θ(y): turn a batch's conditioning input into the context sequence the UNet attends to (LDM §3.3).

Every conditioner has one interface, so the UNet and `LatentDiffusion` never switch on the kind:

    context = conditioner(batch)            # (B, L, d) from a batch dict (training) or prepared inputs (sampling)
    null    = conditioner.null(batch_size)  # (B, L, d): the "empty" condition ∅ for classifier-free guidance

`ClassConditioner` (class-conditional LDMs, paper §4.3.1) maps `batch["label"]` to one learned token; a reserved
last row of its table is ∅. Text and semantic-map conditioners follow the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Pretrained


@dataclass
class ClassConditionerConfig:
    num_classes: int = 6  # number of classes (shapes: the 6 kinds)
    dim: int = 128  # d: features per context token (= the UNet's context_dim)
    label_key: str = "label"  # which batch field holds the class index


class ClassConditioner(Pretrained, nn.Module):
    """y -> one token e_y (B, 1, d); row `num_classes` is the null class ∅ used for guidance."""

    config_class = ClassConditionerConfig

    def __init__(self, config: ClassConditionerConfig | None = None):
        super().__init__()
        self.config = config or ClassConditionerConfig()
        self.embedding = nn.Embedding(self.config.num_classes + 1, self.config.dim)

    @property
    def context_dim(self) -> int:
        return self.config.dim

    def forward(self, batch: dict[str, Any]) -> Tensor:
        labels = torch.as_tensor(batch[self.config.label_key], device=self.embedding.weight.device).long()
        if labels.ndim != 1:
            raise ValueError(f"class labels must be a 1-D tensor (B,), got shape {tuple(labels.shape)}")
        bad = (labels < 0) | (labels > self.config.num_classes)
        if bool(bad.any()):
            raise ValueError(f"class labels must lie in 0..{self.config.num_classes - 1} "
                             f"(or {self.config.num_classes} for ∅); got {labels[bad][:5].tolist()}")
        return self.embedding(labels)[:, None, :]  # (B, 1, d)

    def null(self, batch_size: int) -> Tensor:
        idx = torch.full((batch_size,), self.config.num_classes, device=self.embedding.weight.device)
        return self.embedding(idx)[:, None, :]  # (B, 1, d)


CONDITIONERS: dict[str, type[nn.Module]] = {"ClassConditioner": ClassConditioner}

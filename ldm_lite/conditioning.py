"""Conditioners τ_θ(y): turn a batch's conditioning input y into what the UNet reads (LDM §3.3).

The paper has two routes, and one `Condition` carries both:

    cond = conditioner(batch)     # Condition(context (B, L, d) | None, concat (B, c_cond, h, w) | None)
    null = conditioner.null(B)    # ∅ for classifier-free guidance and condition dropout (context-only)
    null = conditioner.null_like(cond)  # ∅ shaped like `cond` (spatial part: zeros unless a conditioner says else)

- `context`: a token sequence the UNet's cross-attention attends to (§3.3: Q from the image, K and V from τ_θ(y)).
- `concat`: a spatial map at latent resolution concatenated to z_t along channels (super-resolution, inpainting,
  semantic maps, §3.3 "concatenation").

A conditioner declares `context_dim` (None = no context) and `concat_channels` (0 = no concat);
`LatentDiffusion` checks them against the UNet and never switches on the kind of conditioner.
`attach_autoencoder(ae)` is called once by `LatentDiffusion` (a conditioner that encodes images, e.g. the masked
image for inpainting, keeps a reference; the default does nothing).

Conditioners here (text ones are in `ldm_lite.text`):
- `ClassConditioner` (class-conditional LDMs, paper §4.3.1) maps `batch["label"]` to one learned token; a reserved
  last row of its table is ∅.
- `LayoutConditioner` (layout-to-image, §4.3.2 on COCO/OpenImages layouts) maps a set of objects, each a box
  (x0, y0, x1, y1) in [0, 1] (y down) and a class, to one token per object through a small transformer; ∅ is
  the empty layout (every slot "no object").
- `LayoutTokenConditioner` is the reference's form of the same condition: 3 discrete tokens per object (class and
  two grid corners) into a transformer; same interface, an option (the kit's default is `LayoutConditioner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Pretrained
from .errors import UsageError
from .validation import as_tensor, check_finite, check_labels


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
    usage: str = "batch={...}"  # how a caller of LatentDiffusion.sample passes this condition (for error messages)
    sample_inputs: tuple[str, ...] = ()  # the keyword arguments of LatentDiffusion.sample that carry the condition

    def batch_from(self, **inputs: Any) -> dict[str, Any]:
        """The named inputs of `LatentDiffusion.sample` (those in `sample_inputs`) -> the batch fields `forward`
        reads. Default: each name is its own batch field."""
        return dict(inputs)

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with the fields this conditioner reads validated (type, range, finiteness, count); run once
        at the sampling boundary (training batches come from a dataset and skip the host syncs it costs)."""
        return batch

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


def token_encoder(dim: int, head_dim: int, depth: int, dropout: float = 0.0) -> nn.TransformerEncoder:
    """The sequence model of a trained τ_θ (text, layout): `depth` pre-norm transformer blocks over tokens (B, L, d)."""
    layer = nn.TransformerEncoderLayer(dim, dim // head_dim, 4 * dim, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


@dataclass
class ClassConditionerConfig:
    num_classes: int = 6  # number of classes (shapes: the 6 kinds)
    dim: int = 128  # d: features per context token (= the UNet's context_dim)
    label_key: str = "label"  # which batch field holds the class index
    null_class: bool = True  # a last row for ∅ (guidance); False: the table has num_classes rows (reference cin256 v1)


class ClassConditioner(Pretrained, Conditioner):
    """y -> one token e_y (B, 1, d); row `num_classes` is the null class ∅ used for guidance (unless null_class=False)."""

    config_class = ClassConditionerConfig
    usage = "labels=[...] (class indices)"
    sample_inputs = ("labels",)

    def batch_from(self, labels: Any) -> dict[str, Any]:
        return {self.config.label_key: labels}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        key = self.config.label_key
        if key not in batch:
            raise UsageError(f"a class-conditional model reads batch[{key!r}]; pass labels=[...]")
        return {**batch, key: check_labels("labels", batch[key], self.config.num_classes)}

    def __init__(self, config: ClassConditionerConfig | None = None):
        super().__init__()
        self.config = config or ClassConditionerConfig()
        self.embedding = nn.Embedding(self.config.num_classes + int(self.config.null_class), self.config.dim)

    @property
    def context_dim(self) -> int:
        return self.config.dim

    def forward(self, batch: dict[str, Any]) -> Condition:
        if self.config.label_key not in batch:
            raise UsageError(f"a class-conditional model reads batch[{self.config.label_key!r}]; pass labels=[...]")
        labels = torch.as_tensor(batch[self.config.label_key], device=self.embedding.weight.device).long()
        if labels.ndim != 1:
            raise UsageError(f"class labels must be a 1-D tensor (B,), got shape {tuple(labels.shape)}")
        bad = (labels < 0) | (labels >= self.config.num_classes)  # ∅ is null(), never a label value
        if bool(bad.any()):
            raise UsageError(f"class labels must lie in 0..{self.config.num_classes - 1}; got "
                             f"{labels[bad][:5].tolist()} (for ∅ use guidance_scale=0 or conditioner.null(B))")
        return Condition(context=self.embedding(labels)[:, None, :])  # (B, 1, d)

    def null(self, batch_size: int) -> Condition:
        if not self.config.null_class:
            raise ValueError("this class embedder has no ∅ row (null_class=False, like the reference's cin256 v1), so "
                             "it cannot give an unconditional context; sample with guidance_scale=1.0")
        idx = torch.full((batch_size,), self.config.num_classes, device=self.embedding.weight.device)
        return Condition(context=self.embedding(idx)[:, None, :])  # (B, 1, d)


@dataclass
class LayoutConditionerConfig:
    num_classes: int = 6  # object classes (shapes: the 6 kinds)
    max_objects: int = 3  # L: one token per object slot (fewer objects are padded with "no object")
    dim: int = 128  # d: width of the transformer and of the context tokens (= the UNet's context_dim)
    depth: int = 2  # transformer layers over the object tokens
    head_dim: int = 32  # channels per attention head
    fourier_bands: int = 6  # box coordinates enter as sin/cos at frequencies 2^k·π, k < fourier_bands


class _LayoutInput(Pretrained, Conditioner):
    """What the two layout τ_θ share: the checked layout of a batch (`boxes` + `box_labels`), context = `encode`
    of it, and ∅ = the empty layout. A subclass has a config with num_classes, max_objects and dim, and `encode`."""

    usage = ("layout=(boxes (B, N, 4) as (x0, y0, x1, y1) in [0, 1], classes (B, N), -1 = no object) "
             "or batch={'boxes': ..., 'box_labels': ...}")

    @property
    def context_dim(self) -> int:
        return self.config.dim

    def layout(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The checked layout: boxes (B, max_objects, 4) and classes (B, max_objects) with -1 for empty slots."""
        if "boxes" in batch:
            if "box_labels" not in batch:
                raise UsageError("batch has 'boxes' but no 'box_labels'; pass one class index per box (-1 = none)")
            boxes, labels = as_tensor("boxes", batch["boxes"]), as_tensor("box_labels", batch["box_labels"])
            if labels.is_floating_point() and not bool((labels == labels.round()).all()):
                raise UsageError(f"box_labels must be whole class indices (-1 = no object), got {labels.tolist()}")
            boxes, labels = check_finite("boxes", boxes.float()), labels.long()
        else:
            raise UsageError(f"a layout-conditional model reads boxes; pass {self.usage}")
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
            raise UsageError(f"boxes must be (B, N, 4) and box_labels (B, N); got {tuple(boxes.shape)} and "
                             f"{tuple(labels.shape)}")
        n, c = boxes.shape[1], self.config
        if n > c.max_objects:
            raise UsageError(f"{n} objects per layout but this model takes at most max_objects={c.max_objects}")
        bad = (labels < -1) | (labels >= c.num_classes)
        if bool(bad.any()):
            raise UsageError(f"box classes must lie in 0..{c.num_classes - 1} (or -1 for no object); "
                             f"got {labels[bad][:5].tolist()}")
        real = labels >= 0
        b = boxes[real]
        if bool(((b < 0) | (b > 1)).any()):
            raise UsageError(f"boxes must lie inside [0, 1] (fractions of the image side); got {b[((b < 0) | (b > 1)).any(-1)][:3].tolist()}")
        if bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
            raise UsageError("a box has zero area: boxes are (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
        pad = c.max_objects - n
        boxes = torch.cat([boxes, boxes.new_zeros(boxes.shape[0], pad, 4)], 1)
        labels = torch.cat([labels, labels.new_full((labels.shape[0], pad), -1)], 1)
        return torch.where(labels[..., None] >= 0, boxes, torch.zeros_like(boxes)), labels

    def forward(self, batch: dict[str, Any]) -> Condition:
        return Condition(context=self.encode(*self.layout(batch)))

    def null(self, batch_size: int) -> Condition:
        L = self.config.max_objects
        return Condition(context=self.encode(torch.zeros(batch_size, L, 4), torch.full((batch_size, L), -1)))


class LayoutConditioner(_LayoutInput):
    """A layout (boxes (B, N, 4), classes (B, N), -1 = no object) -> one token per object slot (B, max_objects, d).

    Token = Linear(Fourier(box)) + class embedding (row `num_classes` = no object), then a transformer over the
    tokens so each object sees the others. Reads `batch["boxes"]` and `batch["box_labels"]` (`shapes` items carry
    both; `datasets.boxes_from_attrs` makes them from its `attrs`)."""

    config_class = LayoutConditionerConfig
    sample_inputs = ("layout",)

    def batch_from(self, layout: Any) -> dict[str, Any]:
        """layout: (boxes, classes) or {"boxes": ..., "box_labels": ...}."""
        if isinstance(layout, dict):
            if set(layout) != {"boxes", "box_labels"}:
                raise UsageError(f"layout as a dict needs exactly the keys 'boxes' and 'box_labels', got {sorted(layout)}")
            return dict(layout)
        if not isinstance(layout, tuple | list) or len(layout) != 2:
            raise UsageError(f"layout must be a pair (boxes (B, N, 4), classes (B, N)), got {type(layout).__name__}"
                             f"{' of length ' + str(len(layout)) if isinstance(layout, tuple | list) else ''}")
        return {"boxes": layout[0], "box_labels": layout[1]}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.layout(batch)  # every check of the layout (shapes, classes, finite boxes inside [0, 1], areas)
        return batch

    def __init__(self, config: LayoutConditionerConfig | None = None):
        super().__init__()
        c = self.config = config or LayoutConditionerConfig()
        self.register_buffer("freqs", 2.0 ** torch.arange(c.fourier_bands) * torch.pi, persistent=False)
        self.box_embedding = nn.Linear(4 * 2 * c.fourier_bands, c.dim)
        self.class_embedding = nn.Embedding(c.num_classes + 1, c.dim)
        self.slot_embedding = nn.Parameter(torch.randn(c.max_objects, c.dim) * 0.02)
        self.encoder = token_encoder(c.dim, c.head_dim, c.depth)
        self.norm = nn.LayerNorm(c.dim)

    def encode(self, boxes: Tensor, labels: Tensor) -> Tensor:
        """boxes (B, L, 4), classes (B, L) (-1 = none) -> context (B, L, d)."""
        dev = self.class_embedding.weight.device
        boxes, labels = boxes.to(dev), labels.to(dev)
        angles = boxes[..., None] * self.freqs  # (B, L, 4, bands)
        fourier = torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)  # (B, L, 8·bands)
        present = (labels >= 0)[..., None]
        h = torch.where(present, self.box_embedding(fourier), 0.0)
        h = h + self.class_embedding(torch.where(labels >= 0, labels, self.config.num_classes)) + self.slot_embedding
        return self.norm(self.encoder(h))


@dataclass
class LayoutTokenConditionerConfig:
    num_classes: int = 6  # object classes (shapes: the 6 kinds)
    max_objects: int = 3  # objects per layout; the sequence has 3 tokens per object slot
    grid: int = 16  # corners snap to a grid × grid lattice (the reference: int(√8192) = 90)
    dim: int = 128  # d: width of the transformer and of the context tokens (= the UNet's context_dim)
    depth: int = 2  # transformer layers over the tokens (the reference: 16 at d = 512)
    head_dim: int = 32  # channels per attention head


class LayoutTokenConditioner(_LayoutInput):
    """The reference's layout τ_θ: each object becomes 3 discrete tokens — its class, its top-left corner and its
    bottom-right corner on a grid — and a BERT-like transformer reads the sequence (B, 3 · max_objects) -> context
    (B, 3 · max_objects, d).

    Tokens (taming-transformers `ObjectsBoundingBoxConditionalBuilder`, read by latent-diffusion's `BERTEmbedder`
    with `use_tokenizer=False`): class c -> token c; a corner (x, y) -> round(y (g-1)) · g + round(x (g-1)); class
    and corner tokens share one table, told apart by position; an empty slot is 3 × the "none" token (the last
    id). Same batch fields as `LayoutConditioner` (`boxes` + `box_labels`) and the same `layout` check
    (`_LayoutInput`); ∅ is the empty layout. Not done here: the reference shuffles the objects of each training image and
    can append two crop tokens."""

    config_class = LayoutTokenConditionerConfig

    def __init__(self, config: LayoutTokenConditionerConfig | None = None):
        super().__init__()
        c = self.config = config or LayoutTokenConditionerConfig()
        if c.grid < 2:
            raise ValueError(f"grid={c.grid} cannot tell corners apart; use grid >= 2")
        self.none = max(c.grid * c.grid, c.num_classes)  # the last id: "no object"
        self.token_embedding = nn.Embedding(self.none + 1, c.dim)
        self.position_embedding = nn.Parameter(torch.randn(3 * c.max_objects, c.dim) * 0.02)
        self.encoder = token_encoder(c.dim, c.head_dim, c.depth)
        self.norm = nn.LayerNorm(c.dim)

    def tokenize(self, boxes: Tensor, labels: Tensor) -> Tensor:
        """boxes (B, N, 4) as (x0, y0, x1, y1) in [0, 1], classes (B, N) (-1 = none) -> ids (B, 3N):
        (class, corner(x0, y0), corner(x1, y1)) per object."""
        g, boxes = self.config.grid, boxes.double()  # float64 as the reference's Python floats (ties round to even)

        def corner(x: Tensor, y: Tensor) -> Tensor:
            return torch.round(y * (g - 1)).long() * g + torch.round(x * (g - 1)).long()

        ids = torch.stack([labels.long(), corner(boxes[..., 0], boxes[..., 1]), corner(boxes[..., 2], boxes[..., 3])],
                          -1)  # (B, N, 3)
        return torch.where((labels >= 0)[..., None], ids, self.none).flatten(1)

    def encode(self, boxes: Tensor, labels: Tensor) -> Tensor:
        """boxes (B, L, 4), classes (B, L) -> context (B, 3L, d)."""
        ids = self.tokenize(boxes, labels).to(self.token_embedding.weight.device)
        return self.norm(self.encoder(self.token_embedding(ids) + self.position_embedding))


CONDITIONERS: dict[str, type[nn.Module]] = {"ClassConditioner": ClassConditioner,
                                            "LayoutConditioner": LayoutConditioner,
                                            "LayoutTokenConditioner": LayoutTokenConditioner}

# the text conditioners (`text`) and the spatial ones (`spatial`) register themselves on import; `ldm` imports both

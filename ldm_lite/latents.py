"""A latent cache: the frozen first stage's output for every item of a dataset, computed once (LDM §3: the
autoencoder is trained once and frozen, so E(x) never changes while the diffusion model trains).

    cache = LatentCache(dataset, ldm.autoencoder, device="cuda")   # encodes every image once
    train_ldm(ldm, dataset, latent_cache=True)                     # the same, built inside train_ldm
    LatentCache(dataset, ldm.autoencoder, text_encoder=ldm.conditioner)  # + a frozen text encoder's states

What is kept per item, so training draws exactly what it would from the images:
- KL: the posterior's mean and std (`latent_mean`, `latent_std`); every step still draws a fresh
  z = mean + std·ε, which `LatentDiffusion.loss` scales by s (the same operations as encoding the image);
- VQ (either `vq_latent`) and the identity first stage: the deterministic latent (`latent`), unscaled;
- every other field of the item (caption, label, attrs, mask), so conditioners see what they saw before;
- with `text_encoder` (a `FrozenTextConditioner`): the frozen encoder's token states of each item's caption, as
  the field `text_encoder.states_key` (L, 384), computed once per distinct caption (the caption set of `shapes`
  is finite: ~7.7k distinct among 20k two-shape images, 190 MB at L = 16) and gathered per batch; the trained
  projection still runs every step. Only the frozen part is cached, so the loss and its gradients are those of
  encoding the captions each step (to float rounding), and ∅ (condition dropout, guidance) is untouched.
Tensors live on the training `device`. `fingerprint` (the autoencoder's weights and the dataset's length and
first/last images) tells whether a cache still belongs to an (autoencoder, dataset) pair.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from .autoencoder import DiagonalGaussian, QuantizedLatent
from .errors import UsageError
from .runtime import pick_device
from .text import FrozenTextConditioner


def fingerprint(dataset: Any, autoencoder: nn.Module) -> str:
    """A short hash of the autoencoder's state (weights, scale factor) and the dataset (length, first/last image)."""
    h = hashlib.sha256()
    for k, v in sorted(autoencoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(len(dataset)).encode())
    for i in {0, len(dataset) - 1}:
        h.update(dataset[i]["image"].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache(Dataset):
    """Items of `dataset` with "image" replaced by the first stage's latent statistics (see the module doc)."""

    def __init__(self, dataset: Any, autoencoder: nn.Module, device: str | torch.device = "auto",
                 batch_size: int = 256, progress: bool = True, text_encoder: FrozenTextConditioner | None = None):
        device = pick_device(device)
        self.fingerprint = fingerprint(dataset, autoencoder)
        self.fields: dict[str, Any] = {}
        # the frozen text states: one row per distinct caption (U, L, 384) and each item's row (N,)
        self.text_key: str | None = None
        self.text_states: Tensor | None = None
        self.text_row: Tensor | None = None
        parts: dict[str, list] = {}
        autoencoder = autoencoder.eval()
        dev = next((p.device for p in autoencoder.parameters()), torch.device("cpu"))
        with torch.no_grad():
            for i in tqdm(range(0, len(dataset), batch_size), desc="latent cache", disable=not progress):
                batch = default_collate([dataset[j] for j in range(i, min(len(dataset), i + batch_size))])
                posterior = autoencoder.encode(batch.pop("image").to(dev))
                if isinstance(posterior, DiagonalGaussian) and not posterior.deterministic:
                    stats = {"latent_mean": posterior.mean, "latent_std": posterior.std}
                else:  # VQ (pre- or post-quantization, as configured) and the identity: deterministic
                    stats = {"latent": _deterministic_latent(autoencoder, posterior)}
                for k, v in {**stats, **batch}.items():
                    parts.setdefault(k, []).append(v)
        for k, v in parts.items():
            self.fields[k] = (torch.cat(v).to(device) if isinstance(v[0], Tensor) else sum(v, []))
        if text_encoder is not None:
            self._cache_text(text_encoder, device, batch_size, progress)

    def _cache_text(self, encoder: FrozenTextConditioner, device: str | torch.device, batch_size: int,
                    progress: bool) -> None:
        """The frozen encoder's states of every distinct caption, once (in first-seen order)."""
        key = encoder.config.caption_key
        captions = self.fields.get(key)
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise UsageError(f"text_encoder= caches the states of each item's {key!r}, but the dataset's items have "
                             f"no such strings (fields: {sorted(self.fields)}); build the cache without text_encoder")
        distinct = list(dict.fromkeys(captions))
        row = {c: i for i, c in enumerate(distinct)}
        states = [encoder.token_states(distinct[i:i + batch_size])
                  for i in tqdm(range(0, len(distinct), batch_size), desc="text cache", disable=not progress)]
        self.text_states = torch.cat(states).to(device)  # (U, L, 384)
        self.text_row = torch.tensor([row[c] for c in captions], device=device)  # (N,)
        self.text_key = encoder.states_key

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.fields.items()}
        if self.text_key is not None:
            item[self.text_key] = self.text_states[self.text_row[i]]  # (L, 384)
        return item

    def batch(self, idx: Tensor) -> dict[str, Any]:
        """The items at `idx` as one batch dict (B, ...), gathered on the cache's device without a collate."""
        out = {}
        for k, v in self.fields.items():
            out[k] = v[idx.to(v.device)] if isinstance(v, Tensor) else [v[int(i)] for i in idx]
        if self.text_key is not None:
            out[self.text_key] = self.text_states[self.text_row[idx.to(self.text_row.device)]]  # (B, L, 384)
        return out


def _deterministic_latent(autoencoder: nn.Module, posterior: Any) -> Tensor:
    """The unscaled latent `autoencoder.latent(x, sample=False)` gives, from the posterior already computed."""
    if isinstance(posterior, QuantizedLatent) and autoencoder.config.vq_latent == "pre_quant":
        return posterior.z_e
    return posterior.mode()

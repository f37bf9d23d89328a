"""Hyper-parameters of an scMulan-family model, stored as ``config.json`` in a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..base._config import ConfigDict
from ._tokenizer import CSentenceVocab, LevelScheme

FAMILY = "scmulan"


@dataclass
class SCMulanConfig(ConfigDict):
    """Architecture, c-sentence vocabulary and expression levels of an scMulan model (Bian et al., 2024).

    Parameters
    ----------
    n_gene_tokens
        Size of the gene vocabulary (``vocab.json``: special tokens and genes).
    metadata_terms
        The terms of each registered metadata key (e.g. ``{"cell_type": [...], "tissue": [...]}``); they get
        entity ids after the genes and task tokens, see :class:`~scfm.tokenize.CSentenceVocab`.
    metadata_keys
        The keys in entity-id order (also the order of conditions in generation prompts). ``None``: the order of
        ``metadata_terms``. Stored explicitly because ``config.json`` is written with sorted object keys.
    pad_id, begin_id, end_id
        Ids of ``<pad>``, ``<cls>`` (opens a sentence) and ``<eoc>`` (closes a cell's genes).
    n_levels, level_width, target_sum
        Expression levels: fixed-width bins of ``log1p`` of cells normalised to ``target_sum``.
    level_values
        ``log1p`` value that stands for each level when generated cells are written out (the training cells'
        mean per level); ``None``: the middle of each bin.
    d_model, n_heads, n_layers, d_hidden
        Transformer width, heads, depth and feed-forward width.
    dropout
        Dropout used in training.
    max_len
        Words per c-sentence, ``<cls>`` and the task token included.
    tokenizer_seed
        Seeds the order of equal-level genes within a cell (so a cell's sentence never depends on the batch).
    activation
        Feed-forward activation.
    family
        Always ``"scmulan"``; checked when a checkpoint is loaded.
    extra
        Free-form provenance.
    layout
        ``"scfm"`` (scfm's own models: c-sentences of :class:`CSentenceVocab`, a head tied to the entity embedding,
        a classification value head) or ``"reference"`` (a converted public scMulan checkpoint, see
        :mod:`scfm.models.scmulan._convert`: the reference's flat token vocabulary, an untied entity head and a
        regression value head, its sentence builder and greedy annotation).
    n_reference_tokens
        ``"reference"`` layout: tokens of the reference vocabulary (rows of its heads). The gene vocabulary appends
        ``<pad>``, ``<cls>`` and ``<eoc>`` after them (ids the reference never uses).
    task_token_id, stop_token_id
        ``"reference"`` layout: id of the annotation task token (``<PCT>``) and of the token that ends generation
        (the reference stops at token 0).
    cell_type_ids
        ``"reference"`` layout: ids of the tokens that count as cell types (the reference's ``cell_type`` and
        ``MCT`` entities), in the order of ``metadata_terms["cell_type"]``.
    gene_order
        ``"reference"`` layout: token ids of the reference gene set in its order (sentences list a cell's genes in
        the reverse of it); ``None``: token-id order.
    """

    added_later: ClassVar[frozenset[str]] = frozenset(
        {"layout", "n_reference_tokens", "task_token_id", "stop_token_id", "cell_type_ids", "gene_order"}
    )

    n_gene_tokens: int
    metadata_terms: dict[str, list[str]] = field(default_factory=dict)
    metadata_keys: list[str] | None = None
    pad_id: int = 0
    begin_id: int = 1
    end_id: int = 2
    n_levels: int = 10
    level_width: float = 0.75
    target_sum: float = 1e4
    level_values: list[float] | None = None
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_hidden: int = 512
    dropout: float = 0.0
    max_len: int = 256
    tokenizer_seed: int = 0
    activation: str = "gelu"
    family: str = FAMILY
    extra: dict[str, Any] = field(default_factory=dict)
    layout: str = "scfm"
    n_reference_tokens: int = 0
    task_token_id: int | None = None
    stop_token_id: int | None = None
    cell_type_ids: list[int] | None = None
    gene_order: list[int] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.metadata_keys is None:
            self.metadata_keys = list(self.metadata_terms)
        if sorted(self.metadata_keys) != sorted(self.metadata_terms):
            problems.append(f"metadata_keys {self.metadata_keys} differ from the keys of metadata_terms")
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads})")
        if self.max_gene_words < 1:
            problems.append(
                f"max_len={self.max_len} leaves no room for genes next to {len(self.metadata_terms)} metadata keys"
            )
        specials = {"pad_id": self.pad_id, "begin_id": self.begin_id, "end_id": self.end_id}
        if any(not 0 <= v < self.n_gene_tokens for v in specials.values()) or len(set(specials.values())) != 3:
            problems.append(f"pad/begin/end ids {specials} must be distinct ids of the gene vocabulary")
        if self.level_values is not None and len(self.level_values) != self.n_levels:
            problems.append(f"level_values has {len(self.level_values)} entries for {self.n_levels} levels")
        if self.family != FAMILY:
            problems.append(f"family is {self.family!r}, expected {FAMILY!r}")
        if self.activation not in ("gelu", "gelu_tanh", "relu"):
            problems.append(f"activation must be 'gelu', 'gelu_tanh' or 'relu', got {self.activation!r}")
        if self.layout == "reference":
            problems += self._reference_problems()
        elif self.layout != "scfm":
            problems.append(f"layout must be 'scfm' or 'reference', got {self.layout!r}")
        try:
            LevelScheme(self.n_levels, self.level_width, self.target_sum)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("invalid SCMulan config: " + "; ".join(problems))

    def _reference_problems(self) -> list[str]:
        n = self.n_reference_tokens
        problems = []
        if n < 1:
            return [f"the reference layout needs n_reference_tokens >= 1, got {n}"]
        if (self.pad_id, self.begin_id, self.end_id) != (n, n + 1, n + 2) or self.n_gene_tokens != n + 3:
            problems.append(
                f"the reference layout appends <pad>, <cls>, <eoc> after its {n} tokens: expected pad/begin/end ids "
                f"{(n, n + 1, n + 2)} and n_gene_tokens={n + 3}"
            )
        for name in ("task_token_id", "stop_token_id"):
            value = getattr(self, name)
            if value is None or not 0 <= value < n:
                problems.append(f"the reference layout needs {name} in 0..{n - 1}, got {value}")
        ids = self.cell_type_ids or []
        terms = self.metadata_terms.get("cell_type", [])
        if list(self.metadata_terms) != ["cell_type"] or len(ids) != len(terms) or not ids:
            problems.append("the reference layout needs metadata_terms {'cell_type': [...]} matching cell_type_ids")
        if any(not 0 <= i < n for i in ids + (self.gene_order or [])):
            problems.append(f"cell_type_ids and gene_order must be token ids in 0..{n - 1}")
        return problems

    @property
    def max_gene_words(self) -> int:
        """Genes that fit in a sentence.

        ``max_len`` less ``<cls>``, the task token, ``<eoc>`` and a query and a term per metadata key.
        """
        return self.max_len - 3 - 2 * len(self.metadata_terms)

    @property
    def level_scheme(self) -> LevelScheme:
        return LevelScheme(self.n_levels, self.level_width, self.target_sum)

    def sentence_vocab(self) -> CSentenceVocab:
        return CSentenceVocab(self.n_gene_tokens, {key: self.metadata_terms[key] for key in self.metadata_keys})

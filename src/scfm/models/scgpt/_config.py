"""Hyper-parameters of an scGPT-family model, stored as ``config.json`` in a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ._shape import SCGPTShape, raise_if_invalid

FAMILY = "scgpt"


@dataclass(kw_only=True)
class SCGPTConfig(SCGPTShape):
    """Architecture and tokenisation settings of :class:`~scfm.models.SCGPT`.

    The fields it shares with :class:`~scfm.models.scgpt.SCGPTMultiomeConfig` (vocabulary ids, transformer shape,
    value input, batches, ``tokenizer_seed``, ``extra``) are declared and checked once, in ``SCGPTShape``, and
    documented here. Every field but ``n_tokens, pad_id, cls_id`` is keyword-only.

    Parameters
    ----------
    n_tokens
        Vocabulary size including special tokens.
    pad_id, cls_id
        Ids of ``<pad>`` and ``<cls>`` in the vocabulary.
    d_model, n_heads, n_layers, d_hidden
        Transformer width, heads, depth and feed-forward width.
    dropout
        Dropout used in training.
    n_bins
        Number of value bins (bin 0 = zero expression, expressed genes use 1 .. n_bins-1).
    max_len
        Tokens per cell, ``<cls>`` included; cells expressing more genes are subsampled deterministically.
    pad_value, mask_value
        Input value of padding tokens, and of tokens whose value is masked for GEP in training.
    input_style
        ``"continuous"`` (MLP on the bin number, as scGPT's released models) or ``"category"`` (one embedding per bin).
    cell_embedding
        ``"cls"`` (hidden state of ``<cls>``) or ``"mean"`` (mean over gene tokens).
    norm_first, activation
        Pre-norm (``True``) or post-norm transformer layers, and their feed-forward activation (``"relu"``,
        ``"gelu"``).
    predict_zero
        Add zero-probability outputs to the GEP/GEPC heads.
    n_batches
        Number of batch categories when batch embeddings are concatenated to the transformer output (0 = none).
    batch_embedding
        With ``n_batches > 0``, concatenate a batch embedding to the transformer output before the GEP/GEPC
        heads (scGPT's batch tokens; never fed into attention).
    batch_categories
        Names of the ``n_batches`` batches, in index order (checked when new data are embedded).
    batch_discriminator
        Add a batch classifier behind a gradient-reversal layer (scGPT's DAR objective); needs ``n_batches``.
    domain_batchnorm
        Normalise token embeddings with batch-specific batch norm (scGPT's DSBN); needs ``n_batches``.
    label_categories
        Cell-type names of a classification head on the cell embedding (empty: no head).
    gepc_zero_bias
        Give the GEPC zero-probability projection a bias (checkpoints converted from scGPT's code have one).
    gepc_style
        GEPC decoder of scGPT's ``MVCDecoder``: ``"inner product"`` (scfm's and the published models'),
        ``"concat query"`` or ``"sum query"`` (an MLP on the cell embedding and a gene query; imported from
        fine-tuned reference checkpoints, without zero-probability outputs).
    classifier_layers
        Linear layers of the classification head and the batch discriminator (scGPT's ``n_layers_cls``).
    classifier_standardise
        Standardise the cell embedding before the classification head and the batch discriminator (scfm's heads;
        ``False`` for heads imported from scGPT's code, which have none).
    classifier_gene_linear
        Add a linear term on the cell's gene tokens to the classification logits (wide-and-deep head; see
        :class:`~scfm.nn.GeneLinearClassifier`).
    contrastive_dim
        Output width of the projection head used by the contrastive objective in training (0: no head, the
        objective then compares cell embeddings directly). Inference never uses it.
    tokenizer_seed
        Global seed mixed into the per-cell seeds of tie-breaking and gene subsampling.
    extra
        Free-form provenance (e.g. the source of a converted checkpoint).
    """

    added_later: ClassVar[frozenset[str]] = frozenset(
        {
            "batch_embedding",
            "batch_categories",
            "batch_discriminator",
            "domain_batchnorm",
            "label_categories",
            "gepc_zero_bias",
            "gepc_style",
            "classifier_layers",
            "classifier_standardise",
            "contrastive_dim",
            "classifier_gene_linear",
        }
    )

    max_len: int = 1200
    batch_embedding: bool = True
    domain_batchnorm: bool = False
    label_categories: list[str] = field(default_factory=list)
    gepc_zero_bias: bool = False
    gepc_style: Literal["inner product", "concat query", "sum query"] = "inner product"
    classifier_layers: int = 3
    classifier_standardise: bool = True
    classifier_gene_linear: bool = False
    contrastive_dim: int = 0
    family: str = FAMILY

    def __post_init__(self) -> None:
        problems = self.shape_problems()
        if self.max_len < 2:
            problems.append(f"max_len must be >= 2, got {self.max_len}")
        if self.domain_batchnorm and self.n_batches < 2:
            problems.append("domain_batchnorm needs n_batches >= 2")
        if len(set(self.label_categories)) != len(self.label_categories) or len(self.label_categories) == 1:
            problems.append("label_categories must be empty or at least two distinct names")
        if self.gepc_style not in ("inner product", "concat query", "sum query"):
            problems.append(
                f"gepc_style must be 'inner product', 'concat query' or 'sum query', got {self.gepc_style!r}"
            )
        if self.gepc_style != "inner product" and (self.predict_zero or (self.n_batches and self.batch_embedding)):
            problems.append(f"gepc_style={self.gepc_style!r} has no zero-probability output and no batch embedding")
        if self.classifier_layers < 1:
            problems.append(f"classifier_layers must be >= 1, got {self.classifier_layers}")
        if self.classifier_gene_linear and not self.label_categories:
            problems.append("classifier_gene_linear needs label_categories (it is part of the classification head)")
        if self.contrastive_dim < 0:
            problems.append(f"contrastive_dim must be >= 0, got {self.contrastive_dim}")
        if self.family != FAMILY:
            problems.append(f"family is {self.family!r}, expected {FAMILY!r}")
        raise_if_invalid("SCGPT", problems)

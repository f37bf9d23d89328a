"""The family contract: one :class:`Family` object per model family, and the capabilities tools dispatch on.

Families are registered by name.
A family declares what it can do by inheriting capability mixins (:class:`EmbedsCells`, :class:`PredictsCounts`,
...). A tool asks :func:`~scfm.models.resolve_model` for a checkpoint whose family has the capability it needs and
then calls the capability's method; it never names a family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from scfm.genes import GeneRules, GeneVocab

from ._checkpoint import BUNDLED, Checkpoint, module_from_checkpoint
from ._pretrained import Pretrained

if TYPE_CHECKING:
    from anndata import AnnData

    from scfm.data import ExpressionSource
    from scfm.genes import GeneAlignment


class Family:
    """What the package knows about one model family.

    Subclasses set the class attributes and inherit the capability mixins the family serves; one instance is
    registered with :func:`register_family`.

    Attributes
    ----------
    name
        Registry name, also ``config.family`` of its checkpoints.
    label
        Display name used in messages (``"scGPT"``).
    bundled
        Name of the checkpoint shipped inside the package.
    config_cls, module_cls
        The configuration dataclass and the torch module built from it.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    article: ClassVar[str] = "a"
    bundled: ClassVar[str]
    config_cls: ClassVar[type]
    module_cls: ClassVar[type]

    @property
    def a_label(self) -> str:
        """The label with its article, for messages (``"an scGPT"``)."""
        return f"{self.article} {self.label}"

    @property
    def model_cls(self) -> type:
        """The scvi-tools model class of the family."""
        raise NotImplementedError

    def vocab_problem(self, config: Any, vocab: GeneVocab) -> str | None:
        """Return what disagrees between a configuration and a vocabulary, or ``None``."""
        return None

    def from_checkpoint(self, checkpoint: Checkpoint) -> Pretrained:
        """Build the eval-mode module of an already read checkpoint of this family."""
        module = module_from_checkpoint(
            checkpoint,
            family=self.name,
            label=self.a_label,
            config_cls=self.config_cls,
            module_cls=self.module_cls,
            vocab_problem=self.vocab_problem,
        )
        return Pretrained(self.name, module, checkpoint.vocab, checkpoint.name, str(checkpoint.path), checkpoint.sha256)

    def recognises(self, path: str | Path) -> bool:
        """Whether ``path`` is a checkpoint of the family's reference code base that :meth:`from_reference` reads."""
        return False

    def from_reference(self, path: str | Path) -> Pretrained:
        """Convert a checkpoint of the reference code base in memory."""
        raise NotImplementedError(f"{self.label} has no reference checkpoint format")

    @property
    def capabilities(self) -> list[str]:
        """Names of the capabilities this family serves."""
        return [cls.capability for cls in type(self).__mro__ if isinstance(cls.__dict__.get("capability"), str)]


_REGISTRY: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry (a family folder calls this on import); returns it."""
    _REGISTRY[family.name] = family
    return family


def _load_families() -> None:
    import scfm.models  # noqa: F401  (importing the package registers the built-in families)


def get_family(name: str) -> Family:
    """Return the registered family called ``name``."""
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; registered: {sorted(_REGISTRY)}") from None


def families() -> list[Family]:
    """Every registered family: the package default's first, then scGPT, then by name.

    scGPT serves the most capabilities, so a tool whose capability the default family lacks falls back to it.
    """
    _load_families()
    return sorted(
        _REGISTRY.values(),
        key=lambda f: (BUNDLED.get(f.bundled) != BUNDLED["default"], f.name != "scgpt", f.name),
    )


def families_with(capability: str) -> list[Family]:
    """Return the registered families that serve ``capability``."""
    return [family for family in families() if capability in family.capabilities]


def describe_capability(capability: str) -> str:
    """Describe what a capability does, in words (``"generate cells"``)."""
    for family in families_with(capability):
        for cls in type(family).__mro__:
            if cls.__dict__.get("capability") == capability:
                return cls.__dict__.get("does", capability)
    return capability.replace("_", " ")


# -- capabilities ----------------------------------------------------------------------------------------------------


@dataclass
class Embedding:
    """What a family's embedding run returns to :func:`scfm.tl.embed`.

    Attributes
    ----------
    embeddings
        ``(n_obs, width)`` float32.
    input_kind
        What the values looked like (``"counts"``, ``"log1p"``, ``"nonnegative"``).
    n_tokens
        Tokens read over all cells (for the mean tokens per cell).
    record
        Family-specific provenance (tokenizer and its settings, cells cut or empty, ...).
    """

    embeddings: np.ndarray
    input_kind: str
    n_tokens: int
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedRequest:
    """How :func:`scfm.tl.embed` (or a model's ``get_latent_representation``) asks a family to embed.

    Family-specific ``options`` (``None`` values: not given), the device, cells per forward pass, rows read at a
    time, L2 normalisation, a progress bar, which rows of the matrix (``None``: all), and the ``precision`` of
    the forward pass (``"fp32"`` or ``"bf16"``, see :func:`scfm.models.base._device.compute_dtype`).
    """

    options: Mapping[str, Any]
    device: Any
    batch_size: int = 64
    block_size: int = 4096
    normalize: bool = True
    progress: bool = False
    rows: np.ndarray | None = None
    precision: str = "fp32"

    def loop_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of a family's streaming inference function (device, sizes, rows, ...)."""
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "normalize": self.normalize,
            "progress": self.progress,
            "rows": self.rows,
            "precision": self.precision,
        }

    def obs_names(self, adata: AnnData) -> np.ndarray:
        """Names of the cells embedded (``rows`` of ``adata``, or all), for messages."""
        names = np.asarray(adata.obs_names)
        return names if self.rows is None else names[self.rows]


class EmbedsCells:
    """Capability ``"embed"``: cell (or sample) embeddings from a loaded checkpoint.

    ``embed_options`` names the family-specific keyword arguments of :func:`scfm.tl.embed` it accepts;
    ``fixed_context`` families accept ``max_len`` only when it equals the checkpoint's context.
    """

    capability: ClassVar[str] = "embed"
    does: ClassVar[str] = "embed cells"
    embed_options: ClassVar[frozenset[str]] = frozenset()
    fixed_context: ClassVar[bool] = False

    def check_embed_options(self, pretrained: Pretrained, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for options (given, not ``None``) that this family does not use."""
        given = sorted(k for k, v in options.items() if v is not None and k not in self.embed_options)
        if given:
            owners = " or ".join(f.label for f in families_with("embed") if set(given) & f.embed_options) or "other"
            accepted = sorted(self.embed_options) or "none"
            raise ValueError(
                f"{given} only apply to {owners} models; this is a {self.name!r} model (it accepts {accepted})"
            )
        max_len = options.get("max_len")
        if self.fixed_context and max_len is not None and max_len != pretrained.config.max_len:
            raise ValueError(
                f"max_len={max_len} cannot be used with a {self.name} model: its context is fixed at "
                f"{pretrained.config.max_len} tokens by the checkpoint; leave max_len=None"
            )

    def embed(
        self, pretrained: Pretrained, adata: AnnData, source: ExpressionSource, alignment: GeneAlignment, request
    ) -> Embedding:
        """Embed every cell of ``source`` as ``request`` (an :class:`EmbedRequest`) asks.

        ``adata`` gives names, ``obs`` and ``obsm`` where the family needs them.
        """
        raise NotImplementedError


class EmbedsBulk:
    """Capability ``"bulk_features"``: embeddings of bulk samples (tissue profiles) through :class:`EmbedsCells`."""

    capability: ClassVar[str] = "bulk_features"
    does: ClassVar[str] = "embed bulk samples"


@dataclass(frozen=True)
class AnnotationRequest:
    """What :func:`scfm.tl.annotate` asks of a family that annotates from a labelled reference.

    ``labels`` are the reference cells' labels (strings, none missing) and ``categories`` their sorted distinct
    values; ``gene_rules`` say how the gene names of both datasets are read; the other fields are the tool's
    arguments of the same names.
    """

    labels: np.ndarray
    categories: list[str]
    method: str = "finetune"
    layer: str | None = None
    reference_layer: str | None = None
    use_raw: bool = False
    gene_key: str | None = None
    reference_gene_key: str | None = None
    shared_genes_only: bool = True
    n_top_genes: int | None = 1200
    gene_linear: bool = True
    max_epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    max_len: int | None = None
    n_neighbors: int = 15
    min_genes: int = 50
    gene_rules: GeneRules = GeneRules()
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class ReferenceAnnotation:
    """What a family's annotation from a reference returns.

    Class probabilities ``(n_query, n_categories)`` in ``request.categories`` order, the genes and reference cells
    used, the most variable genes kept (``None``: every shared gene), the fine-tuned model (``None`` for kNN) and
    the alignments of the query's and the reference's genes to the vocabulary (for provenance).
    """

    probabilities: np.ndarray
    genes_used: int
    n_reference: int
    n_top_genes: int | None
    model: Any = None
    alignment: GeneAlignment | None = None
    reference_alignment: GeneAlignment | None = None


class AnnotatesWithReference:
    """Capability ``"annotate_reference"``: cell-type probabilities of a query from a labelled reference.

    By fine-tuning a classifier (``method="finetune"``) or by a kNN vote in the embedding (``method="knn"``).
    """

    capability: ClassVar[str] = "annotate_reference"
    does: ClassVar[str] = "annotate cells from a labelled reference"
    reference_methods: ClassVar[tuple[str, ...]] = ("finetune", "knn")

    def annotate_with_reference(
        self, pretrained: Pretrained, query: AnnData, reference: AnnData, request: AnnotationRequest
    ) -> ReferenceAnnotation:
        """Probabilities of ``request.categories`` for every query cell."""
        raise NotImplementedError


@dataclass
class TermPrediction:
    """Predicted terms of one metadata key.

    ``table`` has one row per cell: ``label`` and ``probability`` of the most likely term, then ``label_r`` and
    ``probability_r`` for the ``r``-th most likely (``r = 1..top_k``; see :func:`top_labels`). ``probabilities``
    are the cells x ``candidates`` probabilities. ``out_of_vocabulary`` lists candidate labels that the model does
    not know (never predicted).
    """

    key: str
    table: pd.DataFrame
    candidates: list[str]
    out_of_vocabulary: list[str]
    probabilities: np.ndarray


def top_labels(probabilities: np.ndarray, labels: list[str], top_k: int) -> pd.DataFrame:
    """Per cell: the most likely label and its probability, then the ``top_k`` most likely ones.

    Columns ``label``, ``probability``, ``label_1``, ``probability_1``, ... ``label_k``, ``probability_k`` (``k`` is at
    most the number of labels); ties keep the order of ``labels``.
    """
    k = min(top_k, len(labels))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    names = np.asarray(labels, dtype=object)
    table = {"label": names[order[:, 0]], "probability": probabilities[np.arange(len(order)), order[:, 0]]}
    for r in range(k):
        table[f"label_{r + 1}"] = names[order[:, r]]
        table[f"probability_{r + 1}"] = np.take_along_axis(probabilities, order[:, r : r + 1], 1)[:, 0]
    return pd.DataFrame(table)


class AnnotatesZeroShot:
    """Capability ``"annotate_zero_shot"``: metadata terms of cells without a reference (e.g. by generation)."""

    capability: ClassVar[str] = "annotate_zero_shot"
    does: ClassVar[str] = "annotate cells zero-shot"

    def annotate_zero_shot(
        self,
        pretrained: Pretrained,
        source: ExpressionSource,
        alignment: GeneAlignment,
        key: str,
        *,
        candidates: list[str] | None,
        top_k: int,
        device,
        batch_size: int,
        progress: bool,
        obs_names: np.ndarray,
    ) -> TermPrediction:
        """Predicted terms of metadata ``key`` for every cell of ``source`` (``candidates``: the terms allowed)."""
        raise NotImplementedError


class Generates:
    """Capability ``"generate"``: new cells from a metadata prompt."""

    capability: ClassVar[str] = "generate"
    does: ClassVar[str] = "generate cells"

    def generate(self, pretrained: Pretrained, n_cells: int, conditions, **kwargs) -> AnnData:
        """``n_cells`` generated cells for ``conditions``."""
        raise NotImplementedError


class PredictsCounts:
    """Capability ``"predict_counts"``: expected counts of every vocabulary gene (denoising, imputation)."""

    capability: ClassVar[str] = "predict_counts"
    does: ClassVar[str] = "predict counts"

    def plan_counts(self, pretrained: Pretrained, adata: AnnData, source: ExpressionSource, **settings) -> Any:
        """Validate everything a prediction needs (alignment, grouping of cells) without computing.

        ``settings`` are the tool's keyword arguments (``gene_key``, ``min_genes``, ``on_duplicate``, ``gene_rules``
        (a :class:`~scfm.genes.GeneRules`), ``sample_key``, ...). Returns a plan with at least ``pretrained``,
        ``source``, ``alignment``, ``context``, ``sentences`` and ``device``.
        """
        raise NotImplementedError

    def iter_expected_counts(self, plan: Any, token_ids: np.ndarray, *, block_size: int, progress: bool, on_block=None):
        """Yield ``(cells, expected counts of the vocabulary genes token_ids)`` over all cells of the plan."""
        raise NotImplementedError


@dataclass(frozen=True)
class IntegrationWeights:
    """Objective weights of batch-integration fine-tuning (scGPT's recipe; the defaults are the paper's)."""

    gep: float = 1.0
    gepc: float = 1.0
    ecs: float = 10.0
    ecs_threshold: float = 0.8
    dar: float = 1.0
    cls: float = 1.0


@dataclass(frozen=True)
class IntegrationRequest:
    """What :func:`scfm.tl.integrate` asks of a family.

    The training copy's ``obs`` columns (``columns``), the label categories (``None``: no classifier), how gene
    names are read (``gene_rules``) and the tool's arguments of the same names.
    """

    batch_key: str
    columns: Mapping[str, Any]
    label_categories: list[str] | None = None
    labels_key: str | None = None
    layer: str | None = None
    use_raw: bool = False
    gene_key: str | None = None
    n_top_genes: int | None = 500
    max_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    max_len: int | None = None
    mask_ratio: float = 0.4
    weights: IntegrationWeights = IntegrationWeights()
    batch_embeddings: bool = True
    domain_batchnorm: bool = False
    min_genes: int = 50
    gene_rules: GeneRules = GeneRules()
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class Integration:
    """The integrated embedding ``(n_obs, width)``, the fine-tuned model, its provenance fields, the gene alignment."""

    embedding: np.ndarray
    model: Any
    record: dict[str, Any]
    alignment: GeneAlignment | None = None


class IntegratesBatches:
    """Capability ``"integrate"``: a batch-corrected embedding by fine-tuning with batch-aware objectives."""

    capability: ClassVar[str] = "integrate"
    does: ClassVar[str] = "integrate batches"

    def integrate(self, pretrained: Pretrained, adata: AnnData, request: IntegrationRequest) -> Integration:
        """Fine-tune on ``adata`` (never modified) and embed it."""
        raise NotImplementedError

    def maps_queries(self, pretrained: Pretrained) -> bool:
        """Return whether :meth:`integrate` maps ``adata`` onto ``pretrained`` instead of fine-tuning anew.

        True for a model already fine-tuned for integration: new batches get their own parameters (scArches) and
        the rest stays frozen.
        """
        return False


@dataclass(frozen=True)
class AttentionRequest:
    """How :func:`scfm.tl.gene_network` asks a family for attention scores between genes.

    ``rows``: the cells to aggregate over (``None``: all); ``attention_layer``: which transformer layer's attention
    (negative counts from the last); ``max_len``: tokens per cell (``None``: the checkpoint's); the other fields are
    the tool's arguments of the same names.
    """

    device: Any
    batch_size: int = 16
    block_size: int = 1024
    rows: np.ndarray | None = None
    attention_layer: int = -1
    max_len: int | None = None
    progress: bool = False


@dataclass
class AttentionScores:
    """Attention between the genes of a network, aggregated over cells.

    Attributes
    ----------
    scores
        ``(n_genes, n_genes)`` float32; ``scores[i, j]`` is the mean, over the cells whose tokens hold both genes, of
        the attention that gene ``j``'s token pays to gene ``i``'s token (heads averaged), times the cell's number of
        tokens (1 = uniform attention). Zero where the genes never share a cell; zero diagonal.
    cooccurrence
        ``(n_genes, n_genes)`` int32: the number of cells whose tokens hold both genes.
    n_cells
        Cells aggregated.
    record
        Family-specific provenance (layer, context, cells without a network gene, ...).
    """

    scores: np.ndarray
    cooccurrence: np.ndarray
    n_cells: int
    record: dict[str, Any] = field(default_factory=dict)


class InfersGeneNetworks:
    """Capability ``"gene_network"``: gene-gene scores from the model (gene embeddings, attention).

    ``network_methods`` lists the methods the family serves: ``"embedding"`` (the model's gene embedding of each
    gene, zero-shot, no cells needed) and/or ``"attention"`` (the model's attention aggregated over cells).
    """

    capability: ClassVar[str] = "gene_network"
    does: ClassVar[str] = "infer gene networks"
    network_methods: ClassVar[tuple[str, ...]] = ("embedding",)

    def gene_embeddings(self, pretrained: Pretrained, token_ids: np.ndarray) -> np.ndarray:
        """``(len(token_ids), width)`` float32 embeddings of the vocabulary genes ``token_ids``."""
        raise NotImplementedError

    def attention_scores(
        self,
        pretrained: Pretrained,
        source: ExpressionSource,
        alignment: GeneAlignment,
        token_ids: np.ndarray,
        request: AttentionRequest,
    ) -> AttentionScores:
        """Attention between the vocabulary genes ``token_ids`` over the cells of ``source`` that ``request`` picks."""
        raise NotImplementedError

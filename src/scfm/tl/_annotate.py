"""``scfm.tl.annotate``: cell-type labels from a labelled reference (fine-tuned classifier or embedding kNN)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from anndata import AnnData

from scfm._validation import checked_arguments, integer_or
from scfm.data import obs_categories
from scfm.genes import GeneRules
from scfm.models import AnnotationRequest, ModelArg, resolve_model
from scfm.models.base import CheckpointError, default_model_for, families_with

from ._annotate_probe import PROBE_TOP_GENES, annotate_by_probe
from ._annotate_zero_shot import predict_zero_shot
from ._labels import write_labels
from ._provenance import check_anndata, check_result_key, gene_fields

FINETUNE_TOP_GENES = 1200


@checked_arguments(n_top_genes=integer_or("auto", 1))
def annotate(
    adata: AnnData,
    reference: AnnData | None = None,
    labels_key: str | None = None,
    *,
    model: ModelArg = None,
    method: Literal["probe", "finetune", "knn", "generate"] | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    reference_gene_key: str | None = None,
    shared_genes_only: bool = True,
    n_top_genes: int | Literal["auto"] | None = "auto",
    gene_linear: bool = True,
    max_epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-4,
    max_len: int | None = None,
    n_neighbors: int = 15,
    unknown_threshold: float | None = None,
    min_genes: int = 50,
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "scfm_cell_type",
    metadata_key: str = "cell_type",
    candidates: Sequence[str] | None = None,
    top_k: int = 3,
    return_model: bool = False,
    progress: bool = True,
    copy: bool = False,
) -> Any:
    """Predict the cell types of ``adata`` from a labelled ``reference``, or zero-shot with an scMulan model.

    ``method="probe"`` (the default with a reference) is a linear probe of the frozen model: a multinomial logistic
    regression (L2, ``C=1``) fitted on the reference, whose features are the cell embedding of the pretrained model
    (standardised over the reference) beside the log-normalised values of the reference's ``n_top_genes`` most
    variable genes that both datasets share (unit variance over the reference). The embedding block is weighted so
    that both blocks carry the same total variance. Nothing is trained but the regression, so it takes seconds; any
    model that embeds cells serves (the bundled default, tGPT, unless ``model`` says otherwise). On the benchmarks of
    ``docs/benchmarks.md`` it beats a logistic regression on genes alone on PBMC T-cell states and ties it across
    pancreas studies, and it beats fine-tuning; random weights of the same architecture score about as well as the
    pretrained ones there, so the gain comes from the model's rank input, not from what pretraining learned.

    ``method="finetune"`` fine-tunes the model with a classification head on the reference's cell
    embeddings (scGPT's annotation recipe: cross-entropy only, no masking) and predicts the query with it.
    ``method="knn"`` is zero-shot: both datasets are embedded with the pretrained model and each query cell
    takes the majority label of its ``n_neighbors`` nearest reference cells (cosine distance).

    With a CellPLM model (``model="cellplm"``) fine-tuning trains an MLP head on the latent mean together with
    the transformer over cells (gene embeddings frozen; reference sentences re-drawn every epoch; every shared
    gene is used, so ``n_top_genes``, ``batch_size`` and ``max_len`` do not apply). Each dataset is read as one
    sample in sentences of the checkpoint's context. A learning rate around ``1e-3`` suits the small bundled
    model.

    With an scMulan model (``model="scmulan"``) annotation is zero-shot, by generation, and needs no reference:
    each cell is prompted with its genes and the "predict ``metadata_key``" task token, and the label is the term
    the model generates next, among the key's terms (``candidates`` restricts them; with a ``reference`` its
    labels are the candidates). Labels the model does not know are reported (a warning and
    ``uns["scfm"][key_added]["out_of_vocabulary"]``), never invented. ``metadata_key="tissue"`` or
    ``"technology"`` predicts those instead (``method="generate"``, the default for such a model when no
    reference is given or the model cannot use one); fine-tuning and kNN settings do not apply.

    Every method writes the same outputs: the label, its confidence, and the ``top_k`` most likely labels with
    their probabilities in ``adata.obsm[key_added + "_top"]`` (columns ``label_1``, ``probability_1``, ...).

    Parameters
    ----------
    adata
        Query cells (counts or log-normalised). Only ``obs[key_added]``, ``obs[key_added + "_confidence"]``,
        ``obsm[key_added + "_top"]`` and ``uns["scfm"][key_added]`` are written; on error nothing is.
    reference
        Labelled reference cells; it is never modified. Cells with a missing label are left out. Required except
        with an scMulan model.
    labels_key
        ``reference.obs`` column with the cell types (at least two); required with ``reference``.
    model
        Checkpoint: ``None`` (bundled default), a name or directory, or a model.
    method
        ``"probe"``, ``"finetune"``, ``"knn"`` or ``"generate"`` (see above); ``None`` picks ``"generate"`` for a
        model that annotates zero-shot when no reference is given (or the model cannot use one), else ``"probe"``.
        ``"finetune"`` and ``"knn"`` need an scGPT or CellPLM model (default: the bundled scGPT).
    layer, reference_layer, use_raw, gene_key, reference_gene_key
        Matrices and gene names of the query and the reference.
    shared_genes_only
        Use only the vocabulary genes that both datasets have, so that the classifier never relies on genes
        the query lacks (recommended when the gene sets differ). The probe's gene block always uses shared genes
        only, and each dataset is embedded from all of its own genes.
    n_top_genes
        The reference's most variable genes that the probe reads (``method="probe"``) or that fine-tuning and
        prediction use (``method="finetune"``); ``None`` uses every gene. ``"auto"``: 2,000 for the probe (the
        genes of the logistic-regression baseline of ``docs/benchmarks.md``), 1,200 for fine-tuning (it fits the
        context of the bundled scGPT model).
    gene_linear
        The fine-tuned classifier also scores the cell's gene tokens linearly, beside its cell embedding (a
        wide-and-deep head: the per-gene evidence a logistic regression uses; ``method="finetune"`` with an scGPT
        model). ``False``: the cell embedding alone, scGPT's original head. See ``docs/benchmarks.md`` for the
        measured difference.
    max_epochs, batch_size, lr, max_len
        Fine-tuning settings (``method="finetune"``): the encoder learns at ``lr``, the new classification
        head at ``10 * lr``. ``max_len`` also sets the embedding context (default: enough for every selected
        gene, at most the checkpoint's context).
    n_neighbors
        Neighbours of the kNN vote (``method="knn"``).
    unknown_threshold
        Cells whose confidence is below it are labelled ``"unknown"``. Confidence is the classifier's
        probability of the predicted label (``finetune``) or the fraction of neighbours that agree (``knn``).
        ``None``: every cell gets a reference label. 0.5 is a reasonable start for both methods.
    min_genes
        Fewest vocabulary genes the data must share with the model (and with each other).
    gene_id_type, species, aliases
        Gene-alignment rules (of the query and the reference), see :func:`scfm.genes.align_genes`:
        ``gene_id_type`` (``"auto"``, ``"symbol"`` or ``"ensembl"``) says what the names are, ``species="mouse"``
        matches mouse symbols case-insensitively to the human vocabulary without the human gene table,
        ``aliases=True`` also resolves aliases and previous symbols of genes that match no other way (off by
        default: it can change which genes are used).
    seed
        Seeds fine-tuning.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    key_added
        ``adata.obs`` column of the predicted labels.
    metadata_key, candidates
        ``method="generate"`` only: the metadata key to predict and the labels allowed (default: all of the key's
        terms).
    top_k
        How many alternatives to list per cell in ``obsm[key_added + "_top"]``.
    return_model
        Return the fine-tuned model (``method="finetune"`` only).
    progress
        Show progress bars.
    copy
        Write into a copy of ``adata`` and return it.
    """
    if method not in (None, "probe", "finetune", "knn", "generate"):
        raise ValueError(f"method must be 'probe', 'finetune', 'knn', 'generate' or None, got {method!r}")
    if unknown_threshold is not None and not 0.0 <= unknown_threshold <= 1.0:
        raise ValueError(f"unknown_threshold must be in [0, 1], got {unknown_threshold}")
    check_anndata(adata)
    if reference is not None:
        check_anndata(reference, "reference")
    if adata.n_obs == 0:
        raise ValueError("the query has no cells (n_obs == 0)")
    check_result_key(adata, key_added)
    rules = GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases)
    if (reference is None) != (labels_key is None):
        raise ValueError("pass reference and labels_key together (or neither, for zero-shot annotation by scMulan)")
    if model is None:  # the default model for what was asked
        model = default_model_for(_capability_for(method, reference))
    pretrained = resolve_model(model)
    capabilities = pretrained.spec.capabilities
    if method is None:
        zero_shot = "annotate_zero_shot" in capabilities
        generates = zero_shot and (reference is None or "annotate_reference" not in capabilities)
        method = "generate" if generates else "probe"
    needed = _capability_for(method, reference)
    by_family = method in ("finetune", "knn")
    if needed not in capabilities or (by_family and method not in pretrained.spec.reference_methods):
        able = " or ".join(f"{f.label} (model={f.bundled!r})" for f in families_with(needed))
        what = "zero-shot annotation by generation" if method == "generate" else f"method={method!r}"
        raise CheckpointError(f"{pretrained.name} is {pretrained.spec.a_label} model, which has no {what}; use {able}")
    fine_tuning_settings = {"max_epochs": max_epochs != 30, "lr": lr != 1e-4, "gene_linear": gene_linear is not True}
    if method == "probe" and any(fine_tuning_settings.values()):
        given = ", ".join(name for name, changed in fine_tuning_settings.items() if changed)
        warnings.warn(
            f"{given} only apply to method='finetune'; the linear probe (method='probe', the default with a reference) "
            "trains no model and ignores them. Pass method='finetune' to fine-tune.",
            UserWarning,
            stacklevel=3,  # the caller of the argument-checking wrapper
        )
    if method == "finetune" and max_epochs < 1:
        raise ValueError(
            f"max_epochs must be >= 1 for method='finetune' (an untrained head predicts nothing), got {max_epochs}"
        )
    if return_model and method != "finetune":
        raise ValueError(f"return_model=True needs method='finetune' (method={method!r} trains no model)")
    if method == "generate":
        if reference is not None:
            if labels_key not in reference.obs:
                raise KeyError(f"labels_key={labels_key!r} is not a column of reference.obs")
            if candidates is None:
                candidates = sorted(reference.obs[labels_key].dropna().astype(str).unique())
        probabilities, categories, record = predict_zero_shot(
            pretrained,
            adata,
            metadata_key=metadata_key,
            candidates=candidates,
            top_k=top_k,
            layer=layer,
            use_raw=use_raw,
            gene_key=gene_key,
            min_genes=min_genes,
            gene_rules=rules,
            batch_size=batch_size,
            device=device,
            key_added=key_added,
            progress=progress,
        )
        if copy:
            adata = adata.copy()
        write_labels(
            adata, key_added, probabilities, categories, top_k=top_k, unknown_threshold=unknown_threshold, record=record
        )
        return adata if copy else None
    if reference is None:
        raise ValueError(
            f"method={method!r} needs a labelled reference and labels_key; zero-shot annotation without a reference "
            "needs a model that generates labels (model='scmulan')"
        )
    if reference.n_obs == 0:
        raise ValueError("the query and the reference both need cells")
    if labels_key not in reference.obs:
        raise KeyError(
            f"labels_key={labels_key!r} is not a column of reference.obs (columns: {list(reference.obs.columns)})"
        )
    labelled = reference.obs[labels_key].notna().to_numpy()
    reference = reference[labelled]
    labels = obs_categories(reference, labels_key, "labels_key", min_categories=2)
    categories = sorted(set(labels))
    request = AnnotationRequest(
        labels=labels.to_numpy(),
        categories=categories,
        method=method,
        layer=layer,
        reference_layer=reference_layer,
        use_raw=use_raw,
        gene_key=gene_key,
        reference_gene_key=reference_gene_key,
        shared_genes_only=shared_genes_only,
        n_top_genes=_top_genes(n_top_genes, method),
        gene_linear=gene_linear,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        max_len=max_len,
        n_neighbors=n_neighbors,
        min_genes=min_genes,
        gene_rules=rules,
        seed=seed,
        device=device,
        progress=progress,
    )
    start = time.perf_counter()
    probe_record = {}
    if method == "probe":
        probe = annotate_by_probe(pretrained, adata, reference, request)
        result = probe.annotation
        probe_record = {
            "embedding_dim": probe.embedding_dim,
            "embedding_weight": probe.embedding_weight,
            "cross_validated_f1": probe.cross_validated_f1,
            "cross_validated_f1_se": probe.cross_validated_f1_se,
        }
    else:
        result = pretrained.spec.annotate_with_reference(pretrained, adata, reference, request)
    probabilities, genes_used, n_reference = result.probabilities, result.genes_used, result.n_reference
    seconds = time.perf_counter() - start

    if copy:
        adata = adata.copy()
    record = {
        "tool": "annotate",
        "method": method,
        "model": pretrained.name,
        "checkpoint_sha256": pretrained.sha256,
        "labels_key": labels_key,
        "family": pretrained.family,
        "reference_cells": int(n_reference),
        "reference_cells_without_label": int((~labelled).sum()),
        **_gene_record(result),
        "genes_used": int(genes_used),
        "n_top_genes": result.n_top_genes if method in ("finetune", "probe") else None,
        **probe_record,
        "shared_genes_only": shared_genes_only,
        "gene_linear": bool(gene_linear) if method == "finetune" else False,
        "max_epochs": max_epochs if method == "finetune" else 0,
        "n_neighbors": n_neighbors if method == "knn" else 0,
        "seconds": seconds,
        "seed": seed,
    }
    write_labels(
        adata, key_added, probabilities, categories, top_k=top_k, unknown_threshold=unknown_threshold, record=record
    )
    if return_model:
        return result.model
    return adata if copy else None


def _top_genes(n_top_genes: int | str | None, method: str) -> int | None:
    """``n_top_genes`` with ``"auto"`` resolved for ``method``."""
    if n_top_genes != "auto":
        return n_top_genes
    return PROBE_TOP_GENES if method == "probe" else FINETUNE_TOP_GENES


def _capability_for(method: str | None, reference: AnnData | None) -> str:
    """Return the capability a model needs for ``method`` (``None``: the default method, given the reference)."""
    if method == "generate" or (method is None and reference is None):
        return "annotate_zero_shot"
    if method in (None, "probe"):
        return "embed"
    return "annotate_reference"


def _gene_record(result) -> dict[str, Any]:
    """How the query's genes (``genes_*``, ``gene_rules``) and the reference's (``reference_genes_*``) matched."""
    record = {}
    if result.alignment is not None:
        record.update(gene_fields(result.alignment))
    if result.reference_alignment is not None:
        record.update(gene_fields(result.reference_alignment, "reference_", rules=False))
    return record

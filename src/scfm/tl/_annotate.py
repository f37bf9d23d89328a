"""``scfm.tl.annotate``: cell-type labels from a labelled reference (fine-tuned classifier or embedding kNN)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm.bench._baselines import obs_categories
from scfm.data import expression_source
from scfm.genes import align_genes
from scfm.models._device import resolve_device
from scfm.models._resolve import ModelArg, family_of, resolve_model
from scfm.models.cellplm import CellPLMClassifier
from scfm.models.scgpt import SCGPT, embed_cells

from ._annotate_cellplm import cellplm_annotation
from ._annotate_scmulan import annotate_by_generation
from ._finetune_data import HEAD_LR_FACTOR, accelerator_for, highly_variable_subset, training_copy
from ._provenance import write_provenance

UNKNOWN = "unknown"


def annotate(
    adata: AnnData,
    reference: AnnData | None = None,
    labels_key: str | None = None,
    *,
    model: ModelArg = None,
    method: Literal["finetune", "knn"] = "finetune",
    layer: str | None = None,
    reference_layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    reference_gene_key: str | None = None,
    shared_genes_only: bool = True,
    n_top_genes: int | None = 1200,
    max_epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-4,
    max_len: int | None = None,
    n_neighbors: int = 15,
    unknown_threshold: float | None = None,
    min_genes: int = 50,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "scfm_cell_type",
    metadata_key: str = "cell_type",
    candidates: Sequence[str] | None = None,
    top_k: int = 3,
    return_model: bool = False,
    progress: bool = True,
    copy: bool = False,
) -> SCGPT | CellPLMClassifier | AnnData | None:
    """Predict the cell types of ``adata`` from a labelled ``reference``, or zero-shot with an scMulan model.

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
    ``"technology"`` predicts those instead. ``method``, fine-tuning and kNN settings do not apply. The
    ``top_k`` most likely labels and their probabilities go to ``adata.obsm[key_added + "_top"]`` (columns
    ``label_1``, ``probability_1``, ...).

    Parameters
    ----------
    adata
        Query cells (counts or log-normalised). Only ``obs[key_added]``, ``obs[key_added + "_confidence"]``
        and ``uns["scfm"][key_added]`` are written; on error nothing is.
    reference
        Labelled reference cells; it is never modified. Cells with a missing label are left out. Required except
        with an scMulan model.
    labels_key
        ``reference.obs`` column with the cell types (at least two); required with ``reference``.
    model
        Checkpoint: ``None`` (bundled default), a name or directory, or a model.
    method
        ``"finetune"`` or ``"knn"`` (see above).
    layer, reference_layer, use_raw, gene_key, reference_gene_key
        Matrices and gene names of the query and the reference.
    shared_genes_only
        Use only the vocabulary genes that both datasets have, so that the classifier never relies on genes
        the query lacks (recommended when the gene sets differ).
    n_top_genes
        Fine-tune and predict on the reference's most variable genes (``method="finetune"``); ``None`` uses
        every gene.
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
    seed
        Seeds fine-tuning.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    key_added
        ``adata.obs`` column of the predicted labels.
    metadata_key, candidates, top_k
        scMulan only: the metadata key to predict, the labels allowed (default: all of the key's terms), and how
        many alternatives to list per cell.
    return_model
        Return the fine-tuned model (``method="finetune"`` only).
    progress
        Show progress bars.
    copy
        Write into a copy of ``adata`` and return it.
    """
    if method not in ("finetune", "knn"):
        raise ValueError(f"method must be 'finetune' or 'knn', got {method!r}")
    if return_model and method != "finetune":
        raise ValueError("return_model=True needs method='finetune' (the kNN mode trains no model)")
    if unknown_threshold is not None and not 0.0 <= unknown_threshold <= 1.0:
        raise ValueError(f"unknown_threshold must be in [0, 1], got {unknown_threshold}")
    if adata.n_obs == 0:
        raise ValueError("the query has no cells (n_obs == 0)")
    if (reference is None) != (labels_key is None):
        raise ValueError("pass reference and labels_key together (or neither, for zero-shot annotation by scMulan)")
    pretrained = resolve_model(model, families=("scgpt", "cellplm", "scmulan"))
    if family_of(pretrained) == "scmulan":
        if return_model:
            raise ValueError("return_model=True does not apply to scMulan's zero-shot annotation (no model is trained)")
        if reference is not None:
            if labels_key not in reference.obs:
                raise KeyError(f"labels_key={labels_key!r} is not a column of reference.obs")
            if candidates is None:
                candidates = sorted(reference.obs[labels_key].dropna().astype(str).unique())
        if copy:
            adata = adata.copy()
        annotate_by_generation(
            pretrained,
            adata,
            metadata_key=metadata_key,
            candidates=candidates,
            unknown_threshold=unknown_threshold,
            unknown_label=UNKNOWN,
            top_k=top_k,
            layer=layer,
            use_raw=use_raw,
            gene_key=gene_key,
            min_genes=min_genes,
            batch_size=batch_size,
            device=device,
            key_added=key_added,
            progress=progress,
        )
        return adata if copy else None
    if reference is None:
        raise ValueError(
            "annotation with an scGPT or CellPLM model needs a labelled reference and labels_key; zero-shot "
            "annotation without a reference needs model='scmulan'"
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

    start = time.perf_counter()
    if family_of(pretrained) == "cellplm":
        codes = pd.Categorical(labels, categories=categories).codes.astype(np.int64)
        probabilities, genes_used, finetuned = cellplm_annotation(
            pretrained,
            adata,
            reference,
            codes,
            len(categories),
            method=method,
            layer=layer,
            reference_layer=reference_layer,
            use_raw=use_raw,
            gene_key=gene_key,
            reference_gene_key=reference_gene_key,
            shared_genes_only=shared_genes_only,
            min_genes=min_genes,
            max_epochs=max_epochs,
            lr=lr,
            n_neighbors=n_neighbors,
            seed=seed,
            device=device,
            progress=progress,
        )
        n_reference, n_top_genes = reference.n_obs, None
    else:
        probabilities, genes_used, n_reference, finetuned = _scgpt_annotation(
            pretrained,
            adata,
            reference,
            labels,
            categories,
            method=method,
            layer=layer,
            reference_layer=reference_layer,
            use_raw=use_raw,
            gene_key=gene_key,
            reference_gene_key=reference_gene_key,
            shared_genes_only=shared_genes_only,
            n_top_genes=n_top_genes,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            max_len=max_len,
            n_neighbors=n_neighbors,
            min_genes=min_genes,
            seed=seed,
            device=device,
            progress=progress,
        )
    seconds = time.perf_counter() - start

    best = probabilities.argmax(1)
    confidence = probabilities[np.arange(len(best)), best].astype(np.float32)
    predicted = np.asarray(categories, dtype=object)[best]
    output_categories = list(categories)
    if unknown_threshold is not None:
        predicted = np.where(confidence < unknown_threshold, UNKNOWN, predicted)
        if UNKNOWN not in output_categories:
            output_categories.append(UNKNOWN)
    if copy:
        adata = adata.copy()
    adata.obs[key_added] = pd.Categorical(predicted, categories=output_categories)
    adata.obs[f"{key_added}_confidence"] = confidence
    write_provenance(
        adata,
        key_added,
        {
            "tool": "annotate",
            "method": method,
            "model": pretrained.name,
            "checkpoint_sha256": pretrained.sha256,
            "labels_key": labels_key,
            "categories": categories,
            "family": family_of(pretrained),
            "reference_cells": int(n_reference),
            "reference_cells_without_label": int((~labelled).sum()),
            "genes_used": int(genes_used),
            "n_top_genes": n_top_genes if method == "finetune" else None,
            "shared_genes_only": shared_genes_only,
            "unknown_threshold": unknown_threshold,
            "n_unknown": int((predicted == UNKNOWN).sum()) if unknown_threshold is not None else 0,
            "max_epochs": max_epochs if method == "finetune" else 0,
            "n_neighbors": n_neighbors if method == "knn" else 0,
            "seconds": seconds,
            "seed": seed,
        },
    )
    if return_model:
        return finetuned
    return adata if copy else None


def _scgpt_annotation(
    pretrained,
    adata: AnnData,
    reference: AnnData,
    labels,
    categories: list,
    *,
    method: str,
    layer: str | None,
    reference_layer: str | None,
    use_raw: bool,
    gene_key: str | None,
    reference_gene_key: str | None,
    shared_genes_only: bool,
    n_top_genes: int | None,
    max_epochs: int,
    batch_size: int,
    lr: float,
    max_len: int | None,
    n_neighbors: int,
    min_genes: int,
    seed: int,
    device: str,
    progress: bool,
) -> tuple[np.ndarray, int, int, SCGPT | None]:
    """Class probabilities of the query with an scGPT model, genes used, reference cells, fine-tuned model."""
    vocab = pretrained.vocab
    query = training_copy(adata, {}, layer=layer, use_raw=use_raw, gene_key=gene_key, vocab=vocab, min_genes=min_genes)
    ref = training_copy(
        reference,
        {"label": pd.Categorical(labels, categories=categories)},
        layer=reference_layer,
        use_raw=False,
        gene_key=reference_gene_key,
        vocab=vocab,
        min_genes=min_genes,
    )
    if shared_genes_only:  # copies name genes by vocabulary token, so shared genes are shared names
        shared = query.var_names.intersection(ref.var_names)
        if len(shared) < min_genes:
            raise ValueError(
                f"the query and the reference share {len(shared)} of the model's genes; at least {min_genes} are "
                "needed (check gene names, or lower min_genes)"
            )
        query = query[:, query.var_names.isin(shared)].copy()
        ref = ref[:, ref.var_names.isin(shared)].copy()

    finetuned = None
    if method == "finetune":
        ref = highly_variable_subset(ref, n_top_genes)
        query = query[:, query.var_names.isin(ref.var_names)].copy()
        if max_len is None:
            max_len = min(pretrained.module.config.max_len, ref.n_vars + 1)
        finetuned = SCGPT.for_finetuning(
            pretrained, ref, labels_key="label", label_categories=categories, min_genes=min_genes
        )
        finetuned.train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            max_len=max_len,
            mask_ratio=0.0,
            gep_weight=0.0,
            gepc_weight=0.0,
            cls_weight=1.0,
            head_lr_factor=HEAD_LR_FACTOR,
            seed=seed,
            accelerator=accelerator_for(device),
            enable_progress_bar=progress,
        )
        probabilities = finetuned.predict(query, max_len=max_len, device=device).to_numpy()
    else:
        probabilities = _knn_probabilities(pretrained, ref, query, categories, n_neighbors, max_len, device, progress)
    return probabilities, query.n_vars, ref.n_obs, finetuned


def _knn_probabilities(pretrained, ref: AnnData, query: AnnData, categories, n_neighbors, max_len, device, progress):
    from sklearn.neighbors import KNeighborsClassifier

    target = resolve_device(device)
    module = pretrained.module.to(target)

    def embed(data: AnnData) -> np.ndarray:
        source = expression_source(data)
        alignment = align_genes(source.var, pretrained.vocab, min_genes=1)
        return embed_cells(module, source, alignment, device=target, max_len=max_len, progress=progress).embeddings

    classifier = KNeighborsClassifier(n_neighbors=min(n_neighbors, ref.n_obs), metric="cosine")
    classifier.fit(embed(ref), ref.obs["label"].astype(str).to_numpy())
    probabilities = classifier.predict_proba(embed(query))
    order = [list(classifier.classes_).index(c) for c in categories]
    return probabilities[:, order]

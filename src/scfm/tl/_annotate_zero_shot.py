"""Zero-shot annotation without a reference (capability ``"annotate_zero_shot"``, e.g. scMulan's generation)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm.data import expression_source
from scfm.genes import align_genes
from scfm.models import Pretrained, resolve_device

from ._provenance import checkpoint_and_genes, write_provenance


def annotate_zero_shot(
    pretrained: Pretrained,
    adata: AnnData,
    *,
    metadata_key: str,
    candidates: Sequence[str] | None,
    unknown_threshold: float | None,
    unknown_label: str,
    top_k: int,
    layer: str | None,
    use_raw: bool,
    gene_key: str | None,
    min_genes: int,
    batch_size: int,
    device: str,
    key_added: str,
    progress: bool,
) -> None:
    """Write ``obs[key_added]``, ``obs[key_added + "_confidence"]``, ``obsm[key_added + "_top"]`` and provenance.

    Everything is computed before anything is written, so an error leaves ``adata`` unchanged.
    """
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    alignment = align_genes(source.var, pretrained.vocab, gene_key=gene_key, min_genes=min_genes)
    target = resolve_device(device)
    pretrained.module.to(target)
    start = time.perf_counter()
    prediction = pretrained.spec.annotate_zero_shot(
        pretrained,
        source,
        alignment,
        metadata_key,
        candidates=None if candidates is None else list(candidates),
        top_k=top_k,
        device=target,
        batch_size=batch_size,
        progress=progress,
        obs_names=np.asarray(adata.obs_names),
    )
    seconds = time.perf_counter() - start
    if prediction.out_of_vocabulary:
        warnings.warn(
            f"{len(prediction.out_of_vocabulary)} candidate labels are not {metadata_key!r} terms of the model and "
            f"are never predicted: {prediction.out_of_vocabulary[:10]} (listed in "
            f"adata.uns['scfm'][{key_added!r}]['out_of_vocabulary'])",
            stacklevel=3,
        )
    table = prediction.table
    labels = table["label"].to_numpy(dtype=object)
    confidence = table["probability"].to_numpy(dtype=np.float32)
    categories = list(prediction.candidates)
    n_unknown = 0
    if unknown_threshold is not None:
        low = confidence < unknown_threshold
        labels = np.where(low, unknown_label, labels)
        n_unknown = int(low.sum())
        if unknown_label not in categories:
            categories.append(unknown_label)
    alternatives = table.drop(columns=["label", "probability"])
    alternatives.index = adata.obs_names
    adata.obs[key_added] = pd.Categorical(labels, categories=categories)
    adata.obs[f"{key_added}_confidence"] = confidence
    adata.obsm[f"{key_added}_top"] = alternatives
    write_provenance(
        adata,
        key_added,
        {
            "tool": "annotate",
            "method": "generate",
            **checkpoint_and_genes(pretrained, alignment, source),
            "metadata_key": metadata_key,
            "categories": list(prediction.candidates),
            "out_of_vocabulary": list(prediction.out_of_vocabulary),
            "top_k": top_k,
            "unknown_threshold": unknown_threshold,
            "n_unknown": n_unknown,
            "seconds": seconds,
        },
    )

"""Zero-shot annotation without a reference (capability ``"annotate_zero_shot"``, e.g. scMulan's generation)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from scfm.data import expression_source
from scfm.genes import GeneRules, align_genes
from scfm.models import Pretrained, resolve_device

from ._provenance import checkpoint_and_genes


def predict_zero_shot(
    pretrained: Pretrained,
    adata: AnnData,
    *,
    metadata_key: str,
    candidates: Sequence[str] | None,
    top_k: int,
    layer: str | None,
    use_raw: bool,
    gene_key: str | None,
    min_genes: int,
    gene_rules: GeneRules,
    batch_size: int,
    device: str,
    key_added: str,
    progress: bool,
) -> tuple[np.ndarray, list[str], dict]:
    """Probabilities (cells x candidate labels), the candidate labels and provenance; nothing is written."""
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    alignment = align_genes(
        source.var, pretrained.vocab, gene_key=gene_key, min_genes=min_genes, **gene_rules.as_kwargs()
    )
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
    record = {
        "tool": "annotate",
        "method": "generate",
        **checkpoint_and_genes(pretrained, alignment, source),
        "metadata_key": metadata_key,
        "out_of_vocabulary": list(prediction.out_of_vocabulary),
        "seconds": seconds,
    }
    return prediction.probabilities, list(prediction.candidates), record

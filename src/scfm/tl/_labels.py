"""The one output schema of :func:`scfm.tl.annotate`, whatever the method: labels, confidence, top alternatives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm.models.base import top_labels

from ._provenance import write_provenance

UNKNOWN = "unknown"


def write_labels(
    adata: AnnData,
    key_added: str,
    probabilities: np.ndarray,
    categories: list[str],
    *,
    top_k: int,
    unknown_threshold: float | None,
    record: dict[str, Any],
) -> None:
    """Write the most likely of ``categories`` per cell and provenance.

    Sets ``obs[key_added]`` (categorical; ``"unknown"`` below ``unknown_threshold``), ``obs[key_added +
    "_confidence"]`` (the label's probability), ``obsm[key_added + "_top"]`` (``label_r``, ``probability_r`` of the
    ``top_k`` most likely labels) and ``uns["scfm"][key_added]`` (``record`` plus the outcome). Call it only when
    everything is computed: it is the one place that writes.
    """
    table = top_labels(np.asarray(probabilities), list(categories), top_k)
    predicted = table["label"].to_numpy(dtype=object)
    confidence = table["probability"].to_numpy(dtype=np.float32)
    output_categories = list(categories)
    n_unknown = 0
    if unknown_threshold is not None:
        low = confidence < unknown_threshold
        predicted = np.where(low, UNKNOWN, predicted)
        n_unknown = int(low.sum())
        if UNKNOWN not in output_categories:
            output_categories.append(UNKNOWN)
    alternatives = table.drop(columns=["label", "probability"])
    alternatives.index = adata.obs_names
    adata.obs[key_added] = pd.Categorical(predicted, categories=output_categories)
    adata.obs[f"{key_added}_confidence"] = confidence
    adata.obsm[f"{key_added}_top"] = alternatives
    write_provenance(
        adata,
        key_added,
        {
            **record,
            "categories": list(categories),
            "top_k": top_k,
            "unknown_threshold": unknown_threshold,
            "n_unknown": n_unknown,
        },
    )

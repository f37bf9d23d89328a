"""Validation of the obs/obsm fields that decide which cells form a CellPLM sentence."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ._data import plan_sentences


def sample_labels(adata: AnnData, sample_key: str | None) -> np.ndarray | None:
    """``adata.obs[sample_key]`` as an array (``None`` when no key), with clear errors."""
    if sample_key is None:
        return None
    if sample_key not in adata.obs:
        raise KeyError(f"sample_key={sample_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    labels = adata.obs[sample_key]
    if labels.isna().any():
        raise ValueError(
            f"adata.obs[{sample_key!r}] has {int(labels.isna().sum())} missing values; every cell needs a sample"
        )
    return np.asarray(labels.astype(str))


def spatial_coordinates(
    adata: AnnData, spatial_key: str | None, samples: np.ndarray | None = None
) -> np.ndarray | None:
    """``adata.obsm[spatial_key]`` as ``(n, 2)`` float64 (``None`` when no key), with clear errors.

    With ``samples``, a sample whose cells all have NaN coordinates is a non-spatial sample (e.g. dissociated
    cells trained beside spatial sections); NaN for only some cells of a sample is an error.
    """
    if spatial_key is None:
        return None
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"spatial_key={spatial_key!r} is not in adata.obsm (keys: {list(adata.obsm.keys())}); coordinates are "
            "usually in obsm['spatial']"
        )
    coordinates = np.asarray(adata.obsm[spatial_key])
    if coordinates.ndim != 2 or coordinates.shape[1] != 2:
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has shape {coordinates.shape}; CellPLM needs 2-D coordinates "
            f"(n_obs x 2): store the x/y columns under a new key, e.g. adata.obsm['spatial_xy'] = "
            f"adata.obsm[{spatial_key!r}][:, :2]"
        )
    if not np.issubdtype(coordinates.dtype, np.number):
        raise ValueError(f"adata.obsm[{spatial_key!r}] is not numeric (dtype {coordinates.dtype})")
    coordinates = coordinates.astype(np.float64)
    bad = ~np.isfinite(coordinates).all(1)
    if bad.any() and samples is not None:
        partial = [str(label) for label in np.unique(samples[bad]) if not bad[samples == label].all()]
        if not partial:
            return coordinates
        bad &= np.isin(samples, partial)
    if bad.any():
        names = list(adata.obs_names[bad][:5])
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has NaN/inf coordinates for {int(bad.sum())} cells (e.g. {names}); "
            "drop those cells, pass spatial_key=None, or (with a sample_key) give a whole sample NaN coordinates "
            "to read it without positions"
        )
    return coordinates


def sentences_of(
    adata: AnnData, *, sample_key: str | None, spatial_key: str | None, context: int, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Sentences of ``adata`` and its coordinates (validated), see :func:`scfm.data.plan_sentences`."""
    samples = sample_labels(adata, sample_key)
    coordinates = spatial_coordinates(adata, spatial_key, samples)
    sentences = plan_sentences(
        np.asarray(adata.obs_names), context=context, samples=samples, coordinates=coordinates, seed=seed
    )
    return sentences, coordinates

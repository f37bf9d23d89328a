"""Side-by-side UMAPs of several representations of the same cells."""

from __future__ import annotations

import os
from collections.abc import Sequence

import scanpy as sc
from anndata import AnnData

from ._figure import finish_figure


def embedding_comparison(
    adata: AnnData,
    rep_keys: Sequence[str],
    *,
    color: str,
    titles: Sequence[str] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    show: bool = False,
):
    """UMAP of each representation in ``adata.obsm[rep_keys]``, coloured by ``adata.obs[color]``.

    Neighbours and UMAP are computed on a private AnnData per representation; ``adata`` is not changed (for a
    UMAP you keep, run ``sc.pp.neighbors(adata, use_rep=key)`` and ``sc.tl.umap(adata)`` yourself).

    Returns
    -------
    The matplotlib figure (also saved to ``path`` when given).
    """
    import matplotlib.pyplot as plt

    if color not in adata.obs:
        raise KeyError(f"color={color!r} is not a column of adata.obs")
    missing = [key for key in rep_keys if key not in adata.obsm]
    if missing:
        raise KeyError(f"{missing} not in adata.obsm (keys: {list(adata.obsm.keys())})")
    titles = list(titles) if titles is not None else list(rep_keys)
    fig, axes = plt.subplots(1, len(rep_keys), figsize=(5.5 * len(rep_keys), 4.8), squeeze=False)
    for ax, key, title in zip(axes[0], rep_keys, titles, strict=True):
        work = AnnData(obs=adata.obs[[color]].copy(), obsm={key: adata.obsm[key]})
        work.obs_names = adata.obs_names
        sc.pp.neighbors(work, use_rep=key, n_neighbors=n_neighbors, random_state=seed)
        sc.tl.umap(work, random_state=seed)
        sc.pl.umap(work, color=color, ax=ax, show=False, title=title, frameon=False)
    return finish_figure(fig, path, show)

"""Side-by-side UMAPs of several representations of the same cells."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scanpy as sc
from anndata import AnnData

from ._figure import SaveArg, finish, legacy_path


def embedding_comparison(
    adata: AnnData,
    rep_keys: Sequence[str],
    *,
    color: str,
    titles: Sequence[str] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    ax: Sequence | None = None,
    show: bool | None = None,
    save: SaveArg = None,
    path: str | os.PathLike | None = None,
):
    """UMAP of each representation in ``adata.obsm[rep_keys]``, coloured by ``adata.obs[color]``, side by side.

    Neighbours (``sc.pp.neighbors``) and UMAP (``sc.tl.umap``) are computed on a private AnnData per
    representation and drawn with ``sc.pl.umap``; ``adata`` is not changed (for a UMAP you keep, run
    ``sc.pp.neighbors(adata, use_rep=key, key_added=...)`` and ``sc.tl.umap`` yourself).

    Parameters
    ----------
    adata
        Cells with the representations in ``obsm`` and ``color`` in ``obs``.
    rep_keys
        ``obsm`` keys to compare, one panel each.
    color
        ``obs`` column colouring the cells.
    titles
        Panel titles (default: the keys).
    n_neighbors, seed
        Of ``sc.pp.neighbors`` and ``sc.tl.umap``.
    ax
        One matplotlib Axes per key to draw into (default: a new figure with one row of panels).
    show
        Show the figure; ``None`` follows ``sc.settings.autoshow``, as in scanpy.
    save
        As in scanpy: ``True`` or a suffix (``"_pbmc.png"``) writes to ``sc.settings.figdir``
        (``embedding_comparison<suffix>``); a :class:`pathlib.Path` is the file itself.
    path
        Deprecated: ``save=pathlib.Path(path)``.

    Returns
    -------
    The list of Axes, one per representation (a multi-panel plot returns its Axes, as ``sc.pl.umap`` with several
    colours does), or ``None`` when the figure was shown.
    """
    import matplotlib.pyplot as plt

    save = legacy_path(save, path, "embedding_comparison")
    if color not in adata.obs:
        raise KeyError(f"color={color!r} is not a column of adata.obs")
    missing = [key for key in rep_keys if key not in adata.obsm]
    if missing:
        raise KeyError(f"{missing} not in adata.obsm (keys: {list(adata.obsm.keys())})")
    titles = list(titles) if titles is not None else list(rep_keys)
    if len(titles) != len(rep_keys):
        raise ValueError(f"titles has {len(titles)} entries for {len(rep_keys)} rep_keys")
    if ax is None:
        fig, grid = plt.subplots(1, len(rep_keys), figsize=(5.5 * len(rep_keys), 4.8), squeeze=False)
        axes = list(grid[0])
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(rep_keys):
            raise ValueError(f"ax holds {len(axes)} Axes for {len(rep_keys)} rep_keys; pass one per key")
        fig = axes[0].figure
    for panel, key, title in zip(axes, rep_keys, titles, strict=True):
        work = AnnData(obs=adata.obs[[color]].copy(), obsm={key: np.asarray(adata.obsm[key])})
        work.obs_names = adata.obs_names
        sc.pp.neighbors(work, use_rep=key, n_neighbors=n_neighbors, random_state=seed)
        sc.tl.umap(work, random_state=seed)
        sc.pl.umap(work, color=color, ax=panel, show=False, title=title, frameon=False)
    return finish(fig, axes, writekey="embedding_comparison", save=save, show=show, owns_figure=ax is None)

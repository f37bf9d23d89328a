"""``scfm.pl.perturbation``: predicted vs observed change on a perturbation's top differentially expressed genes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._figure import finish_figure

TARGET_SUM = 1e4


def perturbation(
    prediction: AnnData,
    adata: AnnData,
    perturbation: str,
    n_genes: int = 20,
    *,
    perturbation_key: str = "perturbation",
    control: str = "non-targeting",
    layer: str | None = None,
    ax=None,
    save: str | os.PathLike | None = None,
    show: bool = False,
):
    """Plot a perturbation's observed change per cell and the predicted mean change on its top DE genes.

    As in the scGPT paper's perturbation figure: for each of the ``n_genes`` genes most differentially expressed
    (largest ``|Welch t|`` of the perturbation's cells against the controls), a box of the observed per-cell
    change (``log1p`` expression, counts scaled to 10,000, minus the control mean), the observed mean change (black
    bar) and the predicted change (red dot). Genes are ordered by observed mean change.

    Parameters
    ----------
    prediction
        The AnnData returned by :func:`scfm.tl.predict_perturbation` (``layers["change"]``).
    adata
        The screen with raw counts holding cells of ``perturbation`` and of ``control``.
    perturbation
        A row of ``prediction`` (``"GENE"`` or ``"A+B"``) with observed cells in ``adata``.
    n_genes
        Top DE genes shown.
    perturbation_key, control, layer
        Where the screen's labels and counts are.
    ax
        Matplotlib axes to draw into (default: a new figure).
    save, show
        Save to this path; call ``plt.show()``.

    Returns
    -------
    The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if perturbation not in prediction.obs_names:
        raise KeyError(f"{perturbation!r} is not a row of the prediction (rows: {list(prediction.obs_names)[:8]})")
    if "change" not in prediction.layers:
        raise ValueError("prediction has no layers['change']; pass the AnnData returned by tl.predict_perturbation")
    if perturbation_key not in adata.obs:
        raise KeyError(f"perturbation_key={perturbation_key!r} is not a column of adata.obs")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    cells, controls = labels == perturbation, labels == str(control)
    if cells.sum() < 2 or controls.sum() < 2:
        raise ValueError(
            f"adata has {int(cells.sum())} cells of {perturbation!r} and {int(controls.sum())} of {control!r}; the "
            "observed change needs at least 2 of each"
        )
    genes = list(prediction.var_names)
    columns = pd.Index(adata.var_names).get_indexer(genes)
    if (columns < 0).any():
        raise ValueError("adata lacks genes of the prediction; pass the screen the prediction was made for")
    if not 1 <= n_genes <= len(genes):
        raise ValueError(f"n_genes must be between 1 and {len(genes)}, got {n_genes}")
    matrix = sp.csr_matrix(adata.X if layer is None else adata.layers[layer], dtype=np.float64)
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    values = np.log1p(matrix[:, columns].toarray() * scale[:, None])
    pert, ctrl = values[cells], values[controls]
    spread = pert.var(0, ddof=1) / len(pert) + ctrl.var(0, ddof=1) / len(ctrl)
    t = np.nan_to_num((pert.mean(0) - ctrl.mean(0)) / np.sqrt(np.maximum(spread, 1e-12)))
    top = np.argsort(-np.abs(t), kind="stable")[:n_genes]
    observed = pert[:, top] - ctrl.mean(0)[top]
    order = np.argsort(observed.mean(0), kind="stable")
    top, observed = top[order], observed[:, order]
    predicted = np.asarray(prediction[perturbation].layers["change"]).ravel()[top]

    fig = ax.figure if ax is not None else plt.figure(figsize=(max(6.0, 0.45 * n_genes + 2), 4.0))
    ax = ax if ax is not None else fig.add_subplot(111)
    positions = np.arange(n_genes)
    ax.boxplot(
        observed,
        positions=positions,
        widths=0.6,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#dddddd", "edgecolor": "#777777"},
        medianprops={"color": "#777777"},
    )
    ax.scatter(positions, observed.mean(0), marker="_", s=200, color="black", label="observed mean change", zorder=3)
    ax.scatter(positions, predicted, color="tab:red", s=30, label="predicted change", zorder=4)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(positions)
    ax.set_xticklabels([genes[i] for i in top], rotation=90)
    ax.set_ylabel("change in log1p expression vs control")
    seen = bool(prediction.obs.loc[perturbation, "seen_in_training"]) if "seen_in_training" in prediction.obs else None
    status = "" if seen is None else (" (seen in training)" if seen else " (unseen in training)")
    ax.set_title(f"{perturbation}{status}: top {n_genes} DE genes, {int(cells.sum())} cells")
    ax.legend(loc="best", fontsize=8)
    return finish_figure(fig, save, show)

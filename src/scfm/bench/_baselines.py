"""Baselines that write to ``obsm``/``obs`` like the scfm tools: HVG+PCA and its controls, Harmony, scVI, regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from scfm.data._finetune import _matrix, log_normalised, obs_categories


def _highly_variable_log(adata: AnnData, layer: str | None, use_raw: bool, n_top_genes: int) -> AnnData:
    """Log-normalised values of the ``n_top_genes`` most variable genes (all genes when fewer)."""
    work = log_normalised(adata, layer=layer, use_raw=use_raw)
    if work.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(work, n_top_genes=n_top_genes, subset=True)
    return work


def _pca(work: AnnData, n_comps: int, seed: int) -> np.ndarray:
    """PCA of ``work`` after scaling each gene to unit variance (clipped at 10, as scanpy's ``scale``)."""
    sc.pp.scale(work, max_value=10)
    n_comps = min(n_comps, work.n_obs - 1, work.n_vars - 1)
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    return work.obsm["X_pca"].astype(np.float32)


def _hvg_pca_array(
    adata: AnnData, layer: str | None, use_raw: bool, n_top_genes: int, n_comps: int, seed: int
) -> np.ndarray:
    return _pca(_highly_variable_log(adata, layer, use_raw, n_top_genes), n_comps, seed)


def rank_pca(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    key_added: str = "X_rank_pca",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Parameter-free rank baseline: per-cell ranks of the highly variable genes, z-scored per gene, then PCA.

    Each cell's expressed genes among the ``n_top_genes`` highly variable ones are ranked by value within the cell
    (ties share their mean rank) and scored ``rank / n_expressed``, so the cell's highest gene scores 1 and genes it
    does not express score 0. This is what a rank-input model (tGPT, Geneformer) reads, without a network: it is
    invariant to sequencing depth and to any per-cell monotone transform. Arguments as in :func:`hvg_pca`; the input
    is not modified apart from ``adata.obsm[key_added]``.
    """
    from scipy.stats import rankdata

    work = _highly_variable_log(adata, layer, use_raw, n_top_genes)
    ranked = sp.csr_matrix(work.X, dtype=np.float32)
    ranked.eliminate_zeros()
    for row in range(ranked.shape[0]):
        start, stop = ranked.indptr[row], ranked.indptr[row + 1]
        if stop > start:
            ranked.data[start:stop] = rankdata(ranked.data[start:stop]) / (stop - start)
    pcs = _pca(AnnData(ranked), n_comps, seed)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = pcs
    return adata if copy else None


def random_projection(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    key_added: str = "X_random_projection",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Random Gaussian projection baseline: the scaled highly variable genes of :func:`hvg_pca`, times a random matrix.

    The features are those HVG+PCA reads (log-normalised, ``n_top_genes`` HVGs, unit variance clipped at 10); they
    are projected onto ``n_comps`` directions drawn from a standard Gaussian (``seed``) instead of the principal ones:
    the floor any learned embedding of the same genes should beat. Arguments as in :func:`hvg_pca`.
    """
    work = _highly_variable_log(adata, layer, use_raw, n_top_genes)
    sc.pp.scale(work, max_value=10)
    directions = np.random.default_rng(seed).standard_normal((work.n_vars, n_comps)) / np.sqrt(n_comps)
    projected = (np.asarray(work.X) @ directions).astype(np.float32)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = projected
    return adata if copy else None


def hvg_pca(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    key_added: str = "X_hvg_pca",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """HVG + PCA baseline: log-normalise (if counts), select highly variable genes, scale, PCA.

    The input is not modified apart from ``adata.obsm[key_added]``.

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised; see :func:`log_normalised`).
    layer, use_raw
        Which matrix to read (as in :func:`scfm.tl.embed`).
    n_top_genes
        Highly variable genes kept (all genes when fewer).
    n_comps
        Principal components (capped by the data's rank).
    key_added
        ``adata.obsm`` key.
    seed
        Seed of the randomised PCA solver.
    copy
        Return a modified copy.
    """
    pcs = _hvg_pca_array(adata, layer, use_raw, n_top_genes, n_comps, seed)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = pcs
    return adata if copy else None


def harmony(
    adata: AnnData,
    batch_key: str,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    basis: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    theta: float = 2.0,
    key_added: str = "X_harmony",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Harmony (Korsunsky et al. 2019, via ``harmonypy``) on a PCA, written to ``adata.obsm[key_added]``.

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised).
    batch_key
        ``adata.obs`` column with each cell's batch (at least two batches).
    layer, use_raw
        Matrix for the PCA when ``basis`` is ``None`` (as in :func:`hvg_pca`).
    basis
        An ``adata.obsm`` key to correct instead of computing HVG+PCA (e.g. ``"X_hvg_pca"``).
    n_top_genes, n_comps
        HVG+PCA settings when ``basis`` is ``None``.
    theta
        Harmony's diversity penalty (its default is 2).
    key_added
        ``adata.obsm`` key of the corrected embedding.
    seed
        Seed of the PCA and of Harmony's clustering.
    copy
        Return a modified copy.
    """
    try:
        import harmonypy
    except ImportError as err:
        raise ImportError("harmony needs harmonypy: pip install 'scfm-models[eval]'") from err
    batches = obs_categories(adata, batch_key, "batch_key", min_categories=2)
    if basis is None:
        pcs = _hvg_pca_array(adata, layer, use_raw, n_top_genes, n_comps, seed)
    elif basis not in adata.obsm:
        raise KeyError(f"basis={basis!r} is not in adata.obsm (keys: {list(adata.obsm.keys())})")
    else:
        pcs = np.asarray(adata.obsm[basis])
    meta = pd.DataFrame({"batch": batches.to_numpy()})
    result = harmonypy.run_harmony(
        np.asarray(pcs, dtype=np.float64), meta, "batch", theta=theta, random_state=seed, verbose=False
    )
    corrected = np.asarray(result.Z_corr)
    if corrected.shape[0] != adata.n_obs:
        corrected = corrected.T
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = corrected.astype(np.float32)
    return adata if copy else None


def scvi_latent(
    adata: AnnData,
    batch_key: str | None,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    n_top_genes: int = 2000,
    n_latent: int = 30,
    max_epochs: int | None = None,
    round_counts: bool = False,
    key_added: str = "X_scvi",
    seed: int = 0,
    accelerator: str = "cpu",
    copy: bool = False,
) -> AnnData | None:
    """Write the scVI (Lopez et al. 2018) latent space, with the batch as covariate, to ``adata.obsm[key_added]``.

    The model is trained on the ``n_top_genes`` batch-aware highly variable genes of a private copy of the
    counts; ``adata`` gains only the embedding.

    Parameters
    ----------
    adata
        Cells x genes of raw counts.
    batch_key
        ``adata.obs`` column with each cell's batch (at least two batches); ``None`` for one batch (no covariate).
    layer, use_raw
        Which matrix holds the counts.
    n_top_genes
        Highly variable genes modelled (Seurat flavour on log-normalised values, per batch).
    n_latent
        Latent dimensions (scVI's default is 10; 30 is the scib benchmark setting).
    max_epochs
        Training epochs (scvi-tools' default heuristic when ``None``: ``min(round(20000 / n_cells * 400), 400)``).
    round_counts
        Round non-integer values (e.g. expected counts from RSEM) instead of raising; scVI's likelihood needs counts.
    key_added
        ``adata.obsm`` key.
    seed
        Seed of scvi-tools.
    accelerator
        Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
    copy
        Return a modified copy.
    """
    import scvi

    if batch_key is not None:
        obs_categories(adata, batch_key, "batch_key", min_categories=2)
    source = _matrix(adata, layer, use_raw, "scvi_latent")
    counts = sp.csr_matrix(source.matrix, dtype=np.float32, copy=True)  # rounded and normalised below
    non_integer = not np.all(np.equal(np.mod(counts.data, 1), 0))
    if non_integer and not round_counts:
        raise ValueError(
            f"{source.label} holds non-integer values; scVI models raw counts. Pass the counts (layer=...), or "
            "round_counts=True for expected counts"
        )
    if non_integer:
        counts.data = np.rint(counts.data)
        counts.eliminate_zeros()
    columns = [] if batch_key is None else [batch_key]
    work = AnnData(counts, obs=adata.obs[columns].astype(str).copy(), var=source.var[[]].copy())
    work.layers["counts"] = counts.copy()
    if work.n_vars > n_top_genes:
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
        sc.pp.highly_variable_genes(work, n_top_genes=n_top_genes, batch_key=batch_key, subset=True)
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(work, layer="counts", batch_key=batch_key)
    model = scvi.model.SCVI(work, n_latent=n_latent, n_layers=2, gene_likelihood="nb")
    model.train(max_epochs=max_epochs, accelerator=accelerator, enable_progress_bar=False)
    latent = model.get_latent_representation().astype(np.float32)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = latent
    return adata if copy else None


def logistic_regression(
    adata: AnnData,
    reference: AnnData,
    labels_key: str,
    *,
    layer: str | None = None,
    reference_layer: str | None = None,
    n_top_genes: int = 2000,
    C: float = 1.0,
    max_iter: int = 1000,
    key_added: str = "logreg_cell_type",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Logistic regression on log-normalised genes: train on ``reference``, predict ``adata``.

    Features are the ``n_top_genes`` highly variable genes of the reference that the query also has
    (matched by ``var_names``), log-normalised per dataset and standardised with the reference's mean and
    standard deviation. Writes ``adata.obs[key_added]`` (predicted label) and
    ``adata.obs[key_added + "_confidence"]`` (probability of that label).

    Parameters
    ----------
    adata
        Query cells (counts or log-normalised).
    reference
        Labelled reference cells.
    labels_key
        ``reference.obs`` column with the labels (at least two).
    layer, reference_layer
        Matrices to read from the query and the reference.
    n_top_genes
        Highly variable genes of the reference used as features.
    C, max_iter
        L2 regularisation strength (inverse) and solver iterations of scikit-learn's ``LogisticRegression``.
    key_added
        ``adata.obs`` column of the prediction.
    seed
        Seed of the solver.
    copy
        Return a modified copy.
    """
    from sklearn.linear_model import LogisticRegression

    labels = obs_categories(reference, labels_key, "labels_key", min_categories=2)
    ref = log_normalised(reference, layer=reference_layer)
    query = log_normalised(adata, layer=layer)
    shared = ref.var_names.intersection(query.var_names, sort=False)
    if len(shared) < 50:
        raise ValueError(
            f"the query shares only {len(shared)} genes with the reference (by var_names); at least 50 are needed"
        )
    ref = ref[:, shared].copy()
    if ref.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(ref, n_top_genes=n_top_genes)
        ref = ref[:, ref.var["highly_variable"].to_numpy()].copy()
    genes = ref.var_names
    x_ref = ref.X.toarray()
    x_query = query[:, genes].X.toarray()
    mean, std = x_ref.mean(0), x_ref.std(0)
    std[std == 0] = 1.0
    classifier = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    classifier.fit((x_ref - mean) / std, labels.to_numpy())
    probabilities = classifier.predict_proba((x_query - mean) / std)
    best = probabilities.argmax(1)
    if copy:
        adata = adata.copy()
    adata.obs[key_added] = pd.Categorical(classifier.classes_[best], categories=classifier.classes_)
    adata.obs[f"{key_added}_confidence"] = probabilities[np.arange(len(best)), best].astype(np.float32)
    return adata if copy else None

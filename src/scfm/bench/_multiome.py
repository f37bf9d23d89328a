"""Multi-omic integration baselines: MultiVI, totalVI, PCA(RNA)+LSI(ATAC) (+Harmony), RNA-only PCA, muon's WNN.

Every function takes a MuData (cells may lack a modality: an outer join of ``obs``) and returns a cells x dims
float32 array in ``mdata.obs`` order, or (WNN) graph metrics; nothing is written into the MuData.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scfm.data._mudata import read_modalities, select_features


def _log_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    out = (sp.diags(1e4 / np.maximum(totals, 1.0)) @ matrix).tocsr()
    out.data = np.log1p(out.data)
    return out


def _pca(matrix, n_comps: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dense = np.asarray(matrix.todense() if sp.issparse(matrix) else matrix, dtype=np.float32)
    dense = (dense - dense.mean(0)) / np.maximum(dense.std(0), 1e-6)
    return PCA(min(n_comps, min(dense.shape) - 1), random_state=seed).fit_transform(dense).astype(np.float32)


def _lsi(matrix: sp.csr_matrix, n_comps: int, seed: int) -> np.ndarray:
    """Binarise, TF-IDF (``log1p(1e4 tf idf)``), truncated SVD; the first component (depth) is dropped."""
    from sklearn.decomposition import TruncatedSVD

    binary = matrix.copy()
    binary.data[:] = 1.0
    per_cell = np.asarray(binary.sum(axis=1)).ravel()
    idf = binary.shape[0] / np.maximum(np.asarray(binary.sum(axis=0)).ravel(), 1.0)
    tfidf = (sp.diags(1.0 / np.maximum(per_cell, 1.0)) @ binary @ sp.diags(idf)).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    svd = TruncatedSVD(n_comps + 1, random_state=seed).fit_transform(tfidf)[:, 1:]
    return ((svd - svd.mean(0)) / np.maximum(svd.std(0), 1e-6)).astype(np.float32)


def _clr(matrix: sp.csr_matrix) -> np.ndarray:
    dense = np.log1p(np.asarray(matrix.todense(), dtype=np.float64))
    return (dense - dense.mean(axis=1, keepdims=True)).astype(np.float32)


def concatenated_pca(
    mdata,
    modalities: dict[str, str],
    *,
    batch_key: str | None = None,
    harmony: bool = False,
    n_top_genes: int = 2000,
    n_top_peaks: int | None = 20000,
    n_comps: int = 30,
    seed: int = 0,
) -> np.ndarray:
    """PCA of log-normalised highly variable genes beside LSI of peaks (or PCA of CLR proteins), then Harmony.

    Each block is computed on the cells measured in that modality and L2-scaled per cell; a cell missing a modality
    gets zeros in its block (the block's centre). With ``harmony=True`` Harmony corrects the concatenation on
    ``mdata.obs[batch_key]``.
    """
    data = read_modalities(mdata, modalities)
    batches = None if batch_key is None else mdata.obs[batch_key].astype(str).to_numpy()
    blocks = []
    for kind, modality in data.items():
        rows = np.flatnonzero(modality.present)
        block = np.zeros((mdata.n_obs, n_comps), dtype=np.float32)
        if kind == "rna":
            keep = select_features(modality, n_top_genes, None if batches is None else pd.factorize(batches)[0])
            values = _pca(_log_normalised(modality.matrix[rows][:, keep]), n_comps, seed)
        elif kind == "atac":
            keep = select_features(modality, n_top_peaks)
            values = _lsi(modality.matrix[rows][:, keep], n_comps, seed)
        else:
            values = _pca(_clr(modality.matrix[rows]), min(n_comps, modality.matrix.shape[1] - 1), seed)
        values = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-6)
        block[rows, : values.shape[1]] = values
        blocks.append(block)
    joint = np.hstack(blocks)
    if harmony:
        if batch_key is None:
            raise ValueError("harmony=True needs batch_key")
        joint = _harmony(joint, batches, seed)
    return joint.astype(np.float32)


def rna_pca(mdata, rna_key: str = "rna", *, n_top_genes: int = 2000, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """PCA of log-normalised highly variable genes (cells without RNA get ``NaN`` rows)."""
    from scfm.data._mudata import Modality

    mod = mdata.mod[rna_key]
    position = np.asarray(mdata.obsmap[rna_key]).ravel()
    present = position > 0
    matrix = sp.csr_matrix(mod.X, dtype=np.float32)[position[present] - 1]
    modality = Modality("rna", rna_key, matrix, np.ones(matrix.shape[0], bool), pd.Index(mod.var_names))
    keep = select_features(modality, n_top_genes)
    out = np.full((mdata.n_obs, n_comps), np.nan, dtype=np.float32)
    out[present] = _pca(_log_normalised(matrix[:, keep]), n_comps, seed)
    return out


def _harmony(embedding: np.ndarray, batches: np.ndarray, seed: int) -> np.ndarray:
    import harmonypy

    meta = pd.DataFrame({"batch": batches})
    result = harmonypy.run_harmony(np.asarray(embedding, np.float64), meta, "batch", random_state=seed, verbose=False)
    corrected = np.asarray(result.Z_corr)
    return corrected.T if corrected.shape[0] != embedding.shape[0] else corrected


def zero_padded(mdata, modalities: dict[str, str], batch_key: str | None):
    """Return a fully paired MuData for scvi-tools models: every modality holds every cell.

    Zeros stand where a modality was not measured (MultiVI's and totalVI's convention for missing modalities and
    proteins outside a batch's panel).
    """
    import mudata as md

    data = read_modalities(mdata, modalities)
    mods = {}
    for kind, modality in data.items():
        obs = pd.DataFrame(index=mdata.obs_names.copy())
        if batch_key is not None:
            obs[batch_key] = mdata.obs[batch_key].astype(str).to_numpy()
        mods[modalities[kind]] = AnnData(modality.matrix.copy(), obs=obs, var=pd.DataFrame(index=modality.features))
    with md.set_options(pull_on_update=False):
        padded = md.MuData(mods)
    if batch_key is not None:
        padded.obs[batch_key] = mdata.obs[batch_key].astype(str).to_numpy()
    return padded


def multivi(
    mdata,
    modalities: dict[str, str],
    batch_key: str,
    *,
    n_top_genes: int | None = None,
    n_top_peaks: int | None = 20000,
    max_epochs: int = 25,
    seed: int = 0,
) -> np.ndarray:
    """MultiVI (scvi-tools) on RNA + ATAC counts; cells missing a modality have zero rows, as MultiVI expects."""
    import scvi

    scvi.settings.seed = seed
    data = read_modalities(mdata, modalities)
    rna = data["rna"].subset(select_features(data["rna"], n_top_genes)) if n_top_genes else data["rna"]
    atac = data["atac"].subset(select_features(data["atac"], n_top_peaks))
    import mudata as md

    mods = {}
    for kind, modality in (("rna", rna), ("atac", atac)):
        obs = pd.DataFrame({batch_key: mdata.obs[batch_key].astype(str).to_numpy()}, index=mdata.obs_names.copy())
        mods[kind] = AnnData(modality.matrix.copy(), obs=obs, var=pd.DataFrame(index=modality.features))
    with md.set_options(pull_on_update=False):
        padded = md.MuData(mods)
    padded.obs[batch_key] = mdata.obs[batch_key].astype(str).to_numpy()
    scvi.model.MULTIVI.setup_mudata(
        padded,
        batch_key=batch_key,
        modalities={"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"},
    )
    model = scvi.model.MULTIVI(padded, n_genes=rna.matrix.shape[1], n_regions=atac.matrix.shape[1])
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def totalvi(
    mdata, modalities: dict[str, str], batch_key: str, *, n_top_genes: int = 2000, max_epochs: int = 100, seed: int = 0
) -> np.ndarray:
    """Return the totalVI (scvi-tools) latent of RNA + protein counts.

    Proteins outside a batch's panel are zeros, which totalVI's batch mask recognises; cells missing a modality have
    zero rows.
    """
    import mudata as md
    import scvi

    scvi.settings.seed = seed
    data = read_modalities(mdata, modalities)
    codes = pd.factorize(mdata.obs[batch_key].astype(str))[0]
    rna = data["rna"].subset(select_features(data["rna"], n_top_genes, codes))
    mods = {}
    for kind, modality in (("rna", rna), ("protein", data["protein"])):
        obs = pd.DataFrame({batch_key: mdata.obs[batch_key].astype(str).to_numpy()}, index=mdata.obs_names.copy())
        dense = modality.matrix.toarray() if kind == "protein" else modality.matrix.copy()
        mods[kind] = AnnData(dense, obs=obs, var=pd.DataFrame(index=modality.features))
    with md.set_options(pull_on_update=False):
        padded = md.MuData(mods)
    padded.obs[batch_key] = mdata.obs[batch_key].astype(str).to_numpy()
    scvi.model.TOTALVI.setup_mudata(
        padded,
        batch_key=batch_key,
        modalities={"rna_layer": "rna", "protein_layer": "protein", "batch_key": "rna"},
    )
    model = scvi.model.TOTALVI(padded)
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def wnn_scores(
    mdata,
    modalities: dict[str, str],
    *,
    batch_key: str,
    label_key: str | None,
    n_neighbors: int = 15,
    n_comps: int = 30,
    seed: int = 0,
) -> dict[str, float]:
    """Score muon's weighted-nearest-neighbour graph (paired cells only), scored with scib-metrics' graph metrics.

    Each modality gets its own PCA (RNA, CLR protein) or LSI (ATAC) and kNN graph; ``muon.pp.neighbors`` weights
    them per cell. Scores: graph connectivity, cLISI and iLISI on the WNN graph's ``n_neighbors`` strongest edges,
    and NMI/ARI of a Leiden clustering of it (``label_key=None``: iLISI only).
    """
    import mudata as md
    import muon as mu
    import scanpy as sc
    from scib_metrics import clisi_knn, graph_connectivity, ilisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults

    data = read_modalities(mdata, modalities)
    paired = np.all([m.present for m in data.values()], axis=0)
    rows = np.flatnonzero(paired)
    mods = {}
    for kind, modality in data.items():
        matrix = modality.matrix[rows]
        if kind == "rna":
            rep = _pca(_log_normalised(matrix[:, select_features(modality, 2000)]), n_comps, seed)
        elif kind == "atac":
            rep = _lsi(matrix[:, select_features(modality, 20000)], n_comps, seed)
        else:
            rep = _pca(_clr(matrix), min(n_comps, matrix.shape[1] - 1), seed)
        view = AnnData(obs=pd.DataFrame(index=mdata.obs_names[rows]))
        view.obsm["X_rep"] = rep
        sc.pp.neighbors(view, use_rep="X_rep", n_neighbors=n_neighbors, random_state=seed)
        mods[kind] = view
    with md.set_options(pull_on_update=False):
        joint = md.MuData(mods)
    mu.pp.neighbors(joint, key_added="wnn", n_neighbors=n_neighbors, random_state=seed)
    graph = sp.csr_matrix(joint.obsp["wnn_connectivities"])
    indices = np.zeros((len(rows), n_neighbors), dtype=np.int64)
    distances = np.zeros((len(rows), n_neighbors), dtype=np.float32)
    for i in range(len(rows)):
        start, stop = graph.indptr[i], graph.indptr[i + 1]
        cols, weights = graph.indices[start:stop], graph.data[start:stop]
        order = np.argsort(-weights)[:n_neighbors]
        chosen = np.full(n_neighbors, i)
        chosen[: len(order)] = cols[order]
        indices[i] = chosen
        distances[i, : len(order)] = 1.0 - weights[order]
    neighbours = NeighborsResults(indices=indices, distances=distances)
    batches = mdata.obs[batch_key].astype(str).to_numpy()[rows]
    scores = {"cells": float(len(rows)), "iLISI": float(ilisi_knn(neighbours, batches))}
    if label_key is not None:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

        labels = mdata.obs[label_key].astype(str).to_numpy()[rows]
        scores["cLISI"] = float(clisi_knn(neighbours, labels))
        scores["Graph conn."] = float(graph_connectivity(neighbours, labels))
        sc.tl.leiden(joint, neighbors_key="wnn", key_added="leiden", random_state=seed, flavor="igraph", n_iterations=2)
        clusters = joint.obs["leiden"].astype(str).to_numpy()
        scores["Leiden NMI"] = float(normalized_mutual_info_score(labels, clusters))
        scores["Leiden ARI"] = float(adjusted_rand_score(labels, clusters))
    return scores

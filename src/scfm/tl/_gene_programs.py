"""``scfm.tl.gene_programs``: Leiden modules of a gene network and their activity in every cell."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scfm._validation import checked_arguments, integer, real, text
from scfm.data import expression_source, iter_row_blocks

from ._provenance import check_anndata, check_result_key, write_provenance

NO_PROGRAM = "none"


def _check_network(adata: AnnData, key: str) -> sp.csr_matrix:
    if key not in adata.varp:
        available = list(adata.varp.keys()) or "none"
        raise KeyError(
            f"key={key!r} is not in adata.varp (available: {available}); run scfm.tl.gene_network(adata, "
            f"key_added={key!r}) first"
        )
    graph = sp.csr_matrix(adata.varp[key], dtype=np.float64)
    if graph.nnz and (not np.isfinite(graph.data).all() or (graph.data < 0).any()):
        raise ValueError(f"adata.varp[{key!r}] holds negative or non-finite weights; gene programs need weights >= 0")
    return graph


def leiden_modules(graph: sp.csr_matrix, resolution: float, seed: int, n_iterations: int = -1) -> np.ndarray:
    """Leiden communities (modularity) of the undirected graph ``graph + graph.T`` over its non-isolated genes.

    Returns one label per gene, ``-1`` for genes without edges. igraph's Leiden draws from Python's ``random``; it is
    run with a generator seeded by ``seed`` and the global generator is restored afterwards.
    """
    import igraph

    undirected = sp.triu(graph + graph.T, k=1).tocoo()
    connected = np.unique(np.concatenate([undirected.row, undirected.col]))
    labels = np.full(graph.shape[0], -1, dtype=np.int64)
    if connected.size == 0:
        return labels
    local = np.full(graph.shape[0], -1, dtype=np.int64)
    local[connected] = np.arange(connected.size)
    edges = np.column_stack([local[undirected.row], local[undirected.col]])
    network = igraph.Graph(n=int(connected.size), edges=edges.tolist(), directed=False)
    igraph.set_random_number_generator(random.Random(seed))
    try:
        partition = network.community_leiden(
            objective_function="modularity",
            weights=undirected.data.tolist(),
            resolution=resolution,
            n_iterations=n_iterations,
        )
    finally:
        igraph.set_random_number_generator(random)
    labels[connected] = np.asarray(partition.membership, dtype=np.int64)
    return labels


def _ordered_programs(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Program index per gene (``-1``: none), largest program first (ties by first gene), and each program's genes."""
    members = [np.flatnonzero(labels == label) for label in np.unique(labels[labels >= 0])]
    members = [genes for genes in members if genes.size >= min_size]
    members.sort(key=lambda genes: (-genes.size, genes[0]))
    program = np.full(labels.size, -1, dtype=np.int64)
    for index, genes in enumerate(members):
        program[genes] = index
    return program, members


def program_activity(matrix: object, members: list[np.ndarray], n_vars: int, block_size: int) -> np.ndarray:
    """Mean value of each program's genes per cell, ``(n_obs, n_programs)`` float32, ``block_size`` rows at a time."""
    n_obs = int(matrix.shape[0])
    if not members:
        return np.zeros((n_obs, 0), dtype=np.float32)
    rows = np.concatenate(members)
    cols = np.concatenate([np.full(genes.size, i) for i, genes in enumerate(members)])
    weights = np.concatenate([np.full(genes.size, 1.0 / genes.size) for genes in members])
    average = sp.csr_matrix((weights, (rows, cols)), shape=(n_vars, len(members)))
    out = np.zeros((n_obs, len(members)), dtype=np.float32)
    for start, stop, block in iter_row_blocks(matrix, block_size, None):
        out[start:stop] = np.asarray((block @ average).todense() if sp.issparse(block) else block @ average)
    return out


@checked_arguments(key=text(), resolution=real(0, include_minimum=False), min_size=integer(1))
def gene_programs(
    adata: AnnData,
    key: str = "scfm_gene_network",
    *,
    resolution: float = 1.0,
    min_size: int = 5,
    layer: str | None = None,
    use_raw: bool = False,
    seed: int = 0,
    block_size: int = 4096,
    key_added: str = "scfm_gene_program",
    copy: bool = False,
) -> AnnData | None:
    """Find gene programs (Leiden modules) in a gene network and score their activity in every cell.

    The network ``adata.varp[key]`` (e.g. from :func:`scfm.tl.gene_network`) is made undirected (``W + W.T``) and
    clustered with Leiden (modularity, igraph) at ``resolution``. Modules of at least ``min_size`` genes are the
    programs, numbered from the largest (``"0"``, ``"1"``, ...); genes in smaller modules or without edges get
    ``"none"``. A program's activity in a cell is the mean value of its genes in the matrix read (pass
    log-normalised values through ``layer``), computed ``block_size`` rows at a time on sparse data.

    Parameters
    ----------
    adata
        AnnData with a gene network in ``varp``.
    key
        ``adata.varp`` key of the network (non-negative weights).
    resolution
        Leiden resolution: higher gives more, smaller modules.
    min_size
        Fewest genes in a program (the scGPT paper keeps modules of at least 5 genes).
    layer, use_raw
        Matrix whose values are averaged (default ``adata.X``); with ``use_raw`` its genes must be ``adata.var``'s.
    seed
        Seed of the Leiden run (results are deterministic for a given seed).
    block_size
        Rows read at a time for the activity scores.
    key_added
        Programs go to ``adata.var[key_added]`` (categorical), activities to ``adata.obsm[key_added]``
        (``n_obs x n_programs`` float32, columns in program order) and parameters to ``adata.uns["scfm"][key_added]``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). On error the AnnData is unchanged.
    """
    check_anndata(adata)
    check_result_key(adata, key_added)
    graph = _check_network(adata, key)
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    if not pd.Index(source.var.index).equals(pd.Index(adata.var_names)):
        raise ValueError(f"{source.label} has other genes than adata.var; pass layer= or use_raw=False")
    labels = leiden_modules(graph, resolution, seed)
    program, members = _ordered_programs(labels, min_size)
    activity = program_activity(source.matrix, members, adata.n_vars, block_size)
    names = [str(i) for i in range(len(members))]
    column = pd.Categorical(np.where(program >= 0, program.astype(str), NO_PROGRAM), categories=[*names, NO_PROGRAM])
    if copy:
        adata = adata.copy()
    adata.var[key_added] = column
    adata.obsm[key_added] = activity
    write_provenance(
        adata,
        key_added,
        {
            "network": key,
            "resolution": float(resolution),
            "min_size": int(min_size),
            "seed": int(seed),
            "n_programs": len(members),
            "program_names": names,
            "program_sizes": [int(genes.size) for genes in members],
            "n_genes_without_program": int((program < 0).sum()),
            "matrix": source.label,
            "activity": "mean value of the program's genes per cell",
        },
    )
    return adata if copy else None

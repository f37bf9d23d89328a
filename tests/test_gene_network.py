"""scfm.tl.gene_network and scfm.tl.gene_programs: output schema, bounds, determinism, bad input, planted modules."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score

import scfm
from scfm.bench._grn import score_neighbourhoods, score_ranking, score_regulator_edges
from scfm.models import load_pretrained
from scfm.models.scgpt._gene_network import layer_attention
from scfm.tl._network_graph import cosine_top_k_graph, top_k_graph

pytestmark = pytest.mark.usefixtures("single_thread")

FAKE = [f"NOTAGENE{i}" for i in range(6)]


@pytest.fixture(scope="module")
def vocab_genes() -> list[str]:
    """80 genes the bundled default model knows (from pbmc68k_reduced's raw genes)."""
    vocab = load_pretrained("scgpt").vocab
    genes = [g for g in sc.datasets.pbmc68k_reduced().raw.var_names if g in vocab]
    return genes[:80]


def counts(genes: list[str], n_cells: int = 60, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(2, 0.5, size=(n_cells, len(genes))).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    obs = pd.DataFrame(
        {"state": pd.Categorical(np.where(np.arange(n_cells) % 3 == 0, "a", "b"))},
        index=[f"c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture
def adata(vocab_genes) -> ad.AnnData:
    """Vocabulary genes, then six genes the model does not know."""
    return counts([*vocab_genes, *FAKE])


def test_embedding_network_is_symmetric_sparse_and_counts_unknown_genes(adata):
    scfm.tl.gene_network(adata, top_k=5, min_genes=20)
    net = adata.varp["scfm_gene_network"]
    assert sp.isspmatrix_csr(net) and net.shape == (adata.n_vars, adata.n_vars) and net.dtype == np.float32
    assert abs(net - net.T).max() == 0
    assert net.diagonal().sum() == 0 and (net.data > 0).all() and (net.data <= 1 + 1e-6).all()
    rows = np.diff(net.indptr)
    fake = adata.var_names.isin(FAKE)
    assert (rows[fake] == 0).all() and net[:, fake].nnz == 0
    assert (rows[~fake] >= 1).all() and net.nnz <= 2 * 5 * (~fake).sum()
    record = adata.uns["scfm"]["scfm_gene_network"]
    assert record["n_genes_out_of_vocabulary"] == len(FAKE) and record["n_genes_network"] == (~fake).sum()
    assert record["method"] == "embedding" and record["symmetric"]


def test_embedding_network_keeps_each_genes_top_k_by_cosine(vocab_genes):
    embeddings = np.random.default_rng(1).normal(size=(30, 8))
    graph = cosine_top_k_graph(embeddings, 4, chunk=7).toarray()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    for i in range(30):
        best = np.argsort(-cosine[i])[:4]
        positive = best[cosine[i, best] > 0]
        np.testing.assert_allclose(graph[i, positive], cosine[i, positive], rtol=1e-5)
    assert np.allclose(graph, graph.T)


def test_genes_restricts_the_network_and_unknown_names_are_reported(adata, vocab_genes):
    chosen = vocab_genes[:20] + FAKE[:2]
    scfm.tl.gene_network(adata, genes=chosen, top_k=3, min_genes=20)
    net = adata.varp["scfm_gene_network"]
    inside = adata.var_names.isin(vocab_genes[:20])
    assert net[~inside].nnz == 0 and net[:, ~inside].nnz == 0 and net[inside].nnz > 0
    assert adata.uns["scfm"]["scfm_gene_network"]["n_genes_out_of_vocabulary"] == 2
    before = dict(adata.varp)
    with pytest.raises(ValueError, match=r"not in adata.var_names: \['NOPE1'\]"):
        scfm.tl.gene_network(adata, genes=[*vocab_genes[:5], "NOPE1"], key_added="other", min_genes=20)
    assert "other" not in adata.varp and set(adata.varp) == set(before)


def test_attention_network_is_directed_top_k_and_independent_of_batching(adata):
    scfm.tl.gene_network(adata, method="attention", top_k=4, min_genes=20, batch_size=3, block_size=7)
    net = adata.varp["scfm_gene_network"]
    assert sp.isspmatrix_csr(net) and net.shape == (adata.n_vars, adata.n_vars)
    assert np.diff(net.indptr).max() <= 4 and net.diagonal().sum() == 0
    assert abs(net - net.T).max() > 0  # directed
    record = adata.uns["scfm"]["scfm_gene_network"]
    assert record["n_cells"] == adata.n_obs and not record["symmetric"] and record["n_genes_out_of_vocabulary"] == 6
    other = adata.copy()
    scfm.tl.gene_network(other, method="attention", top_k=4, min_genes=20, batch_size=50, block_size=1000)
    np.testing.assert_allclose(other.varp["scfm_gene_network"].toarray(), net.toarray(), rtol=1e-4, atol=1e-6)
    shuffled = adata[np.random.default_rng(0).permutation(adata.n_obs)].copy()
    scfm.tl.gene_network(shuffled, method="attention", top_k=4, min_genes=20, batch_size=8)
    np.testing.assert_allclose(shuffled.varp["scfm_gene_network"].toarray(), net.toarray(), rtol=1e-4, atol=1e-6)


def test_attention_over_a_group_uses_only_its_cells(adata):
    scfm.tl.gene_network(adata, method="attention", top_k=4, min_genes=20, groupby="state", group="a")
    subset = adata[adata.obs["state"] == "a"].copy()
    scfm.tl.gene_network(subset, method="attention", top_k=4, min_genes=20)
    assert adata.uns["scfm"]["scfm_gene_network"]["n_cells"] == subset.n_obs == 20
    np.testing.assert_allclose(
        adata.varp["scfm_gene_network"].toarray(), subset.varp["scfm_gene_network"].toarray(), rtol=1e-4, atol=1e-6
    )


def test_layer_attention_is_a_distribution_over_real_keys_and_ignores_padding():
    module = load_pretrained("scgpt").module
    gene_ids = torch.tensor([[1, 50, 60, 70, 80], [1, 50, 60, 0, 0]])
    values = torch.tensor([[-2.0, 1, 2, 3, 4], [-2.0, 1, 2, -2, -2]])
    with torch.inference_mode():
        attention = layer_attention(module, gene_ids, values, 3)
        alone = layer_attention(module, gene_ids[1:, :3], values[1:, :3], 3)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 5))
    assert (attention[1, :, 3:] == 0).all()
    torch.testing.assert_close(attention[1, :3, :3], alone[0], rtol=1e-4, atol=1e-5)


def snapshot(adata: ad.AnnData) -> tuple:
    return (dict(adata.varp), copy.deepcopy(dict(adata.uns)), adata.var.copy(), dict(adata.obsm))


def assert_unchanged(adata: ad.AnnData, before: tuple) -> None:
    varp, uns, var, obsm = before
    assert set(adata.varp) == set(varp) and set(adata.obsm) == set(obsm)
    assert adata.uns.keys() == uns.keys() and adata.uns.get("scfm", {}).keys() == uns.get("scfm", {}).keys()
    pd.testing.assert_frame_equal(adata.var, var)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "tree"}, ValueError, "method must be one of"),
        ({"top_k": 0}, ValueError, "top_k must be"),
        ({"top_k": 500}, ValueError, "top_k=500 is more than"),
        ({"key_added": "a/b"}, ValueError, "key_added"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"method": "attention", "groupby": "nope", "group": "a"}, KeyError, "groupby='nope'"),
        ({"method": "attention", "groupby": "state", "group": "zzz"}, ValueError, "does not occur"),
        ({"method": "attention", "groupby": "state"}, ValueError, "needs group="),
        ({"method": "attention", "group": "a"}, ValueError, "needs groupby="),
        ({"method": "attention", "groupby": "state", "group": "a", "min_cells": 50}, ValueError, "fewer than"),
        ({"method": "attention", "max_genes": 10}, ValueError, "more than max_genes=10"),
        ({"groupby": "state", "group": "a"}, ValueError, "only apply to method='attention'"),
        ({"min_genes": 500}, ValueError, "genes"),
        ({"model": "tgpt"}, Exception, "infer gene networks"),
        ({"attention_layer": 9, "method": "attention"}, ValueError, "attention_layer must be"),
    ],
)
def test_bad_input_leaves_the_anndata_unchanged(adata, kwargs, error, match):
    scfm.tl.gene_network(adata, top_k=3, min_genes=20, key_added="kept")
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        scfm.tl.gene_network(adata, **{"min_genes": 20, **kwargs})
    assert_unchanged(adata, before)


def planted(n_modules: int = 4, size: int = 12, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """A gene graph with dense modules and sparse noise edges, and cells whose expression follows the modules."""
    rng = np.random.default_rng(seed)
    n = n_modules * size
    truth = np.repeat(np.arange(n_modules), size)
    same = truth[:, None] == truth[None, :]
    weights = np.where(same, rng.random((n, n)) < 0.6, rng.random((n, n)) < 0.03) * rng.uniform(0.5, 1, (n, n))
    weights = np.triu(weights, 1)
    activity = rng.gamma(1.0, 1.0, size=(90, n_modules))
    x = rng.poisson(activity[:, truth] * 2).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=[f"g{i}" for i in range(n)]))
    adata.obs_names = [f"c{i}" for i in range(90)]
    adata.varp["net"] = sp.csr_matrix(weights + weights.T)
    return adata, truth


def test_gene_programs_recover_planted_modules_and_score_cells():
    adata, truth = planted()
    scfm.tl.gene_programs(adata, "net", min_size=5)
    programs = adata.var["scfm_gene_program"]
    assert isinstance(programs.dtype, pd.CategoricalDtype) and programs.cat.categories[-1] == "none"
    assert adjusted_rand_score(truth, programs.astype(str)) > 0.9
    record = adata.uns["scfm"]["scfm_gene_program"]
    n_programs = record["n_programs"]
    activity = adata.obsm["scfm_gene_program"]
    assert activity.shape == (adata.n_obs, n_programs) and activity.dtype == np.float32
    x = adata.X.toarray()
    for p in range(n_programs):
        genes = (programs == str(p)).to_numpy()
        np.testing.assert_allclose(activity[:, p], x[:, genes].mean(1), rtol=1e-5)
    dense = adata.copy()
    dense.X = x
    scfm.tl.gene_programs(dense, "net", min_size=5, block_size=7)
    np.testing.assert_allclose(dense.obsm["scfm_gene_program"], activity, rtol=1e-5)
    assert (dense.var["scfm_gene_program"] == programs).all()


def test_gene_programs_min_size_sends_small_modules_to_none():
    adata, _ = planted(n_modules=3, size=10)
    extra = sp.lil_matrix(adata.varp["net"])
    scfm.tl.gene_programs(adata, "net", min_size=11)
    assert (adata.var["scfm_gene_program"] == "none").all() and adata.obsm["scfm_gene_program"].shape[1] == 0
    scfm.tl.gene_programs(adata, "net", min_size=5)
    sizes = adata.var["scfm_gene_program"].value_counts()
    assert all(sizes[name] >= 5 for name in sizes.index if name != "none")
    extra[0, :] = 0
    extra[:, 0] = 0
    adata.varp["isolated"] = sp.csr_matrix(extra)
    scfm.tl.gene_programs(adata, "isolated", key_added="iso")
    assert adata.var["iso"].iloc[0] == "none"


def test_gene_programs_on_a_model_network(adata):
    scfm.tl.gene_network(adata, top_k=5, min_genes=20)
    scfm.tl.gene_programs(adata, resolution=0.5)
    assert adata.var.loc[FAKE, "scfm_gene_program"].eq("none").all()
    assert adata.uns["scfm"]["scfm_gene_program"]["network"] == "scfm_gene_network"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "missing"}, KeyError, "run scfm.tl.gene_network"),
        ({"key": "net", "min_size": 0}, ValueError, "min_size"),
        ({"key": "net", "resolution": 0.0}, ValueError, "resolution"),
        ({"key": "net", "key_added": "x/y"}, ValueError, "key_added"),
        ({"key": "negative"}, ValueError, "negative"),
    ],
)
def test_gene_programs_bad_input_leaves_the_anndata_unchanged(kwargs, error, match):
    adata, _ = planted()
    adata.varp["negative"] = -adata.varp["net"]
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        scfm.tl.gene_programs(adata, **kwargs)
    assert_unchanged(adata, before)


def test_edge_scores_separate_a_perfect_ranking_from_noise():
    truth = np.zeros(200, dtype=bool)
    truth[:20] = True
    perfect = score_ranking(truth.astype(float), truth)
    assert perfect.epr == pytest.approx(10.0) and perfect.auprc_ratio == pytest.approx(10.0)
    noise = [score_ranking(np.random.default_rng(s).random(200), truth, seed=s).epr for s in range(50)]
    assert 0.6 < np.mean(noise) < 1.4
    scores = np.zeros((5, 5))
    scores[0, 3] = 1.0
    assert score_regulator_edges(scores, [0], [(0, 3)]).epr == pytest.approx(4.0)
    assert score_neighbourhoods(scores, {0: np.array([3])})["epr"] == pytest.approx(4.0)


def test_top_k_graph_drops_nonpositive_scores():
    scores = np.array([[0, 3, 2, -1], [1, 0, 0, 0], [5, 4, 0, 3], [0, 0, 0, 0]], dtype=float)
    graph = top_k_graph(scores, 2).toarray()
    np.testing.assert_array_equal(graph, [[0, 3, 2, 0], [1, 0, 0, 0], [5, 4, 0, 0], [0, 0, 0, 0]])


def test_attention_network_orientation_matches_one_cells_attention(vocab_genes):
    from scfm.genes import align_genes
    from scfm.models.scgpt._embed import SCGPTBlockTokenizer

    one = counts(vocab_genes[:12], n_cells=1, seed=3)
    one.X = sp.csr_matrix(np.arange(1, 13, dtype=np.float32)[None, :])
    scfm.tl.gene_network(one, method="attention", top_k=11, min_genes=5, min_cells=1)
    pretrained = load_pretrained("scgpt")
    alignment = align_genes(one.var, pretrained.vocab, min_genes=5)
    tokenizer = SCGPTBlockTokenizer(
        pretrained.config, alignment.column_token_ids(), max_len=None, device=torch.device("cpu")
    )
    batch = tokenizer.collate(tokenizer.encode(one.X, 0, 1, "counts").items)
    with torch.inference_mode():
        attention = layer_attention(pretrained.module, batch["gene_ids"], batch["values"], 3)[0].numpy()
    expected = attention[1:, 1:].T * 13  # varp[i, j]: attention gene j (query) pays to gene i (key), x 13 tokens
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(one.varp["scfm_gene_network"].toarray(), expected, rtol=1e-4, atol=1e-6)

"""Is the default model better than a fixed linear read-out of the same rank input? (issue 22)

Usage::

    python benchmarks/corpus_rank_projection.py [--panel 3000] [--sets pancreas pbmc_sorted cortex pbmc68k]
        [--values rank|log] [--components 50] [--data ../shared/data]

The protocol's parameter-free rank -> z-score -> PCA baseline (``scfm.bench.rank_pca``) fits its PCA on the
evaluation cells. Here the same pipeline is fitted once on the leave-dataset-out pretraining corpus (the three
corpora minus the protocol's held-out datasets, as in ``configs/tgpt_contrastive.yaml``) and then applied to each
evaluation cell alone, like a model:

1. panel: the corpus's ``--panel`` most variable genes (log-normalised, batch-aware over datasets);
2. a cell's features: the panel genes it expresses, ranked by value and scored ``rank / n_expressed`` (0 if not
   expressed or not measured);
3. z-score with the corpus's per-gene mean and standard deviation, clip at 10, project on the corpus's first 50
   principal components (``--components``). Every corpus dataset has the same weight in the mean, variance and
   components.

Rows per set, scored in one scib-metrics ``Benchmarker`` (the protocol's ``score``): the bundled default (tGPT), the
corpus-fitted projection, both side by side (each block scaled to unit mean norm), ``rank_pca`` fitted on the set
restricted to the panel genes it has (isolates the gene coverage from the directions), ``rank_pca`` on the set's
own HVGs and HVG+PCA.

``--values log`` makes the read-out read each cell's panel genes as ``log1p`` of values normalised to 10,000 over the
panel, instead of rank scores (the rest of the pipeline unchanged).

``--add-mouse-cortex`` adds the 10,309 mouse motor cortex RNA profiles of
``multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu`` (1,677 genes; mouse symbols upper-cased as a stand-in for
human orthologs, for which no table is available offline) to the corpus the projection is fitted on: a test of
whether the corpus's lack of brain cells is what costs the non-blood held-out set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from scipy.stats import rankdata

import scfm

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from pretrain_default import load_corpus
from zero_shot_protocol import HELD_OUT, VALIDATION, load_set, score

EXCLUDED_DATASETS = [
    "pancreas_batch1_inDrop_Baron",
    "pancreas_batch4_SmartSeq2_Segerstolpe",
    "zheng2017_sorted_reference",
    "zheng2017_frozen_donorA",
    "cxg_cortex_cultures_div4_div11",
]


def rank_scores(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Each row's non-zero values replaced by ``rank / n_non_zero`` (ties share their mean rank)."""
    ranked = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    ranked.eliminate_zeros()
    for row in range(ranked.shape[0]):
        start, stop = ranked.indptr[row], ranked.indptr[row + 1]
        if stop > start:
            ranked.data[start:stop] = rankdata(ranked.data[start:stop]) / (stop - start)
    return ranked


def log_values(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Each row normalised to 10,000 and log1p-transformed (over the genes given)."""
    values = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    totals = np.asarray(values.sum(1)).ravel()
    values = sp.csr_matrix(sp.diags(1e4 / np.maximum(totals, 1)) @ values)
    values.data = np.log1p(values.data)
    return values


CELL_SCORES = {"rank": rank_scores, "log": log_values}


class CorpusRankProjection:
    """Panel, per-gene statistics and principal directions of the corpus's rank scores (datasets weighted equally).

    ``values="log"`` reads log-normalised values of the panel genes (normalised over the panel) instead of ranks.
    """

    def __init__(self, corpus: ad.AnnData, n_panel: int, n_comps: int = 50, values: str = "rank") -> None:
        self.cell_scores = CELL_SCORES[values]
        work = corpus.copy()
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
        sc.pp.highly_variable_genes(work, n_top_genes=n_panel, batch_key="dataset")
        self.panel = work.var_names[work.var["highly_variable"].to_numpy()]
        scores = self.cell_scores(corpus[:, self.panel].X).toarray()
        datasets = corpus.obs["dataset"].astype(str)
        weights = 1.0 / datasets.map(datasets.value_counts()).to_numpy(dtype=float)
        self.weights = weights / weights.sum()
        self.mean = self.weights @ scores
        self.std = np.sqrt(self.weights @ (scores - self.mean) ** 2) + 1e-3
        z = np.clip((scores - self.mean) / self.std, -10, 10)
        self.centre = self.weights @ z
        centred = z - self.centre
        eigenvalues, eigenvectors = np.linalg.eigh((centred * self.weights[:, None]).T @ centred)
        self.components = eigenvectors[:, ::-1][:, :n_comps]
        self.explained = eigenvalues[::-1][:n_comps] / eigenvalues.sum()

    def panel_matrix(self, matrix: sp.spmatrix, genes: pd.Index) -> tuple[sp.csr_matrix, np.ndarray]:
        """The cells' values of the panel genes (0 where the set lacks a gene) and which panel genes it has."""
        position = pd.Index(genes).get_indexer(self.panel)
        present = position >= 0
        out = sp.csr_matrix(matrix)[:, np.where(present, position, 0)].tolil()
        out[:, np.flatnonzero(~present)] = 0
        return sp.csr_matrix(out), present

    def transform(self, matrix: sp.spmatrix, genes: pd.Index) -> np.ndarray:
        panel, _ = self.panel_matrix(matrix, genes)
        z = np.clip((self.cell_scores(panel).toarray() - self.mean) / self.std, -10, 10)
        return ((z - self.centre) @ self.components).astype(np.float32)


def mouse_cortex_cells(data: Path) -> ad.AnnData:
    """Mouse MOp RNA counts with upper-cased gene symbols, as one more corpus dataset."""
    import mudata

    rna = mudata.read_h5mu(data / "multiomic" / "mouse_mop_paired_rna_atac_10309cells.h5mu")["rna"]
    cells = ad.AnnData(sp.csr_matrix(rna.X, dtype=np.float32), obs=pd.DataFrame(index=rna.obs_names.astype(str)))
    cells.var_names = rna.var_names.str.upper()
    cells.var_names_make_unique()
    cells.obs["dataset"] = "mouse_mop_rna"
    return cells


def set_matrix(adata: ad.AnnData, use_raw: bool) -> tuple[sp.csr_matrix, pd.Index]:
    """The set's expression matrix and genes; log values (pbmc68k's ``raw``) are returned to their linear scale."""
    source = adata.raw if use_raw else adata
    matrix = sp.csr_matrix(source.X, dtype=np.float32, copy=True)
    if use_raw:
        matrix.data = np.expm1(matrix.data)
    return matrix, pd.Index(source.var_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel", type=int, default=3000, help="corpus highly variable genes in the panel")
    parser.add_argument("--components", type=int, default=50, help="corpus principal components kept")
    parser.add_argument("--values", choices=["rank", "log"], default="rank", help="what the read-out reads")
    parser.add_argument("--sets", nargs="+", default=list(HELD_OUT + VALIDATION))
    parser.add_argument("--max-cells", type=int, default=1000, help="pancreas keeps all its 528 cells")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--add-mouse-cortex", action="store_true", help="fit the projection with mouse MOp cells too")
    args = parser.parse_args()

    corpora = [str(path) for path in sorted((args.data / "pretraining").glob("*.h5ad"))]
    corpus, _ = load_corpus(corpora, EXCLUDED_DATASETS, min_cells=50, strip_prefixes=("hg19_",))
    if args.add_mouse_cortex:
        corpus = ad.concat(
            [
                ad.AnnData(corpus.X, obs=corpus.obs[["dataset"]], var=pd.DataFrame(index=corpus.var_names)),
                mouse_cortex_cells(args.data),
            ],
            join="outer",
            fill_value=0,
        )
        corpus.X = sp.csr_matrix(corpus.X, dtype=np.float32)
    projection = CorpusRankProjection(corpus, args.panel, args.components, args.values)
    print(f"corpus: {corpus.n_obs} cells, {corpus.obs['dataset'].nunique()} datasets; panel {len(projection.panel)}")
    print("variance of the first 5 components: " + ", ".join(f"{v:.3f}" for v in projection.explained[:5]))

    names = {
        "X_tgpt": "tGPT (bundled default)",
        "X_corpus_rank_pca": f"corpus-fitted read-out of {args.values} values (fixed)",
        "X_tgpt_and_projection": "tGPT beside the projection",
        "X_rank_pca_panel": "rank -> PCA fitted on the set, panel genes only",
        "X_rank_pca": "rank -> PCA fitted on the set, its own HVGs",
        "X_hvg_pca": "HVG+PCA",
    }
    summary = []
    for name in args.sets:
        ev = load_set(name, args.data, 2000 if name == "pancreas" else args.max_cells)
        cells = ev.adata
        matrix, genes = set_matrix(cells, ev.use_raw)
        cells.obsm["X_corpus_rank_pca"] = projection.transform(matrix, genes)
        scfm.tl.embed(cells, "tgpt", use_raw=ev.use_raw, key_added="X_tgpt", progress=False)
        tgpt = cells.obsm["X_tgpt"] / np.linalg.norm(cells.obsm["X_tgpt"], axis=1, keepdims=True)
        fixed = cells.obsm["X_corpus_rank_pca"] / np.linalg.norm(cells.obsm["X_corpus_rank_pca"], axis=1).mean()
        cells.obsm["X_tgpt_and_projection"] = np.hstack([tgpt, fixed]).astype(np.float32)
        panel, present = projection.panel_matrix(matrix, genes)
        panel_cells = ad.AnnData(panel[:, present], obs=cells.obs[[]].copy())
        scfm.bench.rank_pca(panel_cells, n_top_genes=len(projection.panel))
        cells.obsm["X_rank_pca_panel"] = panel_cells.obsm["X_rank_pca"]
        scfm.bench.rank_pca(cells, use_raw=ev.use_raw)
        scfm.bench.hvg_pca(cells, use_raw=ev.use_raw, key_added="X_hvg_pca")
        table = score(ev, list(names))
        print(f"\n## {name} ({cells.n_obs} cells; {int(present.sum())} of the {len(present)} panel genes present)\n")
        summary += report_rows(name, table, names)
    print_summary(summary)


def report_rows(name: str, table: pd.DataFrame, names: dict[str, str]) -> list[dict]:
    """Print one set's scib table under readable row names; return its Bio / Total / 15-NN rows for the summary."""
    print(table.rename(index=names).round(3).to_markdown())
    rows = []
    for key, label in names.items():
        total = table.loc[key, "Total"] if "Total" in table.columns else np.nan
        bio, knn = table.loc[key, "Bio conservation"], table.loc[key, "15-NN accuracy"]
        rows.append({"set": name, "embedding": label, "Bio": bio, "Total": total, "15-NN": knn})
    return rows


def print_summary(rows: list[dict]) -> None:
    print("\n## Summary\n")
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()

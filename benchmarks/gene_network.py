"""Gene networks of scfm (gene-embedding similarity, attention) beside co-expression, GENIE3-style trees and random.

    python benchmarks/gene_network.py                       # all datasets, ~10 min on 2 CPU cores
    python benchmarks/gene_network.py --datasets papalexi   # one dataset
    python benchmarks/gene_network.py --json results/gene_network.json

Datasets (../shared/data), each restricted to genes the model knows, networks inferred from the same cells:

- ``pancreas``: ``integration/pancreas_3batches_cepo_small.h5ad`` (528 cells, 3 studies; two of the studies, Baron
  and Segerstolpe, were held out of the bundled model's training; the cells of the third study were not seen
  either as far as the model card says), all its genes.
- ``pbmc``: ``annotation/pbmc_zheng2017_donorA_query_unlabeled.h5ad`` (first 1,000 cells of a fixed shuffle, 1,000
  most variable known genes). **These cells were in the bundled model's training corpus.**
- ``papalexi``: non-targeting control cells (2,386) of ``perturbation/papalexi2021_thp1_crispr_lowmoi_299genes.h5ad``
  (THP-1 CRISPR screen, 299 genes; not in the training corpus).

Networks: scfm ``embedding`` (cosine of the bundled checkpoint's gene embeddings, zero-shot) and ``attention``
(last layer, heads averaged, over the dataset's cells), both written by ``scfm.tl.gene_network`` with ``top_k`` = all
other genes (a full ranking) and also at the default ``top_k=20``; absolute Pearson and Spearman correlation of
log-normalised values; GENIE3-style random forests (``--trees`` trees per target, ``max_features="sqrt"``, 1,000
cells at most) with TF regulators only (TFs of OmniPath or of the ChIP table present among the genes; for
``papalexi`` the 26 knocked-out genes are regulators too); uniform random scores. Nothing is tuned on the truth.

Truth and scores (1 = random): EPR = precision of the top-K candidate edges (K = number of true edges) / positive
rate; AUPRC ratio = average precision / positive rate. Candidate edges: every regulator (a TF with at least one
true target among the genes) to every other gene.

- ``omnipath``: OmniPath transcriptional TF -> target edges (``all``: any source; ``strict``: >= 2 sources).
- ``chip``: targets of the 166 ChIP experiments, merged per TF.
- ``perturbation`` (papalexi): each knockout's DE genes vs non-targeting cells (Mann-Whitney, BH < 0.05, all cells),
  ranked by the knocked-out gene's network row; ``ceiling``: the knockout's own DE ranking on one half of the cells
  scored against the DE genes of the other half.
- ``programs``: Leiden programs (``scfm.tl.gene_programs``, resolution 1, >= 5 genes) of each top-20 network;
  fraction of within-program gene pairs sharing a GO BP term or an OmniPath regulator, ÷ that of size-matched random
  gene sets (100 draws).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

import scfm
from scfm.bench._grn import (
    benjamini_hochberg,
    de_pvalues,
    genie3_scores,
    pearson_scores,
    program_enrichment,
    random_scores,
    score_neighbourhoods,
    score_regulator_edges,
    spearman_scores,
)
from scfm.genes import align_genes
from scfm.models import load_pretrained
from scfm.tl._network_graph import top_k_graph

sys.path.insert(0, str(Path(__file__).parent))
from _report import table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ("pancreas", "pbmc", "papalexi")


def load(name: str) -> tuple[ad.AnnData, list[str]]:
    """Counts of the cells a network is inferred from, and the knocked-out genes (papalexi only)."""
    if name == "pancreas":
        return ad.read_h5ad(DATA / "integration/pancreas_3batches_cepo_small.h5ad"), []
    if name == "pbmc":
        adata = ad.read_h5ad(DATA / "annotation/pbmc_zheng2017_donorA_query_unlabeled.h5ad")
        cells = np.sort(np.random.default_rng(0).permutation(adata.n_obs)[:1000])
        return adata[cells].copy(), []
    adata = ad.read_h5ad(DATA / "perturbation/papalexi2021_thp1_crispr_lowmoi_299genes.h5ad")
    knockouts = sorted(set(adata.obs["perturbation"].astype(str)) - {"non-targeting"})
    return adata, knockouts


def known_genes(adata: ad.AnnData, n_top: int | None) -> list[str]:
    """Genes the bundled model knows (optionally the ``n_top`` most variable of them), in ``var`` order."""
    vocab = load_pretrained().vocab
    alignment = align_genes(adata.var, vocab, min_genes=10, on_duplicate="first")
    genes = adata.var_names[np.sort(alignment.var_index)]
    if n_top is None or len(genes) <= n_top:
        return list(genes)
    sub = log_normalised(adata[:, genes])
    sc.pp.highly_variable_genes(sub, n_top_genes=n_top, flavor="seurat")
    return list(sub.var_names[sub.var["highly_variable"].to_numpy()])


def log_normalised(adata: ad.AnnData) -> ad.AnnData:
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def omnipath_edges(min_sources: int) -> pd.DataFrame:
    table_ = pd.read_parquet(
        DATA / "grn/omnipath_interactions.parquet", columns=["source", "target", "type", "n_sources"]
    )
    table_ = table_[(table_["type"] == "transcriptional") & (table_["n_sources"] >= min_sources)]
    return table_[["source", "target"]].astype(str).drop_duplicates()


def chip_edges() -> pd.DataFrame:
    experiments = json.loads((DATA / "grn/tf_chip_targets_166.json").read_text())
    rows = [(key.split()[0].upper(), str(t).upper()) for key, targets in experiments.items() for t in targets]
    return pd.DataFrame(rows, columns=["source", "target"]).drop_duplicates()


def edges_in(edges: pd.DataFrame, genes: list[str]) -> tuple[list[tuple[int, int]], np.ndarray]:
    """True edges between ``genes`` (upper-cased match) as index pairs, and the regulators that have any."""
    index = {g.upper(): i for i, g in enumerate(genes)}
    pairs = {
        (index[s.upper()], index[t.upper()])
        for s, t in zip(edges["source"], edges["target"], strict=True)
        if s.upper() in index and t.upper() in index and s.upper() != t.upper()
    }
    return sorted(pairs), np.array(sorted({s for s, _ in pairs}), dtype=np.int64)


def scfm_network(adata: ad.AnnData, genes: list[str], method: str, top_k: int) -> np.ndarray:
    """Dense score matrix over ``genes`` from ``scfm.tl.gene_network`` (``varp[i, j]``: ``i`` regulates ``j``)."""
    work = ad.AnnData(adata.X, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    scfm.tl.gene_network(work, method=method, genes=genes, top_k=top_k, min_genes=10, on_duplicate="first")
    positions = work.var_names.get_indexer(genes)
    return work.varp["scfm_gene_network"][positions][:, positions].toarray()


def networks(adata: ad.AnnData, genes: list[str], regulators: np.ndarray, trees: int) -> dict[str, np.ndarray]:
    out, seconds = {}, {}
    n = len(genes)
    for method in ("embedding", "attention"):
        start = time.perf_counter()
        out[f"scfm {method}"] = scfm_network(adata, genes, method, n - 1)
        seconds[f"scfm {method}"] = time.perf_counter() - start
        out[f"scfm {method} (top_k=20)"] = scfm_network(adata, genes, method, 20)
    x = log_normalised(adata[:, genes]).X
    for name, fn in (("pearson", pearson_scores), ("spearman", spearman_scores)):
        start = time.perf_counter()
        out[name] = fn(x)
        seconds[name] = time.perf_counter() - start
    start = time.perf_counter()
    out["genie3 (TF regulators)"] = genie3_scores(x, regulators, n_estimators=trees)
    seconds["genie3 (TF regulators)"] = time.perf_counter() - start
    for name, s in seconds.items():
        print(f"  {name}: {s:.1f} s", flush=True)
    return out


def halves(adata: ad.AnnData) -> np.ndarray:
    """A fixed random split of the cells into halves 0 and 1."""
    return np.random.default_rng(0).permutation(adata.n_obs) % 2


def de_scores(adata: ad.AnnData, genes: list[str], knockouts: list[str], rows: np.ndarray) -> dict[int, np.ndarray]:
    """BH-adjusted Mann-Whitney p-values of every gene, per knockout (index into ``genes``) vs non-targeting cells."""
    x = log_normalised(adata[:, genes])[rows]
    labels = x.obs["perturbation"].astype(str).to_numpy()
    control = x.X[labels == "non-targeting"]
    index = {g: i for i, g in enumerate(genes)}
    return {
        index[gene]: benjamini_hochberg(de_pvalues(x.X[labels == gene], control)) for gene in knockouts if gene in index
    }


def perturbation_truth(q: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """DE genes (BH < 0.05) of each knockout, the knocked-out gene itself left out."""
    return {gene: np.flatnonzero(values < 0.05)[np.flatnonzero(values < 0.05) != gene] for gene, values in q.items()}


def annotation_matrix(genes: list[str], pairs: pd.DataFrame, gene_column: str, term_column: str) -> sp.csr_matrix:
    index = {g.upper(): i for i, g in enumerate(genes)}
    pairs = pairs[pairs[gene_column].str.upper().isin(index)]
    terms = {t: j for j, t in enumerate(pd.unique(pairs[term_column]))}
    rows = [index[g.upper()] for g in pairs[gene_column]]
    cols = [terms[t] for t in pairs[term_column]]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genes), max(len(terms), 1))).sign().tocsr()


def programs(adata: ad.AnnData, genes: list[str], nets: dict[str, np.ndarray], annotations: dict) -> list[dict]:
    rows = []
    nets = {**nets, "random": random_scores(len(genes))}
    for name in ("scfm embedding (top_k=20)", "scfm attention (top_k=20)", "pearson", "random"):
        graph = nets[name] if "top_k" in name else top_k_graph(nets[name], 20).toarray()
        work = ad.AnnData(sp.csr_matrix((len(adata.obs_names[:1]), len(genes))), var=pd.DataFrame(index=genes))
        work.varp["net"] = sp.csr_matrix(graph)
        scfm.tl.gene_programs(work, "net", min_size=5)
        labels = work.var["scfm_gene_program"].astype(str).to_numpy()
        members = [np.flatnonzero(labels == p) for p in np.unique(labels) if p != "none"]
        pool = np.flatnonzero(labels != "none")
        row = {"network": name.replace(" (top_k=20)", ""), "programs": len(members), "genes in programs": pool.size}
        for label, matrix in annotations.items():
            result = program_enrichment(members, matrix, pool, n_draws=100)
            row[f"{label} ratio"] = result["ratio"]
            row[f"{label} p"] = result["p"]
        rows.append(row)
    return rows


def random_rows(name: str, truths: dict, n_genes: int, n_seeds: int = 20) -> dict:
    """Mean and standard deviation of the random network's scores over ``n_seeds`` seeds (printed as mean ± sd)."""
    row = {"dataset": name, "network": f"random (mean ± sd, {n_seeds} seeds)"}
    for label, (edges, regs) in truths.items():
        results = [score_regulator_edges(random_scores(n_genes, seed), regs, edges, seed) for seed in range(n_seeds)]
        for metric in ("epr", "auprc_ratio"):
            values = np.array([getattr(r, metric) for r in results])
            column = f"{label} {'EPR' if metric == 'epr' else 'AUPRC'}"
            row[column] = f"{values.mean():.2f} ± {values.std():.2f}"
    return row


def run(name: str, trees: int) -> tuple[list[dict], list[dict]]:
    print(f"== {name}", flush=True)
    adata, knockouts = load(name)
    split = halves(adata)
    if name == "papalexi":
        genes = known_genes(adata, None)
        control = adata.obs["perturbation"].astype(str).to_numpy() == "non-targeting"
        cells = adata[control & (split == 1)].copy()
    else:
        genes = known_genes(adata, None if name == "pancreas" else 1000)
        cells = adata
    truths = {
        "omnipath all": edges_in(omnipath_edges(1), genes),
        "omnipath strict": edges_in(omnipath_edges(2), genes),
        "chip": edges_in(chip_edges(), genes),
    }
    regulators = np.union1d(truths["omnipath all"][1], truths["chip"][1])
    if knockouts:
        regulators = np.union1d(regulators, [genes.index(g) for g in knockouts if g in genes])
    print(f"  {cells.n_obs} cells, {len(genes)} genes, {regulators.size} regulators", flush=True)
    nets = networks(cells, genes, regulators, trees)
    rows = []
    for method, scores in nets.items():
        row = {"dataset": name, "network": method}
        for label, (edges, regs) in truths.items():
            result = score_regulator_edges(scores, regs, edges)
            row[f"{label} EPR"] = result.epr
            row[f"{label} AUPRC"] = result.auprc_ratio
        rows.append(row)
    rows.append(random_rows(name, truths, len(genes)))
    for label, (edges, regs) in truths.items():
        print(f"  {label}: {len(edges)} true edges, {regs.size} TFs", flush=True)
    if knockouts:
        truth = perturbation_truth(de_scores(adata, genes, knockouts, np.flatnonzero(split == 0)))
        print(
            f"  perturbation: {sum(len(v) > 0 for v in truth.values())} knockouts (of {len(truth)} known) with DE "
            f"genes, {sum(len(v) for v in truth.values())} DE genes in all",
            flush=True,
        )
        for row in rows:
            if row["network"] in nets:
                result = score_neighbourhoods(nets[row["network"]], truth)
                row["perturbation EPR"], row["perturbation AUPRC"] = result["epr"], result["auprc_ratio"]
            else:
                draws = [score_neighbourhoods(random_scores(len(genes), seed), truth, seed) for seed in range(20)]
                for metric, column in (("epr", "perturbation EPR"), ("auprc_ratio", "perturbation AUPRC")):
                    values = np.array([d[metric] for d in draws])
                    row[column] = f"{values.mean():.2f} ± {values.std():.2f}"
        own = de_scores(adata, genes, knockouts, np.flatnonzero(split == 1))
        ceiling = np.zeros((len(genes), len(genes)))
        for gene, q in own.items():
            ceiling[gene] = -np.log10(q + 1e-300)
        result = score_neighbourhoods(ceiling, truth)
        rows.append(
            {
                "dataset": name,
                "network": "ceiling: knockout DE, other half",
                "perturbation EPR": result["epr"],
                "perturbation AUPRC": result["auprc_ratio"],
            }
        )
    go = pd.read_csv(DATA / "genes/human_go_bp_orgHsegdb_3.16.tsv.gz", sep="\t", usecols=["symbol", "go_id"])
    regulons = omnipath_edges(1)
    annotations = {
        "GO BP": annotation_matrix(genes, go, "symbol", "go_id"),
        "regulon": annotation_matrix(genes, regulons, "target", "source"),
    }
    program_rows = [{"dataset": name, **r} for r in programs(cells, genes, nets, annotations)]
    return rows, program_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--trees", type=int, default=30, help="trees per target of the GENIE3-style baseline")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data")
    start = time.perf_counter()
    edge_rows, program_rows = [], []
    for name in args.datasets:
        rows, progs = run(name, args.trees)
        edge_rows += rows
        program_rows += progs
    columns = ["dataset", "network"]
    for label in ("omnipath all", "omnipath strict", "chip", "perturbation"):
        columns += [f"{label} EPR", f"{label} AUPRC"]
    shown = [{k: f"{v:.2f}" if isinstance(v, float) else v for k, v in r.items()} for r in edge_rows]
    print("\nEdges (early precision ratio and AUPRC ratio; 1 = random)\n")
    print(table(shown, columns))
    print("\nGene programs (co-annotation within programs ÷ size-matched random sets; p: fraction of 100 draws >=)\n")
    print(table(program_rows, list(program_rows[0])))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"edges": edge_rows, "programs": program_rows}, indent=1, default=float))


if __name__ == "__main__":
    main()

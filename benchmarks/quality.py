"""Integration and annotation quality of scfm beside HVG+PCA, Harmony, scVI and logistic regression, same run.

    python benchmarks/quality.py                                   # every task (long on 2 CPU cores)
    python benchmarks/quality.py --tasks pancreas pbmc-annotation  # a subset
    python benchmarks/quality.py --epochs 10 --max-len 256 --json results/quality.json

Tasks (data from ../shared/data):

- ``pancreas``: integration of ``integration/pancreas_3batches_cepo_small.h5ad`` (batch, cell_type).
- ``mop``: integration of the RNA of ``multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu`` (batch =
  library, cell_type). The model's human gene symbols meet mouse symbols through scfm's case-insensitive
  symbol match (``Gapdh`` -> ``GAPDH``): a proxy for one-to-one orthologs, printed as genes matched.
- ``pbmc-annotation``: ``annotation/pbmc_zheng2017_sorted_reference.h5ad`` split 50/50 by cells, stratified
  by cell type (seed 0).
- ``pancreas-annotation``: pancreas across studies: reference = batches 1 and 4, query = batch 5.
- ``cortex-annotation``: the human fetal cortex cultures of the zero-shot protocol (``zero_shot_protocol.py``, held
  out of every tGPT recipe's pretraining), 10 cell types, across its two libraries in both directions: reference
  10X353_7 (2,718 cells) and query 10X355_7 (1,729 cells), then the reverse.
- ``pbmc68k-annotation``: ``sc.datasets.pbmc68k_reduced()`` (``raw``: 765 log-normalised genes, ``bulk_labels``,
  10 types) split 50/50 by cells, stratified (``--seed``). It is the zero-shot protocol's validation set.
- ``mop-epoch-time``: one fine-tuning epoch of ``tl.integrate`` on all 10,309 MOp cells (the speed target), no
  scoring.

Annotation rows: logistic regression on log-normalised HVGs (the baseline), the same on each cell's top-127 genes
scored by rank (a control without a model), ``tl.annotate``'s default linear probe with the default model and with
``--probe-models`` (default: random weights of the tGPT architecture, the control for what pretraining adds), scGPT
fine-tuning with the wide-and-deep head and with the embedding-only head (the ablation) and zero-shot kNN.

Integration rows: scib-metrics (unscaled) for HVG+PCA, Harmony, scVI, the zero-shot scfm embedding and the
fine-tuned scfm integration, with time per fine-tuning epoch.
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
import scipy.sparse as sp
from tabulate import tabulate

import scfm
from scfm.bench import annotation, integration, logistic_regression

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASKS = (
    "pancreas",
    "mop",
    "pbmc-annotation",
    "pancreas-annotation",
    "cortex-annotation",
    "pbmc68k-annotation",
    "mop-epoch-time",
)


def load_pancreas() -> ad.AnnData:
    adata = ad.read_h5ad(DATA / "integration" / "pancreas_3batches_cepo_small.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def load_mop(n_cells: int | None, seed: int) -> ad.AnnData:
    import mudata

    rna = mudata.read_h5mu(DATA / "multiomic" / "mouse_mop_paired_rna_atac_10309cells.h5mu")["rna"]
    rna = rna.copy()
    for key in ("batch", "cell_type"):
        if key not in rna.obs:
            raise SystemExit(f"the MOp RNA lacks obs[{key!r}]")
    if n_cells and n_cells < rna.n_obs:
        rng = np.random.default_rng(seed)
        rna = rna[np.sort(rng.choice(rna.n_obs, n_cells, replace=False))].copy()
    rna.X = sp.csr_matrix(rna.X, dtype=np.float32)
    return rna


def finetune_settings(opts: argparse.Namespace) -> dict:
    """Keyword arguments that ``tl.integrate`` and ``tl.annotate`` share in every task."""
    return {
        "model": opts.model,
        "max_epochs": opts.epochs,
        "max_len": opts.max_len,
        "lr": opts.lr,
        "n_top_genes": opts.n_top_genes,
        "batch_size": opts.batch_size,
        "progress": False,
        "min_genes": opts.min_genes,
        "seed": opts.seed,
    }


def integration_task(name: str, adata: ad.AnnData, opts: argparse.Namespace) -> list[dict]:
    start = time.perf_counter()
    scfm.tl.embed(adata, model=opts.model, progress=False, min_genes=opts.min_genes)
    embed_seconds = time.perf_counter() - start
    record = adata.uns["scfm"]["X_scfm"]
    common = finetune_settings(opts)
    scfm.tl.integrate(adata, "batch", method="finetune", **common)
    scfm.tl.integrate(
        adata, "batch", method="finetune", dar_weight=0.0, ecs_weight=0.0, key_added="X_scfm_batchemb", **common
    )
    fit = adata.uns["scfm"]["X_scfm_integrated"]
    table = integration(
        adata,
        "batch",
        "cell_type",
        methods=("hvg_pca", "harmony", "scvi"),
        embeddings={
            "scfm zero-shot": "X_scfm",
            "scfm integrated": "X_scfm_integrated",
            "scfm batch-emb only": "X_scfm_batchemb",
        },
        scvi_kwargs={"round_counts": True, "max_epochs": opts.scvi_epochs},
        seed=opts.seed,
    )
    wide = table[table.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
    seconds = table[table.metric_type == "Time"].set_index("method")["value"].to_dict()
    seconds["scfm zero-shot"] = embed_seconds
    seconds["scfm integrated"] = fit["train_seconds"]
    seconds["scfm batch-emb only"] = adata.uns["scfm"]["X_scfm_batchemb"]["train_seconds"]
    rows = []
    for method, scores in wide.iterrows():
        row = {
            "task": name,
            "method": method,
            "Total": scores["Total"],
            "Bio": scores["Bio conservation"],
            "Batch": scores["Batch correction"],
            "seconds": seconds.get(method, float("nan")),
        }
        row |= {k: v for k, v in scores.items() if k not in ("Total", "Bio conservation", "Batch correction")}
        rows.append(row)
    print(
        f"\n## {name}: {adata.n_obs} cells, {adata.obs['batch'].nunique()} batches, "
        f"{adata.obs['cell_type'].nunique()} cell types; scfm matched {record['genes_matched']} of "
        f"{adata.n_vars} genes; fine-tuning {fit['seconds_per_epoch']:.1f} s/epoch "
        f"({opts.epochs} epochs, {fit['genes_used']} genes, max_len {fit['max_len']})"
    )
    order = ["method", "Total", "Bio", "Batch", "seconds"]
    print(tabulate([{k: r[k] for k in order} for r in rows], headers="keys", floatfmt=".3f", tablefmt="github"))
    metric_cols = [c for c in rows[0] if c not in (*order, "task")]
    print(
        tabulate(
            [{"method": r["method"], **{c: r[c] for c in metric_cols}} for r in rows],
            headers="keys",
            floatfmt=".3f",
            tablefmt="github",
        )
    )
    return rows


def mop_epoch_time(adata: ad.AnnData, opts: argparse.Namespace) -> None:
    import torch

    scfm.tl.integrate(adata, "batch", method="finetune", **{**finetune_settings(opts), "max_epochs": 1})
    fit = adata.uns["scfm"]["X_scfm_integrated"]
    print(
        f"\n## mop-epoch-time: {adata.n_obs} cells, {fit['genes_used']} genes, max_len {fit['max_len']}, "
        f"{torch.get_num_threads()} threads: {fit['seconds_per_epoch']:.0f} s per fine-tuning epoch "
        f"({adata.n_obs / fit['seconds_per_epoch']:.1f} cells/s)"
    )


def rank_feature_regression(query: ad.AnnData, reference: ad.AnnData, labels_key: str, k: int = 127) -> np.ndarray:
    """Control without a model: logistic regression on each cell's top-``k`` genes scored by rank, ``(k - r) / k``.

    The parameter-free counterpart of a rank-input model's embedding (genes shared by name; features standardised over
    the reference; genes in fewer than 5 reference top lists dropped). Returns the query's predicted labels.
    """
    from sklearn.linear_model import LogisticRegression

    genes = reference.var_names.intersection(query.var_names, sort=False)

    def features(adata: ad.AnnData) -> sp.csr_matrix:
        matrix = sp.csr_matrix(adata[:, genes].X)
        rows, cols, scores = [], [], []
        for row in range(matrix.shape[0]):
            start, stop = matrix.indptr[row], matrix.indptr[row + 1]
            order = np.lexsort((matrix.indices[start:stop], -matrix.data[start:stop]))[:k]  # ties: column order
            rows += [row] * len(order)
            cols += list(matrix.indices[start:stop][order])
            scores += list((k - np.arange(len(order))) / k)
        return sp.csr_matrix((scores, (rows, cols)), shape=matrix.shape)

    ref, qry = features(reference), features(query)
    used = np.flatnonzero(np.asarray((ref > 0).sum(0)).ravel() >= 5)
    ref, qry = ref[:, used].toarray(), qry[:, used].toarray()
    mean, std = ref.mean(0), ref.std(0)
    std[std == 0] = 1.0
    classifier = LogisticRegression(max_iter=3000).fit((ref - mean) / std, reference.obs[labels_key].astype(str))
    return classifier.predict((qry - mean) / std)


def annotation_task(name: str, reference: ad.AnnData, query: ad.AnnData, opts: argparse.Namespace) -> list[dict]:
    from zero_shot_protocol import model_argument, model_label

    timings, keys = {}, {}

    def timed(method: str, key: str, run) -> None:
        start = time.perf_counter()
        run()
        timings[method], keys[method] = time.perf_counter() - start, key

    timed(
        "logistic regression",
        "logreg",
        lambda: logistic_regression(query, reference, "cell_type", key_added="logreg"),
    )

    def rank_features() -> None:
        query.obs["rank_features"] = rank_feature_regression(query, reference, "cell_type")

    timed("logistic regression, top-127 rank features", "rank_features", rank_features)
    top_genes = opts.annotation_top_genes or "auto"
    quiet = {"progress": False, "min_genes": opts.min_genes, "n_top_genes": top_genes}
    if "probe" in opts.annotation_methods:
        for model in [opts.model, *opts.probe_models]:
            label = "default" if model is None else model_label(model)
            argument = None if model is None else model_argument(model)
            key = "probe_" + label.replace("/", "_")
            timed(
                f"scfm probe ({label})",
                key,
                lambda a=argument, k=key: scfm.tl.annotate(
                    query, reference, "cell_type", model=a, method="probe", key_added=k, **quiet
                ),
            )
    settings = {**finetune_settings(opts), "n_top_genes": top_genes}
    if "finetune" in opts.annotation_methods:
        timed(
            "scfm fine-tuned",
            "scfm_finetuned",
            lambda: scfm.tl.annotate(
                query, reference, "cell_type", method="finetune", key_added="scfm_finetuned", **settings
            ),
        )
        timed(
            "scfm fine-tuned, embedding-only head",
            "scfm_embedding_head",
            lambda: scfm.tl.annotate(
                query,
                reference,
                "cell_type",
                method="finetune",
                key_added="scfm_embedding_head",
                gene_linear=False,
                **settings,
            ),
        )
    if "knn" in opts.annotation_methods:
        timed(
            "scfm zero-shot kNN",
            "scfm_knn",
            lambda: scfm.tl.annotate(
                query,
                reference,
                "cell_type",
                model=opts.model,
                method="knn",
                key_added="scfm_knn",
                progress=False,
                min_genes=opts.min_genes,
            ),
        )
    table = annotation(query, "cell_type", keys)
    value = table.set_index(["method", "metric"])["value"]
    rows = [
        {
            "task": name,
            "method": m,
            "accuracy": value[m, "accuracy"],
            "macro_f1": value[m, "macro_f1"],
            "seconds": timings[m],
        }
        for m in timings
    ]
    print(
        f"\n## {name}: reference {reference.n_obs} cells, query {query.n_obs} cells, "
        f"{reference.obs['cell_type'].nunique()} cell types"
    )
    print(tabulate(rows, headers="keys", floatfmt=".3f", tablefmt="github"))
    per_class = table[table.metric.str.startswith("f1[")].pivot_table(index="metric", columns="method", values="value")
    print(tabulate(per_class, headers="keys", floatfmt=".3f", tablefmt="github"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-len", type=int, default=None, help="default: the tools' (fits the selected genes)")
    parser.add_argument("--n-top-genes", type=int, default=500, help="integration: batch-aware HVGs fine-tuned on")
    parser.add_argument(
        "--annotation-top-genes",
        type=int,
        default=None,
        help="annotation: reference HVGs (default: tl.annotate's, 2,000 for the probe and 1,200 for fine-tuning)",
    )
    parser.add_argument(
        "--annotation-methods",
        nargs="+",
        default=["probe", "finetune", "knn"],
        choices=["probe", "finetune", "knn"],
        help="annotation: scfm methods to run beside the logistic regressions",
    )
    parser.add_argument(
        "--probe-models",
        nargs="*",
        default=["random:tgpt"],
        help="annotation: more models for the probe beside --model (directories, names, random:<model>)",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scvi-epochs", type=int, default=None)
    parser.add_argument("--mop-cells", type=int, default=None, help="subsample the MOp data")
    parser.add_argument("--min-genes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    opts = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data")
    rows = []
    for task in opts.tasks:
        if task == "pancreas":
            rows += integration_task(task, load_pancreas(), opts)
        elif task == "mop-epoch-time":
            mop_epoch_time(load_mop(None, opts.seed), opts)
        elif task == "mop":
            rows += integration_task(task, load_mop(opts.mop_cells, opts.seed), opts)
        elif task == "pbmc-annotation":
            from sklearn.model_selection import train_test_split

            pbmc = ad.read_h5ad(DATA / "annotation" / "pbmc_zheng2017_sorted_reference.h5ad")
            pbmc.X = sp.csr_matrix(pbmc.X, dtype=np.float32)
            ref_idx, query_idx = train_test_split(
                np.arange(pbmc.n_obs), test_size=0.5, random_state=opts.seed, stratify=pbmc.obs["cell_type"].astype(str)
            )
            rows += annotation_task(task, pbmc[np.sort(ref_idx)].copy(), pbmc[np.sort(query_idx)].copy(), opts)
        elif task == "pbmc68k-annotation":
            import scanpy as sc
            from sklearn.model_selection import train_test_split

            pbmc68k = sc.datasets.pbmc68k_reduced().raw.to_adata()
            pbmc68k.obs["cell_type"] = pbmc68k.obs["bulk_labels"].astype(str)
            ref_idx, query_idx = train_test_split(
                np.arange(pbmc68k.n_obs), test_size=0.5, random_state=opts.seed, stratify=pbmc68k.obs["cell_type"]
            )
            rows += annotation_task(task, pbmc68k[np.sort(ref_idx)].copy(), pbmc68k[np.sort(query_idx)].copy(), opts)
        elif task == "cortex-annotation":
            from zero_shot_protocol import load_set

            cortex = load_set("cortex", DATA, max_cells=10**9).adata
            library = cortex.obs["sample"].astype(str)
            for ref_library, query_library in (("10X353_7", "10X355_7"), ("10X355_7", "10X353_7")):
                rows += annotation_task(
                    f"{task} ({ref_library} -> {query_library})",
                    cortex[library == ref_library].copy(),
                    cortex[library == query_library].copy(),
                    opts,
                )
        else:
            pancreas = load_pancreas()
            batch = pancreas.obs["batch"].astype(str)
            rows += annotation_task(
                task, pancreas[batch != "batch 5"].copy(), pancreas[batch == "batch 5"].copy(), opts
            )
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(pd.DataFrame(rows).to_dict("records"), indent=2, default=float))


if __name__ == "__main__":
    main()

"""tGPT beside its baselines, measured in one run: bulk-tumour outcome, single-cell bio conservation, throughput.

Usage::

    python benchmarks/tgpt.py [--tasks bulk single-cell pbmc] [--mop-cells 3000] [--json results.json]

1. Bulk (``../shared/data/bulk``), with :func:`scfm.tl.associate` (5-fold CV, standardise -> PCA to 10
   components -> penalised Cox or logistic regression, fitted on the training folds):
   - TCGA SKCM (472 tumours x 2,454 genes, log2 values): C-index of overall survival for the bundled tGPT
     features, the same architecture with random weights, PCA of the expression, clinical covariates alone
     (stage, age quartile, sex, primary/metastatic) and tGPT + clinical; ROC AUC of BRAF V600, NRAS Q61 and
     NF1 mutation flags. PCA of only the genes tGPT matched is reported too, so that gene coverage and the
     model are not confounded.
   - GSE7390 breast cancer (198 x 76 Affymetrix probe sets): time to distant metastasis. Its var_names are
     probe-set ids with no offline symbol table, so tGPT cannot read it; the script prints the error and
     reports expression PCA and clinical covariates (age, size, grade, ER) only.
2. Single cells: scib-metrics (unscaled) of zero-shot tGPT, zero-shot SCGPT (bundled default), random-weight
   tGPT and HVG+PCA on the pancreas integration set (528 cells, 3 studies) and on MOp RNA (``--mop-cells``
   cells, 2 batches; mouse symbols matched case-insensitively), plus 15-NN cell-type accuracy.
   On ``sc.datasets.pbmc68k_reduced()`` (``adata.raw``): 5-fold 15-NN accuracy of ``bulk_labels`` (``pbmc``).
3. Throughput: embedding cells/s of TGPT vs SCGPT on the same cells, same process, CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _report import table

import scfm
from scfm.bench import integration, knn_accuracy
from scfm.models import Pretrained, load_pretrained
from scfm.models.tgpt import TGPTModule

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TCGA_CLINICAL = ["ajcc_pathologic_tumor_stage", "age_at_initial_pathologic_diagnosis", "gender", "Sample.Type"]
TCGA_MUTATIONS = ["BRAFV600.", "NRASQ61.", "NF1GainLossFrameshift"]
BREAST_CLINICAL = ["age", "size", "grade", "er"]
TGPT_MODEL = "tgpt"


def random_tgpt(seed: int) -> Pretrained:
    """The bundled architecture and vocabulary with freshly initialised weights (the no-pretraining control)."""
    bundled = load_pretrained(TGPT_MODEL, family="tgpt")
    torch.manual_seed(seed)
    module = TGPTModule(bundled.module.config).eval()
    return Pretrained("tgpt", module, bundled.vocab, "tgpt random weights", "none", "none")


def bulk_tcga(opts: argparse.Namespace) -> list[dict]:
    bdata = ad.read_h5ad(DATA / "bulk" / "tcga_skcm_consica_472samples.h5ad")
    start = time.perf_counter()
    scfm.tl.bulk_features(bdata, model=TGPT_MODEL, key_added="X_tgpt")
    seconds = time.perf_counter() - start
    scfm.tl.bulk_features(bdata, model=random_tgpt(opts.seed), key_added="X_tgpt_random")
    record = bdata.uns["scfm"]["X_tgpt"]
    print(
        f"\n## TCGA SKCM: {bdata.n_obs} tumours; tGPT matched {record['genes_matched']} of {bdata.n_vars} genes, "
        f"input scale {record['input_scale']!r}, {record['n_truncated_cells']} rankings cut to "
        f"{record['max_len'] - 1} genes; features in {seconds:.1f} s"
    )
    common = {
        "duration_key": "time",
        "event_key": "event",
        "binary_keys": TCGA_MUTATIONS,
        "n_components": opts.n_components,
        "seed": opts.seed,
    }
    main = scfm.tl.associate(bdata, "X_tgpt", covariate_keys=TCGA_CLINICAL, **common)
    control = scfm.tl.associate(bdata, "X_tgpt_random", **common)
    main["feature_set"] = main["feature_set"].replace({"features": "tGPT", "features+clinical": "tGPT+clinical"})
    control = control[control["feature_set"] == "features"].assign(feature_set="tGPT random weights")
    matched = bdata[
        :, bdata.var_names.str.upper().isin([g.upper() for g in load_pretrained(TGPT_MODEL, family="tgpt").vocab.genes])
    ]
    same_genes = scfm.tl.associate(matched.copy(), "X_tgpt", **common)
    same_genes = same_genes[same_genes["feature_set"] == "expression_pca"].assign(
        feature_set=f"expression_pca ({matched.n_vars} tGPT genes)"
    )
    result = pd.concat([main, same_genes, control], ignore_index=True).assign(dataset="TCGA SKCM")
    return result.to_dict("records")


def bulk_breast(opts: argparse.Namespace) -> list[dict]:
    bdata = ad.read_h5ad(DATA / "bulk" / "breast_cancer_GSE7390_desmedt2007_sksurv.h5ad")
    try:
        scfm.tl.bulk_features(bdata, model=TGPT_MODEL)
    except ValueError as err:
        print(f"\n## GSE7390 breast: tGPT features unavailable: {err}")
    bdata.obsm["X_expression"] = np.asarray(bdata.X, dtype=np.float32)
    result = scfm.tl.associate(
        bdata,
        "X_expression",
        duration_key="t.tdm",
        event_key="e.tdm",
        covariate_keys=BREAST_CLINICAL,
        n_components=opts.n_components,
        seed=opts.seed,
    )
    result = result[result["feature_set"].isin(["expression_pca", "clinical"])]
    return result.assign(dataset="GSE7390 breast").to_dict("records")


def load_pancreas() -> ad.AnnData:
    adata = ad.read_h5ad(DATA / "integration" / "pancreas_3batches_cepo_small.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def load_mop(n_cells: int, seed: int) -> ad.AnnData:
    import mudata

    rna = mudata.read_h5mu(DATA / "multiomic" / "mouse_mop_paired_rna_atac_10309cells.h5mu")["rna"].copy()
    if n_cells < rna.n_obs:
        rna = rna[np.sort(np.random.default_rng(seed).choice(rna.n_obs, n_cells, replace=False))].copy()
    rna.X = sp.csr_matrix(rna.X, dtype=np.float32)
    return rna


def single_cell(name: str, adata: ad.AnnData, opts: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    models = {"tGPT": TGPT_MODEL, "SCGPT": "scgpt", "tGPT random weights": random_tgpt(opts.seed)}
    speed = []
    for label, model in models.items():
        key = "X_" + label.replace(" ", "_")
        start = time.perf_counter()
        scfm.tl.embed(adata, model, key_added=key, progress=False, min_genes=opts.min_genes)
        seconds = time.perf_counter() - start
        record = adata.uns["scfm"][key]
        speed.append(
            {
                "dataset": name,
                "model": label,
                "cells": adata.n_obs,
                "seconds": seconds,
                "cells_per_s": adata.n_obs / seconds,
                "tokens_per_cell": record["mean_tokens_per_cell"],
                "genes_matched": record["genes_matched"],
            }
        )
    embeddings = {label: "X_" + label.replace(" ", "_") for label in models}
    scores = integration(adata, "batch", "cell_type", methods=("hvg_pca",), embeddings=embeddings, seed=opts.seed)
    wide = scores[scores.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
    keys = {**embeddings, "hvg_pca": "X_hvg_pca"}
    rows = []
    for method, row in wide.iterrows():
        rows.append(
            {
                "dataset": name,
                "method": method,
                "Bio": row["Bio conservation"],
                "Batch": row["Batch correction"],
                "Total": row["Total"],
                "15-NN accuracy": knn_accuracy(adata, keys.get(method, method), "cell_type"),
                **{k: v for k, v in row.items() if k not in ("Bio conservation", "Batch correction", "Total")},
            }
        )
    return rows, speed


def pbmc(opts: argparse.Namespace) -> list[dict]:
    """5-fold 15-NN accuracy of ``bulk_labels`` on ``sc.datasets.pbmc68k_reduced()`` (``adata.raw``)."""
    import scanpy as sc

    from scfm.bench import hvg_pca

    adata = sc.datasets.pbmc68k_reduced()
    models = {"tGPT": TGPT_MODEL, "SCGPT": "scgpt", "tGPT random weights": random_tgpt(opts.seed)}
    for label, model in models.items():
        scfm.tl.embed(adata, model, use_raw=True, key_added=label, progress=False)
    hvg_pca(adata, use_raw=True, key_added="HVG+PCA")
    chance = adata.obs["bulk_labels"].value_counts(normalize=True).max()
    return [
        {"method": key, "15-NN accuracy": knn_accuracy(adata, key, "bulk_labels"), "chance": chance}
        for key in [*models, "HVG+PCA"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", nargs="+", default=["bulk", "single-cell", "pbmc"], choices=["bulk", "single-cell", "pbmc"]
    )
    parser.add_argument("--mop-cells", type=int, default=3000)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--min-genes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tgpt", default="tgpt", help="tGPT checkpoint (default: the bundled one)")
    parser.add_argument("--json", type=Path, default=None)
    opts = parser.parse_args()
    global TGPT_MODEL
    TGPT_MODEL = opts.tgpt
    out: dict[str, list[dict]] = {}
    if "bulk" in opts.tasks:
        bulk = bulk_tcga(opts) + bulk_breast(opts)
        out["bulk"] = bulk
        columns = ["dataset", "outcome", "metric", "feature_set", "mean", "std", "n_samples", "n_events"]
        print("\n## Bulk associations (5-fold CV; mean and std over folds)\n")
        print(table(bulk, columns))
    if "single-cell" in opts.tasks:
        rows, speed = [], []
        for name, adata in (("pancreas", load_pancreas()), ("MOp RNA", load_mop(opts.mop_cells, opts.seed))):
            task_rows, task_speed = single_cell(name, adata, opts)
            rows += task_rows
            speed += task_speed
        out["single_cell"], out["throughput"] = rows, speed
        print("\n## Single cells: scib-metrics (unscaled), zero-shot embeddings\n")
        print(table(rows, ["dataset", "method", "Bio", "Batch", "Total", "15-NN accuracy"]))
        metric_columns = [c for c in rows[0] if c not in ("dataset", "method", "Bio", "Batch", "Total")]
        print()
        print(table(rows, ["dataset", "method", *metric_columns]))
        scgpt = {r["dataset"]: r["cells_per_s"] for r in speed if r["model"] == "SCGPT"}
        for r in speed:
            r["vs_SCGPT"] = r["cells_per_s"] / scgpt[r["dataset"]]
        print("\n## Embedding throughput (CPU, same process; ratio to SCGPT on the same cells)\n")
        columns = ["dataset", "model", "cells", "seconds", "cells_per_s", "vs_SCGPT", "tokens_per_cell"]
        print(table(speed, [*columns, "genes_matched"]))
    if "pbmc" in opts.tasks:
        out["pbmc"] = pbmc(opts)
        print("\n## pbmc68k_reduced: 5-fold 15-NN accuracy of bulk_labels\n")
        print(table(out["pbmc"], ["method", "15-NN accuracy", "chance"]))
    if opts.json:
        opts.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()

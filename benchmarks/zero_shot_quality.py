"""Zero-shot quality of a checkpoint beside HVG+PCA, measured in the same run.

Usage::

    python benchmarks/zero_shot_quality.py [--model DIR] [--data ../shared/data] [--json results.json]

1. scib-metrics (bio conservation, batch correction, total; unscaled) on
   ``integration/pancreas_3batches_cepo_small.h5ad`` (528 cells, 3 studies, beta/ductal), for the scfm
   embedding and HVG+PCA (2,000 HVGs, 50 PCs), plus 5-fold 15-NN accuracy of ``cell_type`` (chance 0.57).
   The default checkpoint was pretrained without these pancreas datasets.
2. scib label silhouette and 5-fold 15-NN accuracy of ``bulk_labels`` on ``sc.datasets.pbmc68k_reduced()``
   (``adata.raw``, 765 genes) for both (chance accuracy: 0.34, the largest class), and the 15-NN accuracy of
   the same architecture with random weights for torch seeds 0-4 (the no-pretraining control).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import scanpy as sc

import scfm
from scfm.models import load_pretrained


def pancreas(data_dir: Path, model) -> pd.DataFrame:
    adata = ad.read_h5ad(data_dir / "integration" / "pancreas_3batches_cepo_small.h5ad")
    scfm.tl.embed(adata, model, progress=False)
    scfm.bench.hvg_pca(adata, key_added="X_hvg_pca")
    table = scfm.bench.scib_table(
        adata, ["X_scfm", "X_hvg_pca"], batch_key="batch", label_key="cell_type", pre_integrated_key="X_hvg_pca"
    )
    table = table.drop(index="Metric Type", errors="ignore")
    table["15-NN accuracy"] = [scfm.bench.knn_accuracy(adata, key, "cell_type") for key in table.index]
    return table


def pbmc(model) -> pd.DataFrame:
    adata = sc.datasets.pbmc68k_reduced()
    start = time.perf_counter()
    scfm.tl.embed(adata, model, use_raw=True, progress=False)
    seconds = time.perf_counter() - start
    scfm.bench.hvg_pca(adata, use_raw=True, key_added="X_hvg_pca")
    rows = {
        key: {
            "label_silhouette": scfm.bench.label_silhouette(adata, key, "bulk_labels"),
            "knn15_accuracy": scfm.bench.knn_accuracy(adata, key, "bulk_labels"),
        }
        for key in ("X_scfm", "X_hvg_pca")
    }
    rows["X_scfm"]["embed_seconds"] = seconds
    return pd.DataFrame(rows).T


def random_weight_knn(model, seeds: range) -> pd.Series:
    """pbmc68k 15-NN accuracy of the checkpoint's architecture with random weights, one value per torch seed."""
    import torch

    from scfm.models import Pretrained
    from scfm.models.scgpt import SCGPTModule

    pretrained = load_pretrained(model)
    adata = sc.datasets.pbmc68k_reduced()
    scores = {}
    for seed in seeds:
        torch.manual_seed(seed)
        module = SCGPTModule(pretrained.module.config).eval()
        scfm.tl.embed(
            adata, Pretrained("scgpt", module, pretrained.vocab, "random", "", ""), use_raw=True, progress=False
        )
        scores[seed] = scfm.bench.knn_accuracy(adata, "X_scfm", "bulk_labels")
    return pd.Series(scores, name="knn15_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--json", default=None, type=Path)
    args = parser.parse_args()
    results = {}
    if (args.data / "integration" / "pancreas_3batches_cepo_small.h5ad").exists():
        table = pancreas(args.data, args.model)
        print("\n## pancreas_3batches_cepo_small (scib-metrics, unscaled; higher is better)\n")
        print(table.astype(float).round(3).to_markdown())
        ratio = float(table.loc["X_scfm", "Total"]) / float(table.loc["X_hvg_pca", "Total"])
        print(f"\nscib Total ratio scfm / HVG+PCA: {ratio:.2f}")
        results["pancreas"] = table.astype(float).to_dict(orient="index")
    else:
        print(f"skipping pancreas: {args.data} not found")
    table = pbmc(args.model)
    print("\n## pbmc68k_reduced (bulk_labels: label silhouette and 15-NN accuracy; higher is better)\n")
    print(table.round(3).to_markdown())
    ratio = table.loc["X_scfm", "label_silhouette"] / table.loc["X_hvg_pca", "label_silhouette"]
    print(f"\nlabel silhouette ratio scfm / HVG+PCA: {ratio:.2f}")
    results["pbmc68k_reduced"] = table.to_dict(orient="index")
    random = random_weight_knn(args.model, range(5))
    print("\n## pbmc68k_reduced 15-NN accuracy with random weights (same architecture), torch seeds 0-4\n")
    print(random.round(3).to_frame().T.to_markdown())
    print(
        f"\nmean {random.mean():.3f}, min {random.min():.3f}, max {random.max():.3f}; trained model "
        f"{table.loc['X_scfm', 'knn15_accuracy']:.3f}"
    )
    results["pbmc68k_random_weights"] = random.to_dict()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

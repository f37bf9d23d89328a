"""Does the count VAE remove a strong planted batch effect within its default epochs, for each norm setting?

    python benchmarks/vae_planted.py                       # 240 and 960 cells, seeds 0 and 1, the norm variants
    python benchmarks/vae_planted.py --cells 240 --variants batch_free encoder_layer

The data are the unit tests' planted counts (``tests/conftest.make_batched_counts``: 300 genes, three cell types, a
second batch with twice the depth and its own programme, one gene block x5 and another x0.2). Each variant is
``models.base.fit_count_vae`` at its default epochs (400 at these sizes) with the norm (one for encoder and decoder,
or an ``(encoder, decoder)`` pair) and encoder dropout of ``vae_ablation.VARIANTS``. Printed per variant and seed:
batch and cell-type 10-NN accuracy of the latent means (5-fold; batch chance 0.5, lower is better mixed), the mean
SD of the latent means (a shrunken latent is the sign of the slow fit) and seconds; HVG-free log-PCA (20 components)
as the baseline of the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scanpy as sc
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from tabulate import tabulate

from scfm.models.base import fit_count_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_batched_counts
from vae_ablation import VARIANTS

PLANTED_VARIANTS = [
    "batch_free",
    "encode_batch",
    "layer",
    "layer_affine",
    "encoder_layer",
    "encoder_layer_dropout",
    "encoder_batch_encoder_layer",
    "encode_batch_affine",
]


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(10), embedding, labels, cv=5).mean())


def run(n_cells: int, seeds: int, variants: list[str]) -> list[dict]:
    adata = make_batched_counts([f"gene{i}" for i in range(300)], n_cells=n_cells)
    batches = adata.obs["batch"].cat.codes.to_numpy()
    types = adata.obs["cell_type"].cat.codes.to_numpy()
    logged = adata.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    sc.pp.pca(logged, n_comps=20)
    pca = logged.obsm["X_pca"]
    rows = [{"cells": n_cells, "variant": "log-PCA", "seed": "", "batch acc": knn_accuracy(pca, batches)}]
    rows[0].update({"type acc": knn_accuracy(pca, types), "latent SD": float(pca.std(0).mean()), "s": 0.0})
    for variant in variants:
        encode_batch, norm, dropout = VARIANTS[variant]
        for seed in range(seeds):
            start = time.perf_counter()
            fit = fit_count_vae(
                adata.X.tocsr(), batches, seed=seed, encode_batch=encode_batch, norm=norm, dropout=dropout, device="cpu"
            )
            rows.append(
                {
                    "cells": n_cells,
                    "variant": variant,
                    "seed": seed,
                    "batch acc": knn_accuracy(fit.latent, batches),
                    "type acc": knn_accuracy(fit.latent, types),
                    "latent SD": float(fit.latent.std(0).mean()),
                    "s": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", type=int, default=[240, 960])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=PLANTED_VARIANTS)
    opts = parser.parse_args()
    rows = [row for n_cells in opts.cells for row in run(n_cells, opts.seeds, opts.variants)]
    for row in rows:
        row["setting"] = str(VARIANTS.get(row["variant"], ""))
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".2f"))


if __name__ == "__main__":
    main()

"""Leave-dataset-out zero-shot protocol: checkpoints beside HVG+PCA on data none of them was trained on.

Usage::

    python benchmarks/zero_shot_protocol.py [--models scgpt tgpt scmulan cellplm DIR ...]
        [--sets pancreas pbmc_sorted cortex pbmc68k] [--max-cells 1000] [--data ../shared/data] [--json PATH]

Evaluation sets (each is excluded, by dataset, from the pretraining of the default model; see its model card):

``pancreas`` (held out)
    ``integration/pancreas_3batches_cepo_small.h5ad``: 528 cells, 3 studies (Baron inDrop, Segerstolpe
    Smart-seq2, Xin), beta vs ductal; batch = study.
``pbmc_sorted`` (held out)
    ``annotation/pbmc_zheng2017_sorted_reference.h5ad``: FACS-sorted PBMC populations (Zheng 2017), 9 labels, one
    batch (so only bio conservation is reported). The whole Zheng 2017 study (also the frozen donor A) is excluded.
``cortex`` (held out, non-blood)
    ``cxg_cortex_cultures_div4_div11`` of ``pretraining/human_corpus_3.h5ad``: human fetal telencephalon cultured 4
    and 11 days, its 2,000 measured genes, 10 cell types (the author's doublets dropped); batch = library.
``pbmc68k`` (validation: used for recipe choices, never reported as held out)
    ``sc.datasets.pbmc68k_reduced()``, ``adata.raw`` (765 log-normalised genes), ``bulk_labels``, one batch.

A model argument is a family name (its bundled checkpoint), a checkpoint directory, or ``random:<model>``: the same
architecture with random weights (torch seed 0), the control for what pretraining adds.

Every set is subsampled (stratified by label, seed 0) to at most ``--max-cells`` cells. Each embedding (the
checkpoints' ``tl.embed`` output and HVG+PCA computed on the evaluation cells themselves: normalise to 10,000,
log1p, 2,000 HVGs, scale, 50 PCs) is scored in one scib-metrics ``Benchmarker`` per set (unscaled; Bio, Batch,
Total), plus 5-fold 15-NN accuracy of the labels. Sets with one batch report bio conservation only. The same run
scores the protocol's other baselines (:func:`baselines`): the parameter-free rank -> z-score -> PCA pipeline
(``scfm.bench.rank_pca``), a random Gaussian projection of the HVG+PCA features
(``scfm.bench.random_projection``) and scVI trained on the evaluation cells (not for pbmc68k, whose matrix is
log values; ``--no-scvi`` skips it).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

import scfm

HELD_OUT = ("pancreas", "pbmc_sorted", "cortex")
VALIDATION = ("pbmc68k",)


@dataclass
class EvalSet:
    """Cells to embed (counts in X, or log values in raw for pbmc68k) and the obs columns to score."""

    name: str
    adata: ad.AnnData
    label_key: str
    batch_key: str | None
    use_raw: bool = False


def stratified_subsample(adata: ad.AnnData, label_key: str, max_cells: int, seed: int = 0) -> ad.AnnData:
    """At most ``max_cells`` cells, each label keeping its share (at least one cell per label)."""
    if adata.n_obs <= max_cells:
        return adata
    rng = np.random.default_rng(seed)
    labels = adata.obs[label_key].astype(str).to_numpy()
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        n = max(1, round(len(rows) * max_cells / adata.n_obs))
        keep.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return adata[np.sort(np.concatenate(keep))].copy()


def load_set(name: str, data: Path, max_cells: int) -> EvalSet:
    """One evaluation set by name (see the module docstring)."""
    if name == "pancreas":
        adata = ad.read_h5ad(data / "integration" / "pancreas_3batches_cepo_small.h5ad")
        return EvalSet(name, stratified_subsample(adata, "cell_type", max_cells), "cell_type", "batch")
    if name == "pbmc_sorted":
        adata = ad.read_h5ad(data / "annotation" / "pbmc_zheng2017_sorted_reference.h5ad")
        return EvalSet(name, stratified_subsample(adata, "cell_type", max_cells), "cell_type", None)
    if name == "cortex":
        corpus = ad.read_h5ad(data / "pretraining" / "human_corpus_3.h5ad")
        dataset = "cxg_cortex_cultures_div4_div11"
        cells = (corpus.obs["dataset"] == dataset).to_numpy() & (corpus.obs["cell_type"] != "unknown").to_numpy()
        genes = corpus.var[f"measured_in:{dataset}"].to_numpy(dtype=bool)
        adata = corpus[cells, genes].copy()
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        adata.obs = adata.obs[["cell_type", "sample"]].astype(str).astype("category")
        return EvalSet(name, stratified_subsample(adata, "cell_type", max_cells), "cell_type", "sample")
    if name == "pbmc68k":
        adata = sc.datasets.pbmc68k_reduced()
        return EvalSet(name, stratified_subsample(adata, "bulk_labels", max_cells), "bulk_labels", None, use_raw=True)
    raise ValueError(f"unknown evaluation set {name!r}; choose from {HELD_OUT + VALIDATION}")


RANDOM = "random:"


def model_label(model: str) -> str:
    """Short row name of a model argument (a family name, a checkpoint directory, or ``random:<either>``)."""
    if model.startswith(RANDOM):
        return "random_" + model_label(model[len(RANDOM) :])
    return Path(model).name if Path(model).exists() else model


def model_argument(model: str):
    """What ``tl.embed`` takes for a model argument; ``random:<model>``: its architecture with random weights."""
    if not model.startswith(RANDOM):
        return model
    from scfm.models import load_pretrained

    return random_weights(load_pretrained(model[len(RANDOM) :]), seed=0)


def random_weights(pretrained, seed: int):
    """The checkpoint's architecture and vocabulary with random weights drawn under ``torch.manual_seed(seed)``."""
    import torch

    from scfm.models import Pretrained

    torch.manual_seed(seed)
    module = type(pretrained.module)(pretrained.module.config).eval()
    return Pretrained(pretrained.family, module, pretrained.vocab, f"random weights (torch seed {seed})", "", None)


def embed_all(ev: EvalSet, models: list[str], max_len: int | None = None) -> dict[str, float]:
    """Write ``X_<model>`` for every model and ``X_hvg_pca``; return seconds per model.

    ``max_len`` overrides the checkpoints' inference context (gene-token families only).
    """
    seconds = {}
    for model in models:
        key = f"X_{model_label(model)}"
        start = time.perf_counter()
        argument = model_argument(model)
        options = {"max_len": max_len} if max_len else {}
        scfm.tl.embed(ev.adata, argument, use_raw=ev.use_raw, key_added=key, progress=False, **options)
        seconds[key] = time.perf_counter() - start
    scfm.bench.hvg_pca(ev.adata, use_raw=ev.use_raw, key_added="X_hvg_pca")
    return seconds


def baselines(ev: EvalSet, scvi: bool) -> dict[str, float]:
    """Write the protocol's other baselines to ``obsm``; return seconds per key.

    ``X_rank_pca`` (per-cell ranks of the HVGs, z-scored, PCA), ``X_random_projection`` (the scaled HVGs onto 50
    Gaussian directions) and, with ``scvi`` and a count matrix, ``X_scvi``: scVI trained on the evaluation cells
    themselves (batch as covariate where the set has batches; expected counts rounded). pbmc68k holds log values
    only, so it has no scVI row.
    """
    seconds = {}
    runs = {
        "X_rank_pca": lambda: scfm.bench.rank_pca(ev.adata, use_raw=ev.use_raw),
        "X_random_projection": lambda: scfm.bench.random_projection(ev.adata, use_raw=ev.use_raw),
    }
    if scvi and not ev.use_raw:
        runs["X_scvi"] = lambda: scfm.bench.scvi_latent(ev.adata, ev.batch_key, round_counts=True)
    for key, run in runs.items():
        start = time.perf_counter()
        run()
        seconds[key] = time.perf_counter() - start
    return seconds


def score(ev: EvalSet, keys: list[str]) -> pd.DataFrame:
    """scib-metrics table (unscaled) plus 15-NN accuracy; one-batch sets keep bio conservation only."""
    batch_key = ev.batch_key
    if batch_key is None:
        ev.adata.obs["_one_batch"] = "all"
        batch_key = "_one_batch"
    table = scfm.bench.scib_table(
        ev.adata,
        keys,
        batch_key=batch_key,
        label_key=ev.label_key,
        pre_integrated_key="X_hvg_pca",
        batch_metrics=ev.batch_key is not None,
    )
    table = table.drop(index="Metric Type", errors="ignore").astype(float)
    if ev.batch_key is None:
        batch_metrics = ["iLISI", "KBET", "Graph connectivity", "PCR comparison", "BRAS", "Batch correction", "Total"]
        table = table.drop(columns=[c for c in batch_metrics if c in table.columns])
    table["15-NN accuracy"] = [scfm.bench.knn_accuracy(ev.adata, key, ev.label_key) for key in table.index]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["scgpt", "tgpt", "scmulan", "cellplm"])
    parser.add_argument("--sets", nargs="+", default=list(HELD_OUT + VALIDATION))
    parser.add_argument("--max-cells", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--max-len", type=int, default=None, help="inference context of gene-token checkpoints")
    parser.add_argument("--no-scvi", action="store_true", help="skip the scVI baseline (minutes per set on 2 cores)")
    args = parser.parse_args()
    results, summary = {}, []
    for name in args.sets:
        ev = load_set(name, args.data, args.max_cells)
        seconds = embed_all(ev, args.models, args.max_len)
        seconds |= baselines(ev, scvi=not args.no_scvi)
        keys = [*seconds, "X_hvg_pca"]
        table = score(ev, keys)
        role = "held out" if name in HELD_OUT else "validation"
        print(f"\n## {name} ({role}; {ev.adata.n_obs} cells, label {ev.label_key}, batch {ev.batch_key})\n")
        print(table.round(3).to_markdown())
        print("\nembedding seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()), flush=True)
        results[name] = {"table": table.to_dict(orient="index"), "seconds": seconds, "n_cells": ev.adata.n_obs}
        for key in keys:
            row = {"set": name, "role": role, "embedding": key, "Bio": table.loc[key, "Bio conservation"]}
            row["Total"] = table.loc[key, "Total"] if "Total" in table.columns else np.nan
            row["15-NN"] = table.loc[key, "15-NN accuracy"]
            summary.append(row)
    frame = pd.DataFrame(summary)
    baseline = frame[frame["embedding"] == "X_hvg_pca"].set_index("set")
    frame["Bio / PCA"] = frame["Bio"] / frame["set"].map(baseline["Bio"])
    frame["Total / PCA"] = frame["Total"] / frame["set"].map(baseline["Total"])
    print("\n## Summary (ratios to HVG+PCA on the same cells, same run)\n")
    print(frame.round(3).to_markdown(index=False))
    if args.json:
        args.json.write_text(json.dumps({"sets": results, "summary": frame.to_dict(orient="records")}, indent=2))


if __name__ == "__main__":
    main()

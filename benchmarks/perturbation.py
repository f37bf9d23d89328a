"""Genetic perturbation prediction on unseen targets: scfm (scGPT perturb-GEP) beside the simple baselines.

Data: ``../shared/data/perturbation/papalexi2021_thp1_crispr_lowmoi_299genes.h5ad`` (THP-1 CRISPR knockouts, 26
targets, non-targeting controls, raw counts). The targets in the model's vocabulary are dealt into ``--folds``
folds with a seeded permutation; each of the first ``--splits`` folds is held out once (unseen perturbations), the
model is fine-tuned on the other targets' cells and the controls, and every method predicts the held-out targets'
mean change. Metrics (``scfm.bench.perturbation_metrics``) are averaged over the held-out targets of a split,
then reported as mean and standard deviation over splits.

Usage::

    python benchmarks/perturbation.py                        # the documented run (~10-15 min on 2 loaded cores)
    python benchmarks/perturbation.py --splits 1 --epochs 1  # a quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import scfm
from scfm.bench import perturbation_baselines, perturbation_benchmark, summarise_screen

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "perturbation"
FILE = DATA / "papalexi2021_thp1_crispr_lowmoi_299genes.h5ad"
METRICS = ["pearson_de", "pearson_de_centred", "pearson_all", "pearson_all_centred", "mse_de", "sign_de"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cells-per-perturbation", type=int, default=30)
    parser.add_argument("--target-cells", type=int, default=1, help="1 = the paper's single-cell targets")
    parser.add_argument("--control-cells", type=int, default=150)
    parser.add_argument("--n-control-cells", type=int, default=100, help="control cells averaged per prediction")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the per-target table as CSV")
    args = parser.parse_args()

    adata = ad.read_h5ad(FILE)
    key, control = "perturbation", "non-targeting"
    vocab = scfm.models.load_pretrained("scgpt").vocab
    targets = sorted(t for t in adata.obs[key].astype(str).unique() if t != control)
    outside = [t for t in targets if t not in vocab]
    targets = [t for t in targets if t in vocab]
    adata = adata[adata.obs[key].astype(str).isin([*targets, control])].copy()
    readout = [g for g in adata.var_names if g in vocab]
    print(f"{adata.n_obs} cells, {len(targets)} targets in the vocabulary (left out: {outside}), ", end="")
    print(f"{len(readout)} readout genes")

    summary = summarise_screen(adata, key, control, genes=readout, n_de=20, seed=args.seed)
    universe = ad.AnnData(np.zeros((1, len(set(readout) | set(targets))), dtype=np.float32))
    universe.var_names = sorted(set(readout) | set(targets))
    scfm.tl.gene_embeddings(universe)
    embeddings = pd.DataFrame(universe.varm["scfm_gene_embedding"], index=universe.var_names)

    order = np.random.default_rng(args.seed).permutation(targets)
    folds = [sorted(fold.tolist()) for fold in np.array_split(order, args.folds)]
    tables, timings, diagnostics = [], [], []
    for split, test in enumerate(folds[: args.splits]):
        train = [t for t in targets if t not in test]
        train_cells = adata[adata.obs[key].astype(str).isin([*train, control])].copy()
        start = time.perf_counter()
        prediction = scfm.tl.predict_perturbation(
            train_cells,
            test,
            perturbation_key=key,
            control=control,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            cells_per_perturbation=args.cells_per_perturbation,
            control_cells=args.control_cells,
            n_control_cells=args.n_control_cells,
            seed=args.seed,
            device="cpu",
            target_cells=args.target_cells,
        )
        seconds = time.perf_counter() - start
        record = prediction.uns["scfm"]["predict_perturbation"]
        timings.append(
            {
                "split": split,
                "train targets": len(train),
                "test targets": ", ".join(test),
                "training cells": record["finetune_training_cells"],
                "s/epoch": record["finetune_seconds_per_epoch"],
                "epoch losses": " ".join(f"{x:.4f}" for x in record["finetune_epoch_losses"]),
                "total s": seconds,
            }
        )
        predictions = perturbation_baselines(summary, train, test, gene_embeddings=embeddings)
        predictions = {
            "scfm (scGPT perturb-GEP)": pd.DataFrame(prediction.layers["change"], index=test, columns=readout),
            **predictions,
        }
        table = perturbation_benchmark(summary, predictions, train, test)
        diagnostics.extend(_diagnose(predictions, summary, train, test, split))
        table.insert(0, "split", split)
        tables.append(table)
        print(f"split {split}: test {test}; {seconds:.0f} s")
    table = pd.concat(tables, ignore_index=True)
    if args.out is not None:
        table.to_csv(args.out, index=False)
    per_split = table.groupby(["method", "split"])[METRICS].mean()
    mean = per_split.groupby("method").mean()
    sd = per_split.groupby("method").std(ddof=1) if args.splits > 1 else mean * np.nan
    order = mean.sort_values("pearson_de", ascending=False).index
    shown = pd.DataFrame(
        {m: [f"{mean.loc[i, m]:.3f} ± {sd.loc[i, m]:.3f}" for i in order] for m in METRICS}, index=order
    )
    pd.set_option("display.width", 250)
    print("\nHeld-out targets, mean ± sd over splits (per split: mean over its held-out targets)")
    print(shown.to_markdown())
    print("\nFine-tuning (CPU)")
    print(pd.DataFrame(timings).to_markdown(index=False, floatfmt=".1f"))
    print("\nWhy: how far each method's predictions for the held-out targets are from the training mean")
    print(
        pd.DataFrame(diagnostics)
        .groupby("method")
        .mean(numeric_only=True)
        .drop(columns="split")
        .to_markdown(floatfmt=".3f")
    )
    print(
        f"\nsettings: {args.epochs} epochs, {args.cells_per_perturbation} cells per training target, "
        f"{args.control_cells} control cells, batch {args.batch_size}, lr {args.lr}, "
        f"{args.n_control_cells} control cells per prediction, {args.target_cells} cell(s) per target, seed {args.seed}"
    )


def _diagnose(predictions, summary, train, test, split) -> list[dict]:
    """Per method: correlation of its predicted changes with the training mean, and how much they vary by target."""
    mean = np.mean([summary.change(p) for p in train], axis=0)
    rows = []
    for method, frame in predictions.items():
        values = frame.reindex(index=test, columns=summary.genes).to_numpy(dtype=float)
        if np.isnan(values).any() or method in ("no change", "training mean"):
            continue
        with np.errstate(invalid="ignore"):
            to_mean = np.nanmean([np.corrcoef(v, mean)[0, 1] for v in values])
        spread = float(np.linalg.norm(values - values.mean(0), axis=1).mean())
        observed = np.stack([summary.change(p) for p in test])
        rows.append(
            {
                "method": method,
                "split": split,
                "corr with training mean": to_mean,
                "spread across targets (predicted)": spread,
                "spread across targets (observed)": float(np.linalg.norm(observed - observed.mean(0), axis=1).mean()),
            }
        )
    return rows


if __name__ == "__main__":
    main()

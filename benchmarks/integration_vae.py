"""``tl.integrate(method="vae")`` beside scVI, Harmony and HVG+PCA, with the genes-only ablation, in one run per set.

    python benchmarks/integration_vae.py                                  # pancreas, cortex, mop; 2 seeds
    python benchmarks/integration_vae.py --sets pancreas --seeds 1 --finetune-sets pancreas
    python benchmarks/integration_vae.py --sets pancreas mop --variants genes encode_batch

Sets (data from ../shared/data):

- ``pancreas``: ``integration/pancreas_3batches_cepo_small.h5ad``, 528 cells, 3 studies, beta vs ductal.
- ``cortex``: the zero-shot protocol's held-out human fetal cortex cultures (``zero_shot_protocol.py``), every
  labelled cell (4,447), its two libraries as batches, 10 types; never in a pretraining corpus.
- ``mop``: 3,000 mouse motor-cortex RNA profiles (seed 0) of ``multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu``,
  12 libraries, 15 types; the model's human vocabulary meets the mouse symbols case-insensitively.

Rows: HVG+PCA, Harmony, scVI (scvi-tools, 2,000 batch-aware HVGs, 30 latent dimensions, its default epochs; Xin's
expected counts rounded), ``tl.integrate(method="vae")`` with the bundled default model's embedding
(``embedding_weight=1``) and without it (``embedding_weight=0``, the default: genes only; what the model adds),
one row per seed (``--scvi-seeds`` adds scVI fits of further seeds, for its own spread); with ``--finetune-sets``
also ``tl.integrate(method="finetune")`` (scGPT's recipe, 10 epochs). ``--variants`` picks the VAE rows; with
``encode_batch`` a row of the VAE fitted as scArches recommends for a reference (``encode_batch=True``).
Scores: scib-metrics 0.5 ``Benchmarker``, unscaled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
from tabulate import tabulate

import scfm
from scfm.bench import integration, scvi_latent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, load_mop, load_pancreas
from zero_shot_protocol import load_set

SETS = ("pancreas", "cortex", "mop")


def load(name: str):
    """The set's AnnData with ``obs['batch']`` and ``obs['cell_type']``, and the species of its gene symbols."""
    if name == "pancreas":
        return load_pancreas(), "human"
    if name == "mop":
        return load_mop(3000, 0), "mouse"
    adata = load_set("cortex", DATA, 10**6).adata
    adata.obs["batch"] = adata.obs["sample"]
    return adata, "human"


def run_set(name: str, opts: argparse.Namespace) -> list[dict]:
    adata, species = load(name)
    seconds, embeddings = {}, {}
    variants = {
        "embedding": ("scfm vae (genes + embedding)", {"embedding_weight": 1.0}),
        "genes": ("scfm vae (genes only)", {}),
        "encode_batch": ("scfm vae (genes only, encode_batch)", {"encode_batch": True}),
    }
    for seed in range(opts.seeds):
        for variant in opts.variants:
            label, settings = variants[variant]
            key = f"X_vae_{variant}_{seed}"
            start = time.perf_counter()
            scfm.tl.integrate(adata, "batch", species=species, seed=seed, key_added=key, progress=False, **settings)
            seconds[f"{label} s{seed}"] = time.perf_counter() - start
            embeddings[f"{label} s{seed}"] = key
    for seed in range(1, opts.scvi_seeds):  # seed 0 is the runner's own scVI row
        start = time.perf_counter()
        scvi_latent(adata, "batch", round_counts=True, seed=seed, key_added=f"X_scvi_{seed}")
        seconds[f"scvi s{seed}"] = time.perf_counter() - start
        embeddings[f"scvi s{seed}"] = f"X_scvi_{seed}"
    if name in opts.finetune_sets:
        start = time.perf_counter()
        scfm.tl.integrate(adata, "batch", method="finetune", species=species, key_added="X_ft", progress=False)
        seconds["scfm finetune (scGPT recipe)"] = time.perf_counter() - start
        embeddings["scfm finetune (scGPT recipe)"] = "X_ft"
    table = integration(
        adata,
        "batch",
        "cell_type",
        methods=("hvg_pca", "harmony", "scvi"),
        embeddings=embeddings,
        scvi_kwargs={"round_counts": True},
    )
    wide = table[table.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
    seconds |= table[table.metric_type == "Time"].set_index("method")["value"].to_dict()
    scvi_total = float(wide.loc["scvi", "Total"])
    rows = []
    for method, scores in wide.iterrows():
        rows.append(
            {
                "set": name,
                "method": method,
                "Total": scores["Total"],
                "Bio": scores["Bio conservation"],
                "Batch": scores["Batch correction"],
                "Total / scVI": scores["Total"] / scvi_total,
                "KMeans NMI": scores["KMeans NMI"],
                "iLISI": scores["iLISI"],
                "seconds": seconds.get(method, float("nan")),
            }
        )
    rows.sort(key=lambda row: -row["Total"])
    print(f"\n## {name}: {adata.n_obs} cells, {adata.obs['batch'].nunique()} batches, "
          f"{adata.obs['cell_type'].nunique()} cell types")  # fmt: skip
    print(tabulate(rows, headers="keys", floatfmt=".3f", tablefmt="github"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("genes", "embedding", "encode_batch"),
        default=["embedding", "genes"],
        help="VAE rows: genes only (the default), + the tGPT embedding, genes with encode_batch=True",
    )
    parser.add_argument(
        "--finetune-sets", nargs="*", choices=SETS, default=[], help="also run scGPT's fine-tuning recipe on these"
    )
    parser.add_argument("--scvi-seeds", type=int, default=1, help="scVI fits (seeds 0, 1, ...): its spread")
    parser.add_argument("--json", type=Path, default=None)
    opts = parser.parse_args()
    rows = [row for name in opts.sets for row in run_set(name, opts)]
    if opts.json is not None:
        opts.json.write_text(json.dumps(pd.DataFrame(rows).to_dict(orient="records"), indent=1))


if __name__ == "__main__":
    main()

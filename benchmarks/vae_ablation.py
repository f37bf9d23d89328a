"""Which part of ``encode_batch=True`` (batch in the encoder, layer norm, dropout 0.2) moves the VAE's scib scores.

    python benchmarks/vae_ablation.py                                   # pancreas, 5 seeds, every variant
    python benchmarks/vae_ablation.py --sets pancreas cortex --seeds 2 --variants batch_free encode_batch layer
    python benchmarks/vae_ablation.py --seeds 3 --variants encoder_layer encode_batch --epochs 200   # fewer epochs

``tl.integrate`` (genes only, every other setting its default) is run with the count VAE's three settings
crossed; ``encode_batch`` is ``tl.integrate(encode_batch=True)`` (the encoder reads the batch, layer norm, dropout
0.2) and ``batch_free`` its default ``encode_batch=False`` (batch norm, dropout 0.1). The
other variants exist only here: the norm and dropout are passed to ``models.base.fit_count_vae`` by wrapping the
function ``tl.integrate`` calls. Sets and loading as ``integration_vae.py``. Scores: scib-metrics 0.5
``Benchmarker``, unscaled, with HVG+PCA and scVI (seed 0, as in ``integration_vae.py``) in the same run; the
table gives each seed and each variant's mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from unittest import mock

import pandas as pd
from tabulate import tabulate

import scfm
import scfm.tl._integrate_vae as integrate_vae
from scfm.bench import integration
from scfm.models.base import fit_count_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integration_vae import SETS, load

VARIANTS = {  # name: (encoder reads the batch, norm (or encoder, decoder pair), encoder dropout)
    "batch_free": (False, "batch", 0.1),
    "encode_batch": (True, "layer", 0.2),
    "encoder_batch": (True, "batch", 0.1),
    "layer": (False, "layer", 0.1),
    "dropout": (False, "batch", 0.2),
    "layer_dropout": (False, "layer", 0.2),
    "encoder_batch_layer": (True, "layer", 0.1),
    "encoder_batch_dropout": (True, "batch", 0.2),
    "encoder_layer": (False, ("layer", "batch"), 0.1),
    "encoder_layer_dropout": (False, ("layer", "batch"), 0.2),
    "encoder_batch_encoder_layer": (True, ("layer", "batch"), 0.1),
    "encoder_batch_encoder_layer_dropout": (True, ("layer", "batch"), 0.2),
    "layer_affine": (False, "layer_affine", 0.1),
    "encode_batch_affine": (True, "layer_affine", 0.2),
}


def run_set(name: str, seeds: int, variants: list[str], epochs: int | None = None) -> pd.DataFrame:
    adata, species = load(name)
    embeddings = {}
    for variant in variants:
        encode_batch, norm, dropout = VARIANTS[variant]
        fit = partial(fit_count_vae, norm=norm, dropout=dropout)
        for seed in range(seeds):
            key = f"X_{variant}_{seed}"
            start = time.perf_counter()
            with mock.patch.object(integrate_vae, "fit_count_vae", fit):
                scfm.tl.integrate(
                    adata,
                    "batch",
                    species=species,
                    seed=seed,
                    encode_batch=encode_batch,
                    max_epochs=epochs,
                    key_added=key,
                    progress=False,
                )
            print(f"{name} {variant} seed {seed}: {time.perf_counter() - start:.1f} s", flush=True)
            embeddings[f"{variant} s{seed}"] = key
    table = integration(
        adata,
        "batch",
        "cell_type",
        methods=("hvg_pca", "scvi"),
        embeddings=embeddings,
        scvi_kwargs={"round_counts": True},
    )
    wide = table[table.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
    wide = wide[["Total", "Bio conservation", "Batch correction"]].rename(
        columns={"Bio conservation": "Bio", "Batch correction": "Batch"}
    )
    wide["variant"] = [method.rsplit(" s", 1)[0] for method in wide.index]
    means = wide.groupby("variant")[["Total", "Bio", "Batch"]].agg(["mean", "min", "max"])
    print(f"\n## {name}: {adata.n_obs} cells, {adata.obs['batch'].nunique()} batches, every seed")
    print(tabulate(wide.reset_index(), headers="keys", floatfmt=".3f", tablefmt="github", showindex=False))
    print(f"\n## {name}: mean (min, max) over {seeds} seeds")
    summary = pd.DataFrame(
        {
            metric: [
                f"{means.loc[v, (metric, 'mean')]:.3f} ({means.loc[v, (metric, 'min')]:.3f}-"
                f"{means.loc[v, (metric, 'max')]:.3f})"
                for v in means.index
            ]
            for metric in ("Total", "Bio", "Batch")
        },
        index=means.index,
    )
    summary.insert(0, "encoder reads batch, norm, dropout", [str(VARIANTS.get(v, "")) for v in summary.index])
    print(tabulate(summary.sort_values("Total", ascending=False), headers="keys", tablefmt="github"))
    return wide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=["pancreas"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="VAE epochs (default: tl.integrate's heuristic)")
    opts = parser.parse_args()
    for name in opts.sets:
        run_set(name, opts.seeds, opts.variants, opts.epochs)


if __name__ == "__main__":
    main()

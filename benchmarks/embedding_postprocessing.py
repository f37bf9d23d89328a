"""Ablation: does centring or whitening the pooled states, with statistics fitted on the pretraining corpus, lift
zero-shot bio conservation on the leave-dataset-out protocol?

Usage::

    python benchmarks/embedding_postprocessing.py [tgpt|scgpt|DIR] [--data ../shared/data] [--json PATH]

The checkpoint embeds 2,000 random cells (seed 0) of each of the two pretraining corpora it was trained on
(``human_raw_counts_corpus``, ``human_extra_corpus``) without the final L2 normalisation; their mean, standard
deviations and principal axes are the statistics (fixed per checkpoint, so every variant keeps a cell's embedding
independent of the other cells). Each evaluation set of ``zero_shot_protocol.py`` is then embedded the same way
and scored, in one scib-metrics run beside HVG+PCA, as:

- ``raw_l2``: what ``tl.embed`` returns today (L2-normalised mean of the last hidden states);
- ``center_l2`` / ``z_l2``: minus the corpus mean (and divided by the corpus standard deviations), then L2;
- ``white_l2``: projected on the corpus principal axes and divided by their standard deviations (full
  whitening), then L2; ``white_eps_l2``: the same with a floor of 1 % of the first axis's variance;
- ``drop1pc_l2`` / ``drop3pc_l2``: the first 1 or 3 corpus principal axes removed, then L2;
- ``setscale``: ``sc.pp.scale`` on the evaluation set itself (depends on the set; a reference only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc

import scfm
import scfm.models.scgpt._embed as scgpt_embed
import scfm.models.tgpt._embed as tgpt_embed

sys.path.insert(0, str(Path(__file__).parent))
import zero_shot_protocol as protocol

CORPORA = ("human_raw_counts_corpus.h5ad", "human_extra_corpus.h5ad")


def l2(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def unnormalised_embedding(adata: ad.AnnData, model: str, use_raw: bool = False) -> np.ndarray:
    """``tl.embed`` output before its L2 normalisation (patched out of the tGPT and scGPT embedding loops)."""
    modules = (tgpt_embed, scgpt_embed)
    originals = [module.l2_normalise for module in modules]
    for module in modules:
        module.l2_normalise = lambda embeddings: embeddings
    try:
        scfm.tl.embed(adata, model, use_raw=use_raw, key_added="_unnormalised", progress=False)
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.l2_normalise = original
    return adata.obsm.pop("_unnormalised")


def corpus_statistics(model: str, data: Path, n_cells: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean, standard deviations and principal axes of the unnormalised embeddings of pretraining cells."""
    rng = np.random.default_rng(seed)
    parts = []
    for name in CORPORA:
        corpus = ad.read_h5ad(data / "pretraining" / name)
        cells = corpus[np.sort(rng.choice(corpus.n_obs, n_cells, replace=False))].copy()
        parts.append(unnormalised_embedding(cells, model))
    states = np.concatenate(parts)
    mean = states.mean(0)
    _, singular, axes = np.linalg.svd(states - mean, full_matrices=False)
    variance = singular**2 / (len(states) - 1)
    share = variance[:5] / variance.sum()
    print(f"corpus statistics from {len(states)} cells; variance share of the first 5 axes: {share.round(3)}")
    return {"mean": mean, "std": states.std(0) + 1e-6, "axes": axes, "variance": variance}


def variants(states: np.ndarray, stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every post-processing of the module docstring."""
    mean, std, axes, variance = stats["mean"], stats["std"], stats["axes"], stats["variance"]
    projected = (states - mean) @ axes.T
    return {
        "raw_l2": l2(states),
        "center_l2": l2(states - mean),
        "z_l2": l2((states - mean) / std),
        "white_l2": l2(projected / np.sqrt(variance)),
        "white_eps_l2": l2(projected / np.sqrt(variance + variance[0] * 1e-2)),
        "drop1pc_l2": l2(projected[:, 1:]),
        "drop3pc_l2": l2(projected[:, 3:]),
        "setscale": sc.pp.scale(states.copy(), copy=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="tgpt")
    parser.add_argument("--sets", nargs="+", default=list(protocol.HELD_OUT + protocol.VALIDATION))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stats = corpus_statistics(args.model, args.data)
    results = {}
    for name in args.sets:
        evaluation = protocol.load_set(name, args.data, 1000)
        states = unnormalised_embedding(evaluation.adata, args.model, evaluation.use_raw)
        keys = []
        for variant, embedding in variants(states, stats).items():
            evaluation.adata.obsm[f"X_{variant}"] = embedding.astype(np.float32)
            keys.append(f"X_{variant}")
        scfm.bench.hvg_pca(evaluation.adata, use_raw=evaluation.use_raw, key_added="X_hvg_pca")
        table = protocol.score(evaluation, [*keys, "X_hvg_pca"])
        columns = ["Bio conservation", "15-NN accuracy"] + (["Total"] if "Total" in table.columns else [])
        role = "held out" if name in protocol.HELD_OUT else "validation"
        print(f"\n## {name} ({role}, {evaluation.adata.n_obs} cells)\n")
        print(table[columns].round(3).to_markdown(), flush=True)
        results[name] = table.to_dict(orient="index")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Ablations of the default (tGPT) zero-shot embedding without retraining: gene-scaled ranking, pooled layer, and
the spread of the random-weight control over seeds. Each is scored on the leave-dataset-out protocol sets of
``zero_shot_protocol.py``, beside HVG+PCA, in one scib-metrics run per set.

Usage::

    python benchmarks/tgpt_input_ablation.py ranking [--model tgpt] [--sets ...] [--data ../shared/data]
    python benchmarks/tgpt_input_ablation.py layers  [--model tgpt] ...
    python benchmarks/tgpt_input_ablation.py seeds   [--model tgpt] [--seeds 4] ...

``ranking``
    Geneformer's rank-value encoding against tGPT's: before ranking, each gene's value (per-cell normalised to
    10,000; log input is ``expm1``-ed first) is divided by the gene's median non-zero normalised value over the
    pretraining corpus without the held-out datasets. Genes that are high *for that gene* then rank first,
    instead of the ribosomal and mitochondrial genes that top most cells. Tested on the checkpoint (trained on raw
    ranks) and on the same architecture with random weights (torch seed 0). Rows: ``trained_raw`` (what
    ``tl.embed`` does), ``trained_scaled``, ``random_raw``, ``random_scaled``. A checkpoint trained on scaled ranks
    (``data.gene_scaling: corpus_median``) carries its medians in ``gene_nonzero_median.json``; they are used
    instead.
``layers``
    Which depth's states are mean-pooled: ``last`` (what ``tl.embed`` does: after every block and the final
    norm), ``L<k>`` (after ``k`` blocks, through the final norm; ``L0`` is the input embeddings), and the mean of
    the normed states over blocks 1-4 or 0-4.
``seeds``
    The checkpoint beside ``--seeds`` random-weight copies of its architecture (torch seeds 0, 1, ...): how much
    of the "random weights" control is the draw.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
import yaml

import scfm
from scfm.models import Pretrained, load_pretrained
from scfm.nn import _transformer

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
import zero_shot_protocol as protocol
from pretrain_default import gene_nonzero_medians, load_corpus

# the training data of the scaled-rank recipe: its corpora, held-out datasets and gene-name folding
RECIPE = Path(__file__).parent.parent / "configs" / "tgpt_scaled_next_gene.yaml"
SCORE_COLUMNS = ["KMeans NMI", "Silhouette label", "Bio conservation", "Batch correction", "Total", "15-NN accuracy"]


def corpus_gene_medians(genes: list[str], data: Path) -> np.ndarray:
    """Median non-zero value of each gene after per-cell normalisation to 10,000, over the training corpora
    (the statistic ``data.gene_scaling: corpus_median`` recipes train with; corpora and exclusions from ``RECIPE``)."""
    recipe = yaml.safe_load(RECIPE.read_text())["data"]
    corpora = [str(data / "pretraining" / Path(path).name) for path in recipe["corpora"]]
    corpus, _ = load_corpus(corpora, recipe["exclude_datasets"], 1, tuple(recipe["strip_gene_prefixes"]))
    medians = gene_nonzero_medians(corpus)
    return medians.reindex(genes).fillna(1.0).to_numpy(dtype=np.float32)


def gene_scaled(ev: protocol.EvalSet, medians: dict[str, float]) -> ad.AnnData:
    """The set's cells with each gene divided by its corpus median (genes without one keep scale 1)."""
    source = ev.adata.raw.to_adata() if ev.use_raw else ev.adata
    x = sp.csr_matrix(source.X, dtype=np.float32, copy=True)
    if ev.use_raw:  # pbmc68k's raw holds log1p of normalised values
        x.data = np.expm1(x.data)
    scale = np.array([medians.get(gene, 1.0) for gene in source.var_names], dtype=np.float32)
    x = sp.csr_matrix(x @ sp.diags(1.0 / scale))
    return ad.AnnData(x, obs=ev.adata.obs[[]].copy(), var=source.var[[]].copy())


@contextlib.contextmanager
def pooled_layers(layers: list[int] | None):
    """Make every ``TransformerStack`` return the mean of its normed states after the listed blocks."""
    original = _transformer.TransformerStack.forward

    def forward(self, x, attn_mask=None, is_causal=False, last_layer_queries=None):
        states = [self.final_norm(x)]
        for layer in self.layers:
            x = layer(x, attn_mask, is_causal, None)
            states.append(self.final_norm(x))
        return torch.stack([states[i] for i in layers]).mean(0)

    if layers is not None:
        _transformer.TransformerStack.forward = forward
    try:
        yield
    finally:
        _transformer.TransformerStack.forward = original


def embed_variants(experiment: str, ev: protocol.EvalSet, pretrained: Pretrained, args, medians) -> list[str]:
    keys = []

    def embed(model, key, data=None, use_raw=ev.use_raw):
        scfm.tl.embed(ev.adata if data is None else data, model, use_raw=use_raw, key_added=key, progress=False)
        if data is not None:
            ev.adata.obsm[key] = data.obsm[key]
        keys.append(key)

    if experiment == "ranking":
        scaled = gene_scaled(ev, medians)
        random_model = protocol.random_weights(pretrained, 0)
        embed(pretrained, "X_trained_raw")
        embed(pretrained, "X_trained_scaled", scaled, use_raw=False)
        embed(random_model, "X_random_raw")
        embed(random_model, "X_random_scaled", scaled, use_raw=False)
    elif experiment == "layers":
        variants = {"last": None, "L0": [0], "L1": [1], "L2": [2], "L3": [3], "mean1-4": [1, 2, 3, 4]}
        variants["mean0-4"] = [0, 1, 2, 3, 4]
        for name, layers in variants.items():
            with pooled_layers(layers):
                embed(pretrained, f"X_{name}")
    else:
        embed(pretrained, "X_trained")
        for seed in range(args.seeds):
            embed(protocol.random_weights(pretrained, seed), f"X_random_seed{seed}")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["ranking", "layers", "seeds"])
    parser.add_argument("--model", default="tgpt", help="a tGPT checkpoint: family name or directory")
    parser.add_argument("--sets", nargs="+", default=list(protocol.HELD_OUT + protocol.VALIDATION))
    parser.add_argument("--max-cells", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    pretrained = load_pretrained(args.model)
    if pretrained.family != "tgpt":
        parser.error(f"--model must be a tGPT checkpoint, got family {pretrained.family!r}")
    medians = None
    if args.experiment == "ranking":
        genes = list(pretrained.vocab.genes)
        stored = Path(args.model) / "gene_nonzero_median.json"
        if stored.is_file():  # a checkpoint trained on scaled ranks: the medians it was trained with
            medians = json.loads(stored.read_text())
        else:
            medians = dict(zip(genes, corpus_gene_medians(genes, args.data).tolist(), strict=True))
    for name in args.sets:
        ev = protocol.load_set(name, args.data, args.max_cells)
        keys = embed_variants(args.experiment, ev, pretrained, args, medians)
        scfm.bench.hvg_pca(ev.adata, use_raw=ev.use_raw, key_added="X_hvg_pca")
        table = protocol.score(ev, [*keys, "X_hvg_pca"])
        role = "held out" if name in protocol.HELD_OUT else "validation"
        columns = [c for c in SCORE_COLUMNS if c in table.columns]
        print(f"\n## {args.experiment}: {name} ({role}, {ev.adata.n_obs} cells)\n")
        print(table[columns].round(3).to_markdown(), flush=True)


if __name__ == "__main__":
    main()

"""Pretrain a bundled default checkpoint (SCGPT or TGPT) on the shared human corpora.

Usage::

    python scripts/pretrain_default.py --config configs/scgpt_default.yaml --out src/scfm/checkpoints/scgpt_default
    python scripts/pretrain_default.py --config configs/tgpt_default.yaml --out src/scfm/checkpoints/tgpt_default

Reads both pretraining corpora, drops held-out datasets, builds the vocabulary from genes expressed in
enough training cells, keeps each dataset's ``measured_in`` mask (an unmeasured gene is never a zero
target), trains with GEP + GEPC + ECS and writes a checkpoint directory after every epoch; the final checkpoint
gets the recipe's ``export`` settings (inference context, pooling) in its ``config.json``.

A recipe with ``family: tgpt`` trains TGPT (next-gene prediction over each cell's ranked genes) instead; its
vocabulary keeps the genes that reach the top ``max_len - 1`` of at least ``vocab_min_top_cells`` cells, because
a gene never ranked that high is never seen in training. The corpus keeps only those genes, except for recipes with
``train.contrastive_views: neighbours``, whose neighbour teacher (HVG+PCA per dataset) reads every gene.

A recipe with ``family: cellplm`` trains CellPLM (masked cells and genes reconstructed from the other cells of a
sentence) on the corpora plus the training part of the spatial sections listed under ``data.spatial`` (each
with the split it holds out for evaluation); its vocabulary is the ``vocab_size`` most often detected corpus
genes plus the spatial panels' genes (mouse symbols upper-cased to meet the human ones).
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
import yaml
from lightning.pytorch.callbacks import Callback

from scfm.genes import GeneVocab
from scfm.models import SCGPT, TGPT, CellPLM


def merge_prefixed_genes(part: ad.AnnData, prefix: str) -> ad.AnnData:
    """Fold columns named ``<prefix><gene>`` into ``<gene>`` (counts added, ``measured_in`` masks or-ed)."""
    names = part.var_names.to_series()
    prefixed = names.str.startswith(prefix)
    if not prefixed.any():
        return part
    stripped = names.where(~prefixed, names.str[len(prefix) :]).to_numpy()
    genes, columns = np.unique(stripped, return_inverse=True)
    fold = sp.csr_matrix((np.ones(len(columns), np.float32), (np.arange(len(columns)), columns)))
    masks = part.var.filter(like="measured_in:").astype(bool).groupby(stripped).any().reindex(genes)
    return ad.AnnData(sp.csr_matrix(part.X @ fold), obs=part.obs, var=masks)


def load_corpus(
    paths: list[str],
    exclude: list[str],
    min_cells: int,
    strip_prefixes: tuple[str, ...] = (),
    exclude_cells: list[dict] | None = None,
) -> tuple[ad.AnnData, GeneVocab]:
    """Both corpora over one gene index; ``strip_prefixes`` removes genome prefixes such as ``hg19_`` from names
    (the ECCITE-seq cells name every gene ``hg19_<symbol>``, which otherwise never meets the other datasets).

    ``exclude`` drops whole datasets; each ``exclude_cells`` entry (``{"dataset": ..., "column": ..., "values":
    [...]}``) drops the cells of one dataset whose ``obs[column]`` is one of ``values`` (e.g. one library).
    """
    parts = []
    for path in paths:
        part = ad.read_h5ad(path)
        dropped = part.obs["dataset"].isin(exclude).to_numpy()
        for rule in exclude_cells or []:
            in_dataset = (part.obs["dataset"] == rule["dataset"]).to_numpy()
            if in_dataset.any():
                dropped |= in_dataset & part.obs[rule["column"]].astype(str).isin(rule["values"]).to_numpy()
        part = part[~dropped].copy()
        part.X = sp.csr_matrix(part.X, dtype=np.float32)
        for prefix in strip_prefixes:
            part = merge_prefixed_genes(part, prefix)
        parts.append(part)
    cells_per_gene = (
        pd.concat([pd.Series(np.asarray((p.X > 0).sum(0)).ravel(), index=p.var_names) for p in parts], axis=1)
        .fillna(0)
        .sum(1)
    )
    genes = cells_per_gene.index[cells_per_gene >= min_cells]
    genes = sorted(genes, key=lambda g: (-cells_per_gene[g], g))
    vocab = GeneVocab(genes)
    aligned = []
    for part in parts:
        datasets = part.obs["dataset"].astype(str).unique()
        present = [g for g in genes if g in part.var_names]
        sub = part[:, present]
        matrix = sp.csr_matrix((part.n_obs, len(genes)), dtype=np.float32)
        position = pd.Index(genes).get_indexer(present)
        matrix = sp.csr_matrix(
            (sub.X.data, position[sub.X.indices], sub.X.indptr), shape=(part.n_obs, len(genes)), dtype=np.float32
        )
        var = pd.DataFrame(index=pd.Index(genes))
        for name in datasets:
            mask = np.zeros(len(genes), dtype=bool)
            mask[position] = part.var[f"measured_in:{name}"].to_numpy(dtype=bool)[part.var_names.get_indexer(present)]
            var[f"measured_in:{name}"] = mask
        obs = part.obs[["dataset", "tissue", "technology"]].astype(str)
        aligned.append(ad.AnnData(matrix, obs=obs, var=var))
    corpus = ad.concat(aligned, join="outer", merge="first")
    for column in [c for c in corpus.var if c.startswith("measured_in:")]:
        corpus.var[column] = corpus.var[column].fillna(False).astype(bool)
    corpus.X = sp.csr_matrix(corpus.X)
    corpus.X.sort_indices()
    return corpus, vocab


def per_cell_normalised(corpus: ad.AnnData) -> sp.csr_matrix:
    """Counts scaled so that every cell sums to 10,000 (an empty cell stays empty)."""
    x = sp.csr_matrix(corpus.X, dtype=np.float32)
    totals = np.asarray(x.sum(1)).ravel()
    return sp.csr_matrix(sp.diags(1e4 / np.maximum(totals, 1)) @ x)


def gene_nonzero_medians(corpus: ad.AnnData, normalised: sp.csr_matrix | None = None) -> pd.Series:
    """Median non-zero value of each gene after per-cell normalisation to 10,000 (1 where a gene is never seen).

    ``normalised``: :func:`per_cell_normalised` of ``corpus``, when the caller already has it.
    """
    csc = (per_cell_normalised(corpus) if normalised is None else normalised).tocsc()
    medians = np.ones(csc.shape[1], dtype=np.float32)
    for column in range(csc.shape[1]):
        values = csc.data[csc.indptr[column] : csc.indptr[column + 1]]
        if values.size:
            medians[column] = np.median(values)
    return pd.Series(medians, index=corpus.var_names)


def scale_by_gene_median(corpus: ad.AnnData) -> ad.AnnData:
    """Geneformer's rank-value input: each cell normalised to 10,000, each gene divided by its non-zero median.

    A cell's ranking then puts first the genes that are high for *that gene*, not the ribosomal and mitochondrial
    genes that top most cells. The medians come from the training cells only and are written to ``uns``.
    """
    normalised = per_cell_normalised(corpus)
    medians = gene_nonzero_medians(corpus, normalised)
    scaled = sp.csr_matrix(normalised @ sp.diags(1.0 / medians.to_numpy()), dtype=np.float32)
    out = ad.AnnData(scaled, obs=corpus.obs, var=corpus.var)
    out.uns["gene_nonzero_median"] = medians.to_dict()
    return out


def top_ranked_vocab(corpus: ad.AnnData, n_top: int, min_cells: int) -> GeneVocab:
    """Genes among the ``n_top`` highest-valued genes of at least ``min_cells`` cells, most frequent first."""
    matrix = corpus.X.tocsr()
    hits = np.zeros(matrix.shape[1], dtype=np.int64)
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        columns = matrix.indices[start:stop]
        order = np.lexsort((columns, -matrix.data[start:stop]))
        hits[columns[order[:n_top]]] += 1
    keep = np.flatnonzero(hits >= min_cells)
    keep = keep[np.lexsort((corpus.var_names[keep], -hits[keep]))]
    return GeneVocab(list(corpus.var_names[keep]))


def spatial_training_cells(spec: dict) -> ad.AnnData:
    """The training part of one spatial file: drop ``holdout_samples`` and the ``holdout_side`` half along x."""
    adata = ad.read_h5ad(spec["path"])
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    keep = np.ones(adata.n_obs, dtype=bool)
    if "holdout_samples" in spec:
        keep &= ~adata.obs["sample"].astype(str).isin([str(s) for s in spec["holdout_samples"]]).to_numpy()
    if spec.get("holdout_side") == "right":
        x = adata.obsm["spatial"][:, 0]
        keep &= x < np.median(x)
    adata = adata[keep].copy()
    if "symbol_mapped" in adata.var:  # Visium: keep genes with a symbol, named by it
        adata = adata[:, adata.var["symbol_mapped"].to_numpy(dtype=bool)].copy()
    adata.var_names = adata.var_names.str.upper()
    adata = adata[:, ~adata.var_names.duplicated()].copy()
    adata.obs["sample"] = spec["name"] + ":" + adata.obs["sample"].astype(str)
    adata.obs["dataset"] = spec["name"]
    return adata


def cellplm_corpus(corpus: ad.AnnData, recipe: dict) -> tuple[ad.AnnData, GeneVocab]:
    """Corpus cells (non-spatial samples = datasets) plus spatial training cells over one vocabulary."""
    data = recipe["data"]
    spatial = [spatial_training_cells(spec) for spec in data.get("spatial", [])]
    detected = np.asarray((corpus.X > 0).sum(0)).ravel()
    order = np.lexsort((np.asarray(corpus.var_names), -detected))
    genes = list(corpus.var_names[order[: data["vocab_size"]]])
    panel = [g for part in spatial for g in part.var_names]
    genes = list(dict.fromkeys(genes + panel))
    vocab = GeneVocab(genes, specials=("<pad>", "<cls>"))
    corpus = corpus[:, [g for g in genes if g in corpus.var_names]].copy()
    corpus.obs["sample"] = corpus.obs["dataset"].astype(str)
    corpus.obsm["spatial"] = np.full((corpus.n_obs, 2), np.nan)
    parts = [corpus]
    for part in spatial:
        name = str(part.obs["dataset"].iloc[0])
        part = part[:, [g for g in part.var_names if g in vocab]].copy()
        part.var = pd.DataFrame({f"measured_in:{name}": np.ones(part.n_vars, dtype=bool)}, index=part.var_names)
        part.obs = part.obs[["dataset", "sample"]].astype(str)
        parts.append(part)
    combined = ad.concat(parts, join="outer", merge="first")
    for column in [c for c in combined.var if c.startswith("measured_in:")]:
        combined.var[column] = combined.var[column].fillna(False).astype(bool)
    combined.X = sp.csr_matrix(combined.X, dtype=np.float32)
    return combined, vocab


class EpochCheckpoint(Callback):
    """Write the checkpoint directory after every epoch so that an interrupted run loses at most one epoch."""

    def __init__(self, model: SCGPT | TGPT | CellPLM, out: Path, card: callable, **save_kwargs) -> None:
        self.model, self.out, self.card, self.save_kwargs = model, out, card, save_kwargs
        self.last_losses: dict[str, float] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        losses = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.last_losses = losses
        print(f"epoch {trainer.current_epoch}: {json.dumps(losses)}", flush=True)
        card = self.card(trainer.current_epoch + 1, losses)
        self.model.save(self.out, overwrite=True, model_card=card, **self.save_kwargs)


class StopAfterEpochs(Callback):
    """End training after ``n_epochs`` while keeping the learning-rate schedule planned for ``max_epochs``."""

    def __init__(self, n_epochs: int) -> None:
        self.n_epochs = n_epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.n_epochs:
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/scgpt_default.yaml")
    parser.add_argument("--out", default="src/scfm/checkpoints/scgpt_default")
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.max_epochs")
    parser.add_argument("--limit-cells", type=int, default=None, help="train on a random subset (smoke runs)")
    args = parser.parse_args()
    recipe = yaml.safe_load(Path(args.config).read_text())
    start = time.time()
    corpus, vocab = load_corpus(
        recipe["data"]["corpora"],
        recipe["data"]["exclude_datasets"],
        recipe["data"]["vocab_min_cells"],
        tuple(recipe["data"].get("strip_gene_prefixes", ())),
        recipe["data"].get("exclude_cells"),
    )
    if args.limit_cells:
        keep = np.random.default_rng(0).choice(corpus.n_obs, args.limit_cells, replace=False)
        corpus = corpus[np.sort(keep)].copy()
    family = recipe.get("family", "scgpt")
    if recipe["data"].get("gene_scaling") == "corpus_median":
        if family != "tgpt":
            raise ValueError("data.gene_scaling applies to tgpt recipes (rank tokenisation) only")
        corpus = scale_by_gene_median(corpus)
    if family == "tgpt":
        vocab = top_ranked_vocab(corpus, recipe["model"]["max_len"] - 1, recipe["data"]["vocab_min_top_cells"])
        if recipe["train"].get("contrastive_views") != "neighbours":  # the neighbour teacher reads every gene
            corpus = corpus[:, [g for g in vocab.genes if g in corpus.var_names]].copy()
    setup = {}
    if family == "cellplm":
        corpus, vocab = cellplm_corpus(corpus, recipe)
        setup = {"sample_key": "sample", "batch_key": "dataset", "spatial_key": "spatial"}
    print(f"corpus {corpus.n_obs} cells x {corpus.n_vars} genes, vocabulary {len(vocab)}", flush=True)
    model_class = {"scgpt": SCGPT, "tgpt": TGPT, "cellplm": CellPLM}[family]
    model_class.setup_anndata(corpus, **setup)
    model = model_class(corpus, vocab=vocab, **recipe["model"])
    train = dict(recipe["train"])
    if args.max_epochs is not None:
        train["max_epochs"] = args.max_epochs
    datasets = corpus.obs["dataset"].value_counts()

    def card(epochs_done: int, losses: dict) -> str:
        n_params = sum(p.numel() for p in model.module.parameters())
        title = {"scgpt": "SCGPT", "tgpt": "TGPT", "cellplm": "CellPLM"}[family]
        usage = "`scfm.tl.embed(adata)`" if family == "scgpt" else f'`scfm.tl.embed(adata, model="{family}")`'
        held_out = (
            recipe["data"]["exclude_datasets"]
            + [
                f"{rule['dataset']} cells with {rule['column']} in {rule['values']}"
                for rule in recipe["data"].get("exclude_cells", [])
            ]
            + [
                f"{spec['name']} ({', '.join(f'{k}={v}' for k, v in spec.items() if k.startswith('holdout'))})"
                for spec in recipe["data"].get("spatial", [])
            ]
        )
        return (
            f"# scfm default {title} checkpoint (`{Path(args.out).name}`)\n\n"
            f"A small {family} model trained from scratch by scfm on CPU; it is bundled so that\n"
            f"{usage} works offline. It is not a published checkpoint of the original authors.\n\n"
            f"- parameters: {n_params:,}; vocabulary: {len(vocab)} tokens ({len(vocab.genes)} gene symbols)\n"
            f"- architecture: {recipe['model']}; inference settings: {recipe.get('export', {})}\n"
            f"- training: {train}\n"
            + (f"- stopped after {stop_after} epochs of a {train['max_epochs']}-epoch schedule\n" if stop_after else "")
            + f"- epochs completed: {epochs_done}; "
            f"wall time so far: {(time.time() - start) / 60:.1f} min (2 CPU cores)\n"
            f"- final epoch losses: {json.dumps({k: round(v, 4) for k, v in losses.items()})}\n"
            f"- data: {corpus.n_obs} cells from {len(datasets)} datasets "
            f"({', '.join(f'{k} {v}' for k, v in datasets.items())});\n"
            f"  held out: {', '.join(held_out)}\n"
            f"- recipe: `{args.config}`, command: "
            f"`python scripts/pretrain_default.py --config {args.config} --out {args.out}`\n"
        )

    out = Path(args.out)
    save_kwargs = recipe.get("save", {})
    callback = EpochCheckpoint(model, out, card, **save_kwargs)
    if family == "scgpt":
        train["measured_key"] = "dataset"
    callbacks = [callback]
    stop_after = train.pop("stop_after_epochs", None)
    if stop_after is not None:
        callbacks.append(StopAfterEpochs(stop_after))
    epochs_done = stop_after or train["max_epochs"]
    model.train(callbacks=callbacks, enable_progress_bar=False, **train)
    for key, value in recipe.get("export", {}).items():
        setattr(model.config, key, value)
    model.save(out, overwrite=True, model_card=card(epochs_done, callback.last_losses), **save_kwargs)
    if "gene_nonzero_median" in corpus.uns:  # inference must divide by the same medians (saving replaces the folder)
        (out / "gene_nonzero_median.json").write_text(json.dumps(corpus.uns["gene_nonzero_median"]))
    print(f"done in {(time.time() - start) / 60:.1f} min -> {out} (export settings {recipe.get('export', {})})")


if __name__ == "__main__":
    main()

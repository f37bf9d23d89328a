"""scMulan beside its baselines, measured in one run: zero-shot annotation, conditional generation, embeddings.

Usage::

    python benchmarks/scmulan.py [--sections annotation generation embedding] [--model scmulan]
        [--data ../shared/data] [--n-generate 200] [--threads N] [--quick] [--json results.json]

Data: :func:`scfm.bench._scmulan_data.scmulan_corpus`, i.e. the training cells of the bundled model (both
pretraining corpora, with the sorted-PBMC and pancreas labels attached; ``cell_type`` "unknown" = no label) and
its held-out labelled sets: ``pbmc_sorted`` (30% of each FACS-sorted PBMC population), ``extra_labelled`` (20% of
each labelled cell type of the extra corpus: PDAC cell types and four cell lines) and ``pancreas_xin`` (the Xin
2016 study, never seen; expected counts, not integers). Query cells that express none of the scMulan genes are
left out for every method (the count is printed).

1. Zero-shot annotation (``annotation``) of each held-out set. Every method answers with the cell types of the
   labelled training cells (all of them, whatever the query holds):

   - scMulan: ``scfm.tl.annotate(query, model=..., metadata_key="cell_type")``, the term generated after the
     cell's genes among all cell_type terms; no reference;
   - SCGPT kNN: 15-NN majority vote (cosine) on the bundled SCGPT embedding (``scfm.tl.embed``); the reference is
     the labelled training cells, embedded once (those seconds are printed apart);
   - logistic regression (:func:`scfm.bench.logistic_regression`) on log-normalised expression of the 2,000 most
     variable reference genes that the query has; same reference.

   Scores: accuracy, macro-F1 over the query's classes (:func:`scfm.bench.annotation`), the fraction of cells
   given a type that the query does not hold, seconds, and the differences of scMulan to each baseline. Also
   scMulan's tissue and technology accuracy on the cells whose true term is a model term (else the term it
   answers most).
2. Generation (``generation``). Each condition is a cell type, prompted together with the tissue and technology of
   its target cells when each is a single model term (``--cell-type-only``: the cell type alone). The target is
   the held-out cells of the type when they come from a study that also has training cells of the type; else
   (beta cells: the held-out ones are the unseen Xin study) a random half of the training cells of the type, the
   other half being the "training cells" below (the model was trained on both halves).
   ``n = min(--n-generate, target cells, training cells)`` cells of ``scfm.tl.generate(model, n, conditions,
   seed=0)`` are compared with the target. Baselines in the same run:

   - real vs real: ``n`` training cells of the condition (the floor);
   - independent genes: every gene drawn on its own from its values in the condition's training cells (right
     marginals, no gene-gene structure; the C2ST should see through it);
   - unconditional: ``scfm.tl.generate`` without conditions (does the prompt matter?).

   Scores, over the model's genes detected in the condition's real cells: Pearson r of per-gene means and of
   per-gene variances with the target; C2ST, the 5-fold CV ROC AUC of standardise -> PCA 50 -> logistic
   regression telling the set from the target (0.5: indistinguishable); genes per cell; and the fraction of
   cells that a logistic regression trained on the labelled training cells of all types, in the same space
   (:func:`scfm.bench.logistic_regression`), assigns to the requested type. Two spaces: ``log1p``
   (``normalize_total`` to 1e4 over all of a real cell's genes, ``log1p``) and ``c-sentence`` (real cells
   reduced to what scMulan reads and writes: their top ``max_gene_words`` model genes, each at its level's
   value). A generated cell is a c-sentence, so ``log1p`` mixes the sentence's truncation into the score and
   ``c-sentence`` measures the model alone. Off-panel: mean fraction of a generated cell's genes that are never
   detected in the condition's real cells (left out of the scores).
3. Embeddings (``embedding``): scib-metrics (unscaled) and 15-NN accuracy of the scMulan embedding
   (``scfm.tl.embed(model=scmulan)``), the bundled SCGPT and HVG+PCA, with embedding seconds, on the pancreas
   integration set (batch, cell_type; batches 1 and 4 are scMulan training cells, with their labels, batch 5 is
   held out) and on the held-out sorted PBMC cells (one batch: bio conservation only).

``--quick`` caps every set (reference 10 cells per type, queries 80 cells, 16 generated cells per condition)
for a smoke run.
"""

from __future__ import annotations

import os

# Idle OpenMP workers (torch's, and numba's once scanpy has normalised) otherwise spin and starve generation's many
# small torch calls: 16 cells took 50 s instead of 1 s on a busy 2-core machine. Set before OpenMP is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from _report import table

import scfm
from scfm.bench import annotation, hvg_pca, integration, knn_accuracy, log_normalised, logistic_regression
from scfm.bench._runners import tidy_scib_table
from scfm.bench._scmulan_data import scmulan_corpus
from scfm.data import expressed_gene_counts, expression_source
from scfm.genes import align_genes
from scfm.models import Pretrained, load_pretrained
from scfm.models.base import CheckpointError
from scfm.models.scmulan import cell_gene_words
from scfm.tokenize import detect_input_kind

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SECTIONS = ("annotation", "generation", "embedding")
GENERATION_TYPES = ("NK cell", "B cell", "monocyte", "K562", "HEK293", "beta cell")
SCGPT = "scgpt"
UNKNOWN = "unknown"


def subsample(adata: ad.AnnData, n: int | None, rng: np.random.Generator) -> ad.AnnData:
    if n is None or adata.n_obs <= n:
        return adata
    return adata[np.sort(rng.choice(adata.n_obs, n, replace=False))].copy()


def cap_per_label(adata: ad.AnnData, key: str, n: int | None, rng: np.random.Generator) -> ad.AnnData:
    """At most ``n`` random cells of each ``obs[key]`` value (all cells when ``n`` is ``None``)."""
    if n is None:
        return adata
    values = adata.obs[key].to_numpy()
    keep = [rng.permutation(np.flatnonzero(values == v))[:n] for v in np.unique(values)]
    return adata[np.sort(np.concatenate(keep))].copy()


def with_known_genes(adata: ad.AnnData, pretrained: Pretrained) -> tuple[ad.AnnData, int]:
    """The cells that express at least one scMulan gene (scMulan cannot prompt the others), and how many were not."""
    alignment = align_genes(adata.var, pretrained.vocab, min_genes=1)
    keep = expressed_gene_counts(sp.csr_matrix(adata.X), alignment.column_token_ids()) > 0
    return (adata if keep.all() else adata[keep].copy()), int((~keep).sum())


# -- 1. zero-shot annotation ---------------------------------------------------------------------------------------
def annotation_section(train: ad.AnnData, held: dict, pretrained: Pretrained, opts) -> dict[str, list[dict]]:
    rng = np.random.default_rng(opts.seed)
    reference = train[train.obs["cell_type"] != UNKNOWN].copy()
    reference = cap_per_label(reference, "cell_type", opts.reference_per_type, rng)
    start = time.perf_counter()
    scfm.tl.embed(reference, SCGPT, key_added="X_scgpt", progress=False)
    reference_seconds = time.perf_counter() - start
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(15, reference.n_obs), metric="cosine")
    knn.fit(reference.obsm["X_scgpt"], reference.obs["cell_type"].to_numpy())
    n_types = reference.obs["cell_type"].nunique()
    print(
        f"\n## Zero-shot annotation: reference = {reference.n_obs} labelled training cells, {n_types} cell types "
        f"(the label space of every method); SCGPT reference embedding {reference_seconds:.1f} s (once, not in the "
        "kNN seconds below)"
    )
    rows, per_class, metadata, differences = [], [], [], []
    terms = pretrained.module.config.metadata_terms
    for name, query in held.items():
        query, dropped = with_known_genes(subsample(query, opts.max_query, rng).copy(), pretrained)
        seconds = {}
        start = time.perf_counter()
        scfm.tl.annotate(query, model=pretrained, metadata_key="cell_type", key_added="scmulan", progress=False)
        seconds["scMulan"] = time.perf_counter() - start
        start = time.perf_counter()
        scfm.tl.embed(query, SCGPT, key_added="X_scgpt", progress=False)
        query.obs["knn"] = knn.predict(query.obsm["X_scgpt"])
        seconds["SCGPT kNN"] = time.perf_counter() - start
        start = time.perf_counter()
        logistic_regression(query, reference, "cell_type", key_added="logreg", seed=opts.seed)
        seconds["logistic regression"] = time.perf_counter() - start
        scores = annotation(
            query, "cell_type", {"scMulan": "scmulan", "SCGPT kNN": "knn", "logistic regression": "logreg"}
        )
        value = scores.set_index(["method", "metric"])["value"]
        print(
            f"- {name}: {query.n_obs} cells ({dropped} without scMulan genes left out), "
            f"{query.obs['cell_type'].nunique()} cell types"
        )
        for method, spent in seconds.items():
            rows.append(
                {
                    "dataset": name,
                    "method": method,
                    "cells": query.n_obs,
                    "accuracy": value[method, "accuracy"],
                    "macro_f1": value[method, "macro_f1"],
                    "outside_query_types": value[method, "unassigned_fraction"],
                    "seconds": spent,
                    "seconds_vs_scMulan": spent / seconds["scMulan"],
                }
            )
        for baseline in ("SCGPT kNN", "logistic regression"):
            differences.append(
                {
                    "dataset": name,
                    "baseline": baseline,
                    "accuracy: scMulan - baseline": value["scMulan", "accuracy"] - value[baseline, "accuracy"],
                    "macro_f1: scMulan - baseline": value["scMulan", "macro_f1"] - value[baseline, "macro_f1"],
                }
            )
        f1 = scores[scores.metric.str.startswith("f1[")]
        for label, group in f1.groupby("metric", sort=True):
            per_class.append(
                {
                    "dataset": name,
                    "cell type": label[3:-1],
                    "cells": int((query.obs["cell_type"] == label[3:-1]).sum()),
                    **group.set_index("method")["value"].to_dict(),
                }
            )
        for key in ("tissue", "technology"):
            scfm.tl.annotate(query, model=pretrained, metadata_key=key, key_added=f"scmulan_{key}", progress=False)
            truth = query.obs[key].astype(str).to_numpy()
            predicted = query.obs[f"scmulan_{key}"].astype(str).to_numpy()
            known = np.isin(truth, terms.get(key, []))
            answers = pd.Series(predicted).value_counts()
            metadata.append(
                {
                    "dataset": name,
                    "key": key,
                    "true terms": ", ".join(sorted(set(truth))),
                    "cells with a model term": int(known.sum()),
                    "accuracy": float((predicted[known] == truth[known]).mean()) if known.any() else None,
                    "most answered": f"{answers.index[0]} ({answers.iloc[0] / len(predicted):.0%})",
                }
            )
    print("\n### Accuracy and macro-F1 (macro over the query's cell types)\n")
    print(table(rows, list(rows[0])))
    print("\n### scMulan minus each baseline\n")
    print(table(differences, list(differences[0])))
    print("\n### Per-class F1\n")
    print(table(per_class, ["dataset", "cell type", "cells", "scMulan", "SCGPT kNN", "logistic regression"]))
    print("\n### scMulan tissue and technology prediction (accuracy where the true term is a model term)\n")
    print(table(metadata, list(metadata[0])))
    return {
        "annotation": rows,
        "annotation_differences": differences,
        "annotation_per_class": per_class,
        "annotation_metadata": metadata,
        "annotation_reference": [{"cells": reference.n_obs, "cell_types": n_types, "seconds": reference_seconds}],
    }


# -- 2. generation -------------------------------------------------------------------------------------------------
def log1p_space(adata: ad.AnnData, genes: list[str]) -> np.ndarray:
    """``log1p(normalize_total(1e4))`` over all of a cell's genes, as dense columns ``genes`` (0 where absent)."""
    work = log_normalised(adata)
    index = pd.Index(work.var_names).get_indexer(genes)
    out = np.zeros((work.n_obs, len(genes)), dtype=np.float32)
    present = index >= 0
    out[:, present] = work.X[:, index[present]].toarray()
    return out


def sentence_space(adata: ad.AnnData, pretrained: Pretrained) -> np.ndarray:
    """Each cell as scMulan reads it: its top ``max_gene_words`` model genes at the ``log1p`` value of their level
    (the values ``scfm.tl.generate`` writes), as dense columns in the order of the model's genes."""
    config = pretrained.module.config
    vocab = pretrained.vocab
    source = expression_source(adata)
    matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
    alignment = align_genes(source.var, vocab, min_genes=1)
    words = cell_gene_words(
        matrix,
        alignment.column_token_ids(),
        scheme=config.level_scheme,
        input_kind=detect_input_kind(matrix.data),
        max_genes=config.max_gene_words,
        seed=config.tokenizer_seed,
    )
    column_of = np.full(len(vocab), -1, dtype=np.int64)
    column_of[vocab.lookup(vocab.genes)] = np.arange(len(vocab.genes))
    level_values = np.asarray(config.level_values or config.level_scheme.midpoints(), dtype=np.float32)
    out = np.zeros((adata.n_obs, len(vocab.genes)), dtype=np.float32)
    for row, (gene_ids, levels, _) in enumerate(words):
        out[row, column_of[gene_ids]] = level_values[levels - 1]
    return out


def independent_genes(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` cells whose every gene is drawn on its own from that gene's values in ``pool`` (cells x genes)."""
    rows = rng.integers(0, pool.shape[0], size=(n, pool.shape[1]))
    return pool[rows, np.arange(pool.shape[1])]


def c2st_auc(cells: np.ndarray, target: np.ndarray, seed: int) -> float:
    """5-fold CV ROC AUC of standardise -> PCA (at most 50) -> logistic regression telling ``cells`` from
    ``target`` (0.5: indistinguishable; the PCA is fitted within each training fold)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = np.vstack([cells, target])
    labels = np.r_[np.zeros(len(cells)), np.ones(len(target))]
    n_components = min(50, data.shape[1], int(len(data) * 0.8) - 1)
    classifier = make_pipeline(
        StandardScaler(), PCA(n_components, random_state=seed), LogisticRegression(max_iter=2000)
    )
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, data, labels, cv=folds, scoring="roc_auc").mean())


def similarity(cells: np.ndarray, target: np.ndarray, seed: int) -> dict[str, float]:
    """Pearson r of per-gene means and variances, C2ST AUC, genes per cell (columns: the genes scored)."""
    return {
        "mean_r": float(np.corrcoef(cells.mean(0), target.mean(0))[0, 1]),
        "var_r": float(np.corrcoef(cells.var(0), target.var(0))[0, 1]),
        "c2st_auc": c2st_auc(cells, target, seed),
        "genes_per_cell": float((cells > 0).sum(1).mean()),
    }


def condition_of(cell_type: str, train: ad.AnnData, held: dict, terms: dict, opts, rng: np.random.Generator):
    """``(conditions, target cells, target source, training cells)`` of a cell type, or ``None``.

    The target is the cell type's held-out cells when they come from a study that also has training cells of that
    type; otherwise (another study, or none held out) it is a random half of the training cells, the other half
    being the training cells of the baselines. The prompt adds the target's tissue and technology when each is a
    single model term (not with ``--cell-type-only``)."""
    if cell_type not in terms.get("cell_type", []):
        print(f"- {cell_type!r} is not a cell_type term of the model; skipped")
        return None
    pool = train[train.obs["cell_type"] == cell_type]
    target = next(
        (q[q.obs["cell_type"] == cell_type] for q in held.values() if cell_type in set(q.obs["cell_type"])), None
    )
    if target is not None and set(target.obs["dataset"]) & set(pool.obs["dataset"]):
        source = "held-out"
    else:
        source = "training half (held-out: none)" if target is None else "training half (held-out: another study)"
        half = np.zeros(pool.n_obs, dtype=bool)
        half[rng.choice(pool.n_obs, pool.n_obs // 2, replace=False)] = True
        target, pool = pool[half], pool[~half]
    conditions = {"cell_type": cell_type}
    if not opts.cell_type_only:
        for key in ("tissue", "technology"):
            values = target.obs[key].unique()
            if len(values) == 1 and values[0] in terms.get(key, []):
                conditions[key] = str(values[0])
    mask = np.logical_and.reduce([pool.obs[key].to_numpy() == term for key, term in conditions.items()])
    return conditions, target.copy(), source, pool[mask].copy()


def generation_section(train: ad.AnnData, held: dict, pretrained: Pretrained, opts) -> dict[str, list[dict]]:
    rng = np.random.default_rng(opts.seed)
    terms = pretrained.module.config.metadata_terms
    genes = list(pretrained.vocab.genes)
    print(f"\n## Generation: {len(genes)} model genes; the target of each condition is in the 'target' column")
    found = {}
    for cell_type in GENERATION_TYPES:
        chosen = condition_of(cell_type, train, held, terms, opts, rng)
        if chosen is not None:
            found[cell_type] = chosen
    sizes = {t: min(opts.n_generate, c[1].n_obs, c[3].n_obs) for t, c in found.items()}
    start = time.perf_counter()
    unconditional = scfm.tl.generate(pretrained, max(sizes.values()), None, seed=opts.seed)
    unconditional_seconds = time.perf_counter() - start
    unconditional_log = np.log1p(unconditional.X.toarray())

    spaces = ("log1p", "c-sentence")
    sets: dict[tuple[str, str, str], np.ndarray] = {}  # (cell type, space, method) -> cells x model genes
    panels, seconds, off_panel, described = {}, {}, {}, []
    for cell_type, (conditions, target, source, pool) in found.items():
        n = sizes[cell_type]
        start = time.perf_counter()
        generated = scfm.tl.generate(pretrained, n, conditions, seed=opts.seed)
        seconds[cell_type] = time.perf_counter() - start
        target = subsample(target, n, rng) if opts.quick else target
        real = {
            "log1p": (log1p_space(target, genes), log1p_space(pool, genes)),
            "c-sentence": (sentence_space(target, pretrained), sentence_space(pool, pretrained)),
        }
        panel = (real["log1p"][0] > 0).any(0) | (real["log1p"][1] > 0).any(0)
        panels[cell_type] = panel
        generated_log = np.log1p(generated.X.toarray())
        expressed = generated_log > 0
        off_panel[cell_type] = float((expressed[:, ~panel].sum(1) / np.maximum(expressed.sum(1), 1)).mean())
        floor_rows = rng.choice(pool.n_obs, n, replace=False)
        independent_seed = int(rng.integers(1 << 31))  # the same draws in both spaces
        for space in spaces:
            held_cells, pool_cells = real[space]
            sets[cell_type, space, "target"] = held_cells
            sets[cell_type, space, "scMulan"] = generated_log
            sets[cell_type, space, "real vs real"] = pool_cells[floor_rows]
            sets[cell_type, space, "independent genes"] = independent_genes(
                pool_cells, n, np.random.default_rng(independent_seed)
            )
            sets[cell_type, space, "unconditional"] = unconditional_log[:n]
        described.append(
            {
                "condition": cell_type,
                "prompt": "; ".join(f"{k}={v}" for k, v in conditions.items()),
                "target": f"{target.n_obs} {source}",
                "training cells": pool.n_obs,
                "n": n,
                "genes scored": int(panel.sum()),
                "generate seconds": seconds[cell_type],
            }
        )
    print(table(described, list(described[0])))
    print(f"Unconditional generation: {unconditional.n_obs} cells in {unconditional_seconds:.1f} s")

    assigned = assignment_fractions(train, pretrained, sets, opts)
    rows = []
    methods = ("scMulan", "real vs real", "independent genes", "unconditional")
    for (cell_type, space, method), cells in sets.items():
        if method == "target":
            continue
        panel = panels[cell_type]
        scores = similarity(cells[:, panel], sets[cell_type, space, "target"][:, panel], opts.seed)
        rows.append(
            {
                "condition": cell_type,
                "space": space,
                "method": method,
                "n": len(cells),
                **scores,
                "assigned_to_type": assigned[cell_type, space, method],
                "off_panel": off_panel[cell_type] if method == "scMulan" else None,
                "seconds": seconds[cell_type] if method == "scMulan" else None,
            }
        )
    rows.sort(key=lambda r: (r["space"], list(found).index(r["condition"]), methods.index(r["method"])))
    summary = []
    for space in spaces:
        print(f"\n### Each set vs the target real cells, {space} space\n")
        in_space = [r for r in rows if r["space"] == space]
        print(table(in_space, [c for c in in_space[0] if c != "space"]))
        for cell_type in found:
            by = {r["method"]: r for r in in_space if r["condition"] == cell_type}
            summary.append(
                {
                    "space": space,
                    "condition": cell_type,
                    "C2ST - floor": by["scMulan"]["c2st_auc"] - by["real vs real"]["c2st_auc"],
                    "indep C2ST - floor": by["independent genes"]["c2st_auc"] - by["real vs real"]["c2st_auc"],
                    "mean_r - uncond": by["scMulan"]["mean_r"] - by["unconditional"]["mean_r"],
                    "assigned: scMulan": by["scMulan"]["assigned_to_type"],
                    "assigned: uncond": by["unconditional"]["assigned_to_type"],
                    "assigned: target": assigned[cell_type, space, "target"],
                }
            )
    print("\n### Differences: scMulan and independent genes vs the real floor, scMulan vs unconditional\n")
    print(table(summary, list(summary[0])))
    return {"generation": rows, "generation_summary": summary, "generation_conditions": described}


def assignment_fractions(train: ad.AnnData, pretrained: Pretrained, sets: dict, opts) -> dict:
    """Per set, the fraction of cells that a logistic regression trained on the labelled training cells (in the same
    space, all cell types) assigns to the condition's cell type. One fit per space."""
    rng = np.random.default_rng(opts.seed)
    genes = list(pretrained.vocab.genes)
    labelled = train[train.obs["cell_type"] != UNKNOWN]
    labelled = cap_per_label(labelled, "cell_type", opts.reference_per_type, rng)
    references = {"log1p": log1p_space(labelled, genes), "c-sentence": sentence_space(labelled, pretrained)}
    out = {}
    for space, reference_cells in references.items():
        reference = ad.AnnData(
            sp.csr_matrix(reference_cells), obs=labelled.obs[["cell_type"]].copy(), var=pd.DataFrame(index=genes)
        )
        keys = [key for key in sets if key[1] == space]
        query = ad.AnnData(sp.csr_matrix(np.vstack([sets[key] for key in keys])), var=pd.DataFrame(index=genes))
        query.obs_names = [f"cell{i}" for i in range(query.n_obs)]
        logistic_regression(query, reference, "cell_type", key_added="predicted", seed=opts.seed)
        predicted = query.obs["predicted"].astype(str).to_numpy()
        start = 0
        for key in keys:
            stop = start + len(sets[key])
            out[key] = float((predicted[start:stop] == key[0]).mean())
            start = stop
    return out


# -- 3. embeddings -------------------------------------------------------------------------------------------------
def embed_all(adata: ad.AnnData, pretrained: Pretrained) -> dict[str, float]:
    seconds = {}
    for label, model in (("scMulan", pretrained), ("SCGPT", SCGPT)):
        start = time.perf_counter()
        scfm.tl.embed(adata, model, key_added=f"X_{label}", progress=False)
        seconds[label] = time.perf_counter() - start
    return seconds


def bio_conservation(adata: ad.AnnData, keys: dict[str, str], label_key: str) -> pd.DataFrame:
    """scib-metrics' bio-conservation metrics alone (one batch: no batch correction to score), tidy."""
    from scib_metrics.benchmark import Benchmarker

    work = ad.AnnData(obs=pd.DataFrame({"batch": "one", label_key: adata.obs[label_key].astype(str)}))
    work.obs_names = adata.obs_names
    for key in keys.values():
        work.obsm[key] = np.asarray(adata.obsm[key], dtype=np.float32)
    benchmarker = Benchmarker(
        work,
        batch_key="batch",
        label_key=label_key,
        embedding_obsm_keys=list(keys.values()),
        batch_correction_metrics=None,
        pre_integrated_embedding_obsm_key=keys["hvg_pca"],
        progress_bar=False,
    )
    benchmarker.benchmark()
    return tidy_scib_table(benchmarker.get_results(min_max_scale=False), {v: k for k, v in keys.items()}, {})


def embedding_section(data: Path, held: dict, pretrained: Pretrained, opts) -> dict[str, list[dict]]:
    rng = np.random.default_rng(opts.seed)
    pancreas = ad.read_h5ad(data / "integration" / "pancreas_3batches_cepo_small.h5ad")
    pancreas.X = sp.csr_matrix(pancreas.X, dtype=np.float32)
    pancreas = subsample(pancreas, opts.max_query and 2 * opts.max_query, rng)
    pbmc = subsample(held["pbmc_sorted"], opts.max_query and 2 * opts.max_query, rng)
    embeddings = {"scMulan": "X_scMulan", "SCGPT": "X_SCGPT"}
    rows = []
    for name, adata in (("pancreas (3 studies)", pancreas), ("held-out sorted PBMC", pbmc)):
        adata, dropped = with_known_genes(adata, pretrained)
        seconds = embed_all(adata, pretrained)
        if name.startswith("pancreas"):
            scores = integration(
                adata, "batch", "cell_type", methods=("hvg_pca",), embeddings=embeddings, seed=opts.seed
            )
            seconds |= scores[scores.metric_type == "Time"].set_index("method")["value"].to_dict()
        else:
            start = time.perf_counter()
            hvg_pca(adata, seed=opts.seed)
            seconds["hvg_pca"] = time.perf_counter() - start
            scores = bio_conservation(adata, {**embeddings, "hvg_pca": "X_hvg_pca"}, "cell_type")
        wide = scores[scores.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
        keys = {**embeddings, "hvg_pca": "X_hvg_pca"}
        print(
            f"\n## Embeddings, {name}: {adata.n_obs} cells ({dropped} without scMulan genes left out), "
            f"{adata.obs['cell_type'].nunique()} cell types"
        )
        for method, row in wide.iterrows():
            rows.append(
                {
                    "dataset": name,
                    "method": method,
                    "Bio": row["Bio conservation"],
                    "Batch": row.get("Batch correction"),
                    "Total": row.get("Total"),
                    "15-NN accuracy": knn_accuracy(adata, keys[method], "cell_type"),
                    "seconds": seconds[method],
                    "seconds_vs_SCGPT": seconds[method] / seconds["SCGPT"],
                    **{k: v for k, v in row.items() if k not in ("Bio conservation", "Batch correction", "Total")},
                }
            )
    print("\n### scib-metrics (unscaled) and 15-NN accuracy (5-fold); PBMC: one batch, bio conservation only\n")
    head = ["dataset", "method", "Bio", "Batch", "Total", "15-NN accuracy", "seconds", "seconds_vs_SCGPT"]
    print(table(rows, head))
    print()
    metric_columns = list(dict.fromkeys(c for r in rows for c in r if c not in head))
    print(table(rows, ["dataset", "method", *metric_columns]))
    return {"embedding": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--model", default="scmulan", help="scMulan checkpoint (default: the bundled one)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    parser.add_argument("--n-generate", type=int, default=200, help="most cells generated per condition")
    parser.add_argument("--cell-type-only", action="store_true", help="prompt generation with the cell type alone")
    parser.add_argument("--reference-per-type", type=int, default=None, help="cap labelled training cells per type")
    parser.add_argument("--max-query", type=int, default=None, help="cap the cells of each held-out set")
    parser.add_argument("--quick", action="store_true", help="smoke run: --reference-per-type 10 --max-query 80 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    opts = parser.parse_args()
    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.quick:
        opts.reference_per_type = opts.reference_per_type or 10
        opts.max_query = opts.max_query or 80
        opts.n_generate = min(opts.n_generate, 16)
    if not opts.data.exists():
        sys.exit(f"{opts.data} not found: this benchmark needs the shared data (../shared/data, or pass --data)")
    try:
        pretrained = load_pretrained(opts.model, family="scmulan")
    except (CheckpointError, FileNotFoundError) as err:
        sys.exit(f"cannot load the scMulan checkpoint {opts.model!r}: {err}")
    config = pretrained.module.config
    print(
        f"# scMulan benchmark: model {pretrained.name} ({pretrained.path}), {config.n_layers} layers, d_model "
        f"{config.d_model}, {len(pretrained.vocab.genes)} genes, terms "
        f"{ {k: len(v) for k, v in config.metadata_terms.items()} }; torch {torch.get_num_threads()} threads, CPU, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}" + ("; --quick" if opts.quick else "")
    )
    start = time.perf_counter()
    train, held = scmulan_corpus(opts.data, seed=opts.seed)
    print(
        f"Corpus: {train.n_obs} training cells, held out {', '.join(f'{k} {v.n_obs}' for k, v in held.items())} "
        f"(read in {time.perf_counter() - start:.0f} s)"
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    out: dict[str, list[dict]] = {
        "settings": [{**settings, "threads": torch.get_num_threads(), "checkpoint": pretrained.path}]
    }
    if "annotation" in opts.sections:
        out |= annotation_section(train, held, pretrained, opts)
    if "generation" in opts.sections:
        out |= generation_section(train, held, pretrained, opts)
    if "embedding" in opts.sections:
        out |= embedding_section(opts.data, held, pretrained, opts)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()

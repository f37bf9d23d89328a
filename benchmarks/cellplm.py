"""CellPLM beside its baselines, measured in one run: embedding speed, denoising, spatial imputation, embeddings.

Usage::

    python benchmarks/cellplm.py [--tasks speed denoise spatial embedding] [--cellplm DIR] [--json results.json]

Every task reads ``../shared/data`` and prints a table whose baselines were measured in the same run. All torch
work runs with ``--threads`` threads (default 2) on ``--device`` (default ``cpu``; the reference CellPLM pipeline
runs on CPU only).

1. ``speed``: embedding cells/s, each run in a fresh process (peak RSS of that process, ``VmHWM``; the time
   covers ``scfm.tl.embed`` from the checkpoint directory on disk, model loading included and shown apart, or
   the reference's ``CellEmbeddingPipeline.predict`` after its pipeline is built).
   (a) scfm vs the reference CellPLM package on the same random weights: ``benchmarks/peers/cellplm_reference.py
   build --shape paper`` (4 Flowformer layers of width 1024, latent 512, the released ``groupnorm``) over the
   ``--speed-genes`` genes detected in most corpus cells, converted with ``write_converted_cellplm``; the
   reference runs its ``embed`` subcommand with its default batch handling (each ``obs["batch"]`` sample is one
   sentence, eval-mode Gumbel noise on), scfm runs ``tl.embed(model=converted_dir, sample_key="batch")`` with
   its default context (512 cells per sentence); median of ``--repeats`` alternating runs per side. Cells:
   2,000 random cells of ``integration/pbmc_10x_3chemistries.h5ad`` (3 chemistries = 3 samples) and 10,000
   random cells of ``pretraining/human_raw_counts_corpus.h5ad`` (13 datasets = samples; the PBMC file has only
   2,860 cells).
   Needs the peer environment (``bash benchmarks/peers/setup_cellplm_env.sh``); skipped with a note without it.
   (b) the bundled CellPLM vs the bundled SCGPT (``model=None``) and tGPT (``model="tgpt"``) on the same 2,000
   PBMC cells.
2. ``denoise``: held-out counts by binomial thinning (seeded): each count is split into a visible 90% and a
   held-out 10% (independent parts for Poisson counts); every method sees only the visible part and predicts
   the held-out one, scaled by 0.1/0.9. ``tl.denoise`` expected counts vs the visible counts themselves, a
   kNN-smoothing baseline (mean of the library-normalised visible counts of the cell and its 14 nearest
   neighbours in a PCA of the visible data, rescaled to the cell's visible library) and per-gene mean
   imputation (the batch's mean normalised profile times the cell's visible library). Cells held out from
   pretraining: pancreas batches 1 (Baron inDrop) and 4 (Segerstolpe Smart-seq2), integer counts, in sentences
   per batch; Visium DLPFC section 151673 (500-gene file, the 341 genes with symbols), with coordinates. Scores
   over the genes the model knows: Pearson of log1p(prediction) vs log1p(held-out counts) per gene (mean over
   genes) and over all entries, and the MSE of log1p.
3. ``spatial``: gene imputation on the spatial cells held out from pretraining (the right half, x >= median, of
   osmFISH and MERFISH; Visium section 151673 of the 4-section file, its genes with symbols). The panel's genes
   are split into folds of 10% (at least 2 genes; every gene is held out once); each fold's genes are removed
   and predicted by ``tl.impute(genes=held_out)`` from the rest, with ``spatial_key="spatial"``, with the
   coordinates shuffled among the cells (the spatial-encoding control), and with ``spatial_key=None``; beside a
   kNN baseline (15 nearest training cells, i.e. the pretraining side: left half / the other three sections, in
   a PCA of the log-normalised visible genes; their held-out/visible count ratios averaged and times the cell's
   visible library) and mean imputation (the training cells' mean ratio times the cell's visible library).
   Scores as in ``denoise``, per dataset.
4. ``embedding``: zero-shot quality. scib-metrics (unscaled) and 15-NN accuracy on the pancreas set (batch,
   cell_type) and 5-fold 15-NN accuracy of ``bulk_labels`` on ``sc.datasets.pbmc68k_reduced()`` (``adata.raw``),
   for the bundled CellPLM, the same config with random weights (seeds 0-2) and HVG+PCA; on the held-out
   osmFISH half (valid cells scored, all cells of the half embedded), 15-NN accuracy of ``cell_type`` and
   ``region`` with and without ``spatial_key`` (and with shuffled coordinates), beside HVG+PCA of the 33 genes
   and the coordinates alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _report import table

import scfm
from scfm.bench import hvg_pca, integration, knn_accuracy
from scfm.genes import align_genes
from scfm.models import Pretrained, load_pretrained, resolve_model
from scfm.models.base import resolve_device
from scfm.models.cellplm import CellPLMModule

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[0].parent / "shared" / "data"
PEER_PYTHON = HERE / "peers" / ".venv-cellplm" / "bin" / "python"
REFERENCE = HERE / "peers" / "cellplm_reference.py"
PBMC = DATA / "integration" / "pbmc_10x_3chemistries.h5ad"
CORPUS = DATA / "pretraining" / "human_raw_counts_corpus.h5ad"
PANCREAS = DATA / "integration" / "pancreas_3batches_cepo_small.h5ad"
OSMFISH = DATA / "spatial" / "osmfish_codeluppi2018_mouse_sscortex.h5ad"
MERFISH = DATA / "spatial" / "merfish_moffitt2018_mouse_hypothalamus_slice.h5ad"
VISIUM4 = DATA / "spatial" / "visium_dlpfc_maynard2021_4sections_100genes.h5ad"
VISIUM500 = DATA / "spatial" / "visium_dlpfc_maynard2021_151673_500genes.h5ad"
HELD_OUT_SECTION = "151673"
VISIBLE = 0.9
N_NEIGHBOURS = 15


# -- helpers ------------------------------------------------------------------------------------------
def read_counts(path: Path) -> ad.AnnData:
    adata = ad.read_h5ad(path)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def random_cellplm(bundled: Pretrained, seed: int) -> Pretrained:
    """The bundled config and vocabulary with freshly initialised weights (the no-pretraining control)."""
    torch.manual_seed(seed)
    module = CellPLMModule(bundled.module.config).eval()
    return Pretrained("cellplm", module, bundled.vocab, f"cellplm random weights (seed {seed})", "none", "none")


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log1p_scores(predicted: np.ndarray, observed: np.ndarray) -> dict:
    """Pearson of log1p per gene (mean and median over the genes whose observed values vary; a constant prediction
    counts as 0), Pearson over all entries, MSE of log1p."""
    p, o = np.log1p(np.asarray(predicted, dtype=np.float64)), np.log1p(np.asarray(observed, dtype=np.float64))
    pc, oc = p - p.mean(0), o - o.mean(0)
    ok = (oc**2).sum(0) > 0
    denominator = np.sqrt((pc**2).sum(0) * (oc**2).sum(0))[ok]
    covariance = (pc * oc).sum(0)[ok]
    per_gene = np.divide(covariance, denominator, out=np.zeros_like(covariance), where=denominator > 0)
    flat = np.corrcoef(p.ravel(), o.ravel())[0, 1] if p.std() > 0 else np.nan
    return {
        "pearson_gene_mean": float(per_gene.mean()) if per_gene.size else np.nan,
        "pearson_gene_median": float(np.median(per_gene)) if per_gene.size else np.nan,
        "genes_scored": int(ok.sum()),
        "pearson_all": float(flat),
        "mse_log1p": float(((p - o) ** 2).mean()),
    }


def pca_of(
    log_values: np.ndarray, n_components: int, fit_rows: np.ndarray | None = None, scale: bool = True
) -> np.ndarray:
    """PCA of log values, standardised per gene with ``scale`` (fitted on ``fit_rows``, applied to all rows)."""
    from sklearn.decomposition import PCA

    fit = log_values if fit_rows is None else log_values[fit_rows]
    mean, std = fit.mean(0), fit.std(0)
    std[std == 0] = 1.0
    if not scale:
        std[:] = 1.0
    n_components = max(1, min(n_components, fit.shape[0] - 1, fit.shape[1] - 1))
    pca = PCA(n_components=n_components, random_state=0).fit((fit - mean) / std)
    return pca.transform((log_values - mean) / std)


def neighbours(reference: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(query, return_distance=False)


# -- 1. speed -----------------------------------------------------------------------------------------
def worker(spec_path: str) -> None:
    """Hidden entry point: time one ``scfm.tl.embed`` in this fresh process and print a JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    embed = scfm.tl.embed  # import the tools before the clock starts
    adata = ad.read_h5ad(spec["h5ad"])
    kwargs = {"sample_key": spec["sample_key"]} if spec.get("sample_key") else {}
    start = time.perf_counter()
    embed(adata, spec["model"], device=spec["device"], progress=False, **kwargs)
    seconds = time.perf_counter() - start
    record = adata.uns["scfm"]["X_scfm"]
    start = time.perf_counter()
    resolve_model(spec["model"], capability="embed")  # the share of loading the checkpoint
    load_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "load_seconds": load_seconds,
                "cells_per_s": adata.n_obs / seconds,
                "n_cells": adata.n_obs,
                "peak_rss_mib": peak_rss_mib(),
                "threads": torch.get_num_threads(),
                "device": record["device"],
                "genes_matched": record["genes_matched"],
                "n_sentences": record.get("n_sentences"),
                "tokens_per_cell": record["mean_tokens_per_cell"],
            }
        )
    )


# Runs the reference script in the peer environment and adds its peak RSS (VmHWM) as a last JSON line.
PEAK_WRAPPER = """
import json, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(json.dumps({"peak_rss_mib": int(status) / 1024}))
"""


def run_json(command: list) -> dict:
    """Run ``command``; merge the JSON objects of its stdout lines (later lines win)."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    merged = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


def scfm_worker(workdir: Path, name: str, h5ad: Path, model: str, opts, sample_key: str | None = "batch") -> dict:
    spec = {
        "h5ad": str(h5ad),
        "model": model,
        "sample_key": sample_key,
        "threads": opts.threads,
        "device": opts.device,
    }
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(spec))
    return run_json([sys.executable, __file__, "--worker", path])


def speed_cells(opts: argparse.Namespace, workdir: Path) -> list[tuple[str, Path, int]]:
    """Write the timing sets (raw counts, ``obs["batch"]`` only) and return ``(label, path, n_cells)``."""
    rng = np.random.default_rng(opts.seed)
    sets = []
    pbmc = read_counts(PBMC)
    n = min(opts.speed_cells[0], pbmc.n_obs)
    cells = pbmc[np.sort(rng.choice(pbmc.n_obs, n, replace=False))].copy()
    cells.obs = cells.obs[["batch"]].astype(str)
    cells.var = cells.var.iloc[:, :0]
    path = workdir / "pbmc.h5ad"
    cells.write_h5ad(path)
    sets.append((f"pbmc_10x_3chemistries ({cells.obs['batch'].nunique()} samples)", path, cells.n_obs))
    for n in opts.speed_cells[1:]:
        corpus = read_counts(CORPUS)
        n = min(n, corpus.n_obs)
        cells = corpus[np.sort(rng.choice(corpus.n_obs, n, replace=False))].copy()
        cells.obs = cells.obs[["batch"]].astype(str)
        cells.var = cells.var.iloc[:, :0]
        path = workdir / f"corpus{n}.h5ad"
        cells.write_h5ad(path)
        sets.append((f"human_raw_counts_corpus ({cells.obs['batch'].nunique()} samples)", path, cells.n_obs))
    return sets


def speed_genes(path: Path, n_genes: int) -> list[str]:
    """The ``n_genes`` genes detected in most cells of ``path`` (file order)."""
    adata = read_counts(path)
    detected = np.asarray((adata.X > 0).sum(0)).ravel()
    order = np.sort(np.argsort(-detected, kind="stable")[:n_genes])
    return [str(g) for g in adata.var_names[order]]


def speed(opts: argparse.Namespace) -> dict[str, list[dict]]:
    from scfm.models.cellplm import write_converted_cellplm

    out: dict[str, list[dict]] = {"reference": [], "bundled": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sets = speed_cells(opts, workdir)
        if not PEER_PYTHON.exists():
            print(f"\nno peer environment at {PEER_PYTHON}: (a) skipped (bash benchmarks/peers/setup_cellplm_env.sh)")
        else:
            genes = speed_genes(sets[-1][1], opts.speed_genes)
            (workdir / "genes.json").write_text(json.dumps(genes))
            ref_dir, prefix, scfm_dir = workdir / "reference", "speed-paper", workdir / "scfm-paper"
            build = ["build", "--config-out", ref_dir, "--prefix", prefix, "--shape", "paper"]
            built = run_json([PEER_PYTHON, REFERENCE, *build, "--genes", workdir / "genes.json", "--seed", opts.seed])
            write_converted_cellplm(
                ref_dir / f"{prefix}.config.json", ref_dir / f"{prefix}.best.ckpt", scfm_dir, overwrite=True
            )
            print(
                f"\n(a) paper-shape model with random weights: {built['n_params'] / 1e6:.1f}M reference parameters, "
                f"{built['n_genes']} genes, norm {built['norm']}"
            )
            for label, path, n_cells in sets:
                embed = ["embed", "--config-dir", ref_dir, "--prefix", prefix, "--h5ad", path]
                extra = ["--out", workdir / "reference.npy", "--threads", opts.threads, "--seed", opts.seed]
                runs: dict[str, list[dict]] = {"reference CellEmbeddingPipeline": [], "scfm tl.embed": []}
                for _ in range(opts.repeats):  # alternate the sides so that drifts in machine load hit both
                    runs["reference CellEmbeddingPipeline"].append(
                        run_json([PEER_PYTHON, "-c", PEAK_WRAPPER, REFERENCE, *embed, *extra])
                    )
                    runs["scfm tl.embed"].append(scfm_worker(workdir, "scfm-paper", path, str(scfm_dir), opts))
                reference_s = float(np.median([r["seconds"] for r in runs["reference CellEmbeddingPipeline"]]))
                for side, records in runs.items():
                    seconds = [r["seconds"] for r in records]
                    median = float(np.median(seconds))
                    loads = [r["load_seconds"] for r in records if "load_seconds" in r]
                    out["reference"].append(
                        {
                            "cells": f"{n_cells:,} {label}",
                            "implementation": side,
                            "seconds": median,
                            "range_s": f"{min(seconds):.2f}-{max(seconds):.2f}",
                            "of_which_load_s": float(np.median(loads)) if loads else None,
                            "cells_per_s": n_cells / median,
                            "vs_reference": reference_s / median,
                            "peak_rss_mib": max(r["peak_rss_mib"] for r in records),
                            "threads": records[0]["threads"],
                            "device": records[0].get("device", "cpu"),
                        }
                    )
        label, path, n_cells = sets[0]
        models = {"CellPLM (bundled)": opts.cellplm, "SCGPT (bundled)": "scgpt", "tGPT (bundled)": "tgpt"}
        records = {
            name: scfm_worker(workdir, name.split()[0], path, model, opts, "batch" if "CellPLM" in name else None)
            for name, model in models.items()
        }
        scgpt = records["SCGPT (bundled)"]["cells_per_s"]
        for name, record in records.items():
            out["bundled"].append(
                {
                    "cells": f"{n_cells:,} {label}",
                    "model": name,
                    "seconds": record["seconds"],
                    "cells_per_s": record["cells_per_s"],
                    "vs_SCGPT": record["cells_per_s"] / scgpt,
                    "tokens_per_cell": record["tokens_per_cell"],
                    "genes_matched": record["genes_matched"],
                    "peak_rss_mib": record["peak_rss_mib"],
                    "threads": record["threads"],
                    "device": record["device"],
                }
            )
    return out


# -- 2. denoise ---------------------------------------------------------------------------------------
def thin(counts: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split integer counts into a visible part (Binomial(count, VISIBLE)) and the held-out rest."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if not np.array_equal(counts.data, np.round(counts.data)) or (counts.data < 0).any():
        raise ValueError("binomial thinning needs non-negative integer counts")
    drawn = np.random.default_rng(seed).binomial(counts.data.astype(np.int64), VISIBLE).astype(np.float32)
    visible = sp.csr_matrix((drawn, counts.indices.copy(), counts.indptr.copy()), shape=counts.shape)
    held = sp.csr_matrix((counts.data - drawn, counts.indices.copy(), counts.indptr.copy()), shape=counts.shape)
    visible.eliminate_zeros()
    held.eliminate_zeros()
    return visible, held


def normalised(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell proportions (zero rows stay zero) and library sizes."""
    library = counts.sum(1)
    return counts / np.maximum(library, 1e-12)[:, None], library


def denoise_dataset(name: str, adata: ad.AnnData, groups: str | None, opts: argparse.Namespace, **keys) -> list[dict]:
    """Thin ``adata``'s counts, denoise the visible part with CellPLM, score every method per group."""
    model = load_pretrained(opts.cellplm, family="cellplm")
    visible, held = thin(adata.X, opts.seed)
    view = ad.AnnData(visible, obs=adata.obs.copy(), var=adata.var.iloc[:, :0].copy())
    view.obsm = adata.obsm.copy()
    scfm.tl.denoise(view, model, progress=False, device=opts.device, **keys)
    matched = np.asarray(view.var["scfm_denoised_matched"], dtype=bool)
    scale = (1 - VISIBLE) / VISIBLE
    denoised = view.layers["scfm_denoised"][:, matched] * scale
    visible_m, held_m = visible[:, matched].toarray(), held[:, matched].toarray()
    labels = np.full(adata.n_obs, name) if groups is None else (name + " " + adata.obs[groups].astype(str)).to_numpy()
    rows = []
    for label in pd.unique(labels):
        cells = np.flatnonzero(labels == label)
        proportions, library = normalised(visible_m[cells])
        pcs = pca_of(np.log1p(proportions * 1e4), opts.n_pcs, scale=False)
        smoothed = proportions[neighbours(pcs, pcs, N_NEIGHBOURS)].mean(1)
        expressed = library > 0
        predictions = {
            "CellPLM tl.denoise": denoised[cells],
            "visible counts (no denoising)": visible_m[cells] * scale,
            f"kNN smoothing ({N_NEIGHBOURS} cells, PCA)": smoothed * library[:, None] * scale,
            "per-gene mean": proportions[expressed].mean(0)[None] * library[:, None] * scale,
        }
        base = {
            "dataset": label,
            "cells": len(cells),
            "genes": int(matched.sum()),
            "held_out_per_cell": float(held_m[cells].sum(1).mean()),
        }
        for method, predicted in predictions.items():
            rows.append({**base, "method": method, **log1p_scores(predicted, held_m[cells])})
    return rows


def denoise(opts: argparse.Namespace) -> list[dict]:
    pancreas = read_counts(PANCREAS)
    pancreas = pancreas[pancreas.obs["batch"].isin(["batch 1", "batch 4"])].copy()
    rows = denoise_dataset("pancreas", pancreas, "batch", opts, sample_key="batch")
    visium = read_counts(VISIUM500)
    visium = visium[:, visium.var["symbol_mapped"].to_numpy(dtype=bool)].copy()
    rows += denoise_dataset(f"Visium {HELD_OUT_SECTION}", visium, None, opts, spatial_key="spatial")
    return rows


# -- 3. spatial imputation ----------------------------------------------------------------------------
def spatial_split(name: str) -> tuple[ad.AnnData, ad.AnnData]:
    """``(held-out cells, training cells)`` of one spatial data set, as ``configs/cellplm_default.yaml`` split them."""
    if name == "Visium":
        adata = read_counts(VISIUM4)
        adata = adata[:, adata.var["symbol_mapped"].to_numpy(dtype=bool)].copy()
        test = (adata.obs["sample"].astype(str) == HELD_OUT_SECTION).to_numpy()
    else:
        adata = read_counts(OSMFISH if name == "osmFISH" else MERFISH)
        x = adata.obsm["spatial"][:, 0]
        test = x >= np.median(x)
    adata.var_names = adata.var_names.str.upper()
    adata.var = adata.var.iloc[:, :0]
    return adata[test].copy(), adata[~test].copy()


def impute_dataset(name: str, opts: argparse.Namespace) -> tuple[list[dict], dict]:
    model = load_pretrained(opts.cellplm, family="cellplm")
    test, train = spatial_split(name)
    panel = np.asarray(test.var_names[align_genes(test.var, model.vocab, min_genes=1).var_index])
    rng = np.random.default_rng(opts.seed)
    n_hold = max(2, round(0.1 * len(panel)))
    folds = np.array_split(rng.permutation(panel), max(1, len(panel) // n_hold))[: opts.spatial_folds]
    test.obsm["spatial_shuffled"] = test.obsm["spatial"][rng.permutation(test.n_obs)]
    modes = {
        "CellPLM, coordinates": "spatial",
        "CellPLM, shuffled coordinates": "spatial_shuffled",
        "CellPLM, no coordinates": None,
    }
    methods = [*modes, f"kNN ({N_NEIGHBOURS} training cells)", "training mean"]
    genes = np.concatenate(folds)
    predicted = {m: pd.DataFrame(0.0, index=test.obs_names, columns=genes) for m in methods}
    seconds = dict.fromkeys(modes, 0.0)
    for held in folds:
        shown = [g for g in panel if g not in set(held)]
        view = test[:, shown].copy()
        for method, key in modes.items():
            start = time.perf_counter()
            scfm.tl.impute(view, list(held), model, spatial_key=key, progress=False, device=opts.device)
            seconds[method] += time.perf_counter() - start
            predicted[method][list(held)] = view.obsm["scfm_imputed"].to_numpy()
        shown_train, library_train = normalised(train[:, shown].X.toarray())
        keep = library_train > 0
        ratio = train[:, list(held)].X.toarray()[keep] / library_train[keep, None]
        shown_test, library_test = normalised(view.X.toarray())
        log_train, log_test = np.log1p(shown_train[keep] * 1e4), np.log1p(shown_test * 1e4)
        both = pca_of(np.vstack([log_train, log_test]), opts.n_pcs, fit_rows=np.arange(keep.sum()))
        nearest = neighbours(both[: keep.sum()], both[keep.sum() :], N_NEIGHBOURS)
        predicted[methods[3]][list(held)] = ratio[nearest].mean(1) * library_test[:, None]
        predicted[methods[4]][list(held)] = ratio.mean(0)[None] * library_test[:, None]
    observed = test[:, list(genes)].X.toarray()
    base = {
        "dataset": f"{name} held out ({test.n_obs} {'spots' if name == 'Visium' else 'cells'})",
        "panel_genes": len(panel),
        "folds": len(folds),
        "genes_per_fold": n_hold,
        "training_cells": train.n_obs,
    }
    rows = [{**base, "method": m, **log1p_scores(predicted[m].to_numpy(), observed)} for m in methods]
    return rows, {"dataset": name, **{m: s for m, s in seconds.items()}}


def spatial(opts: argparse.Namespace) -> list[dict]:
    rows = []
    for name in ("osmFISH", "MERFISH", "Visium"):
        dataset_rows, seconds = impute_dataset(name, opts)
        timings = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if k != "dataset")
        print(f"{name}: tl.impute seconds summed over the folds: {timings}")
        rows += dataset_rows
    return rows


# -- 4. embedding -------------------------------------------------------------------------------------
def embedding_models(opts: argparse.Namespace) -> dict[str, Pretrained]:
    bundled = load_pretrained(opts.cellplm, family="cellplm")
    models = {"CellPLM": bundled}
    for seed in opts.random_seeds:
        models[f"CellPLM random weights, seed {seed}"] = random_cellplm(bundled, seed)
    return models


def with_random_mean(rows: list[dict], label_key: str, columns: list[str]) -> list[dict]:
    """Append the mean (and std) over the random-weight seeds of ``columns``."""
    randoms = [r for r in rows if "random weights" in r[label_key]]
    if len(randoms) < 2:
        return rows
    mean = {**{k: v for k, v in randoms[0].items() if k not in columns}, label_key: "CellPLM random weights, mean"}
    for column in columns:
        values = [r[column] for r in randoms]
        mean[column] = float(np.mean(values))
        mean[f"{column} sd"] = float(np.std(values, ddof=1))
    return [*rows, mean]


def embedding_pancreas(opts: argparse.Namespace) -> list[dict]:
    adata = read_counts(PANCREAS)
    embeddings = {}
    for label, model in embedding_models(opts).items():
        key = "X_" + label.replace(" ", "_").replace(",", "")
        scfm.tl.embed(adata, model, sample_key="batch", key_added=key, progress=False, device=opts.device)
        embeddings[f"{label} (sentences per batch)"] = key
        if label == "CellPLM":
            scfm.tl.embed(adata, model, key_added=key + "_one", progress=False, device=opts.device)
            embeddings["CellPLM (one sample)"] = key + "_one"
    scores = integration(adata, "batch", "cell_type", methods=("hvg_pca",), embeddings=embeddings, seed=opts.seed)
    wide = scores[scores.metric_type != "Time"].pivot_table(index="method", columns="metric", values="value")
    keys = {**embeddings, "hvg_pca": "X_hvg_pca"}
    rows = []
    for method in [*embeddings, "hvg_pca"]:
        row = wide.loc[method]
        rows.append(
            {
                "method": "HVG+PCA" if method == "hvg_pca" else method,
                "Bio": row["Bio conservation"],
                "Batch": row["Batch correction"],
                "Total": row["Total"],
                "15-NN accuracy": knn_accuracy(adata, keys[method], "cell_type"),
                **{k: v for k, v in row.items() if k not in ("Bio conservation", "Batch correction", "Total")},
            }
        )
    return with_random_mean(rows, "method", ["Bio", "Batch", "Total", "15-NN accuracy"])


def embedding_pbmc(opts: argparse.Namespace) -> list[dict]:
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    rows = []
    chance = float(adata.obs["bulk_labels"].value_counts(normalize=True).max())
    for label, model in embedding_models(opts).items():
        scfm.tl.embed(adata, model, use_raw=True, key_added=label, progress=False, device=opts.device)
        rows.append({"method": label, "15-NN accuracy": knn_accuracy(adata, label, "bulk_labels"), "chance": chance})
    hvg_pca(adata, use_raw=True, key_added="HVG+PCA", seed=opts.seed)
    rows.append(
        {"method": "HVG+PCA", "15-NN accuracy": knn_accuracy(adata, "HVG+PCA", "bulk_labels"), "chance": chance}
    )
    return with_random_mean(rows, "method", ["15-NN accuracy"])


def embedding_osmfish(opts: argparse.Namespace) -> list[dict]:
    adata, _ = spatial_split("osmFISH")
    adata.obsm["spatial_shuffled"] = adata.obsm["spatial"][np.random.default_rng(opts.seed).permutation(adata.n_obs)]
    bundled = load_pretrained(opts.cellplm, family="cellplm")
    runs = {
        "CellPLM, coordinates": (bundled, "spatial"),
        "CellPLM, shuffled coordinates": (bundled, "spatial_shuffled"),
        "CellPLM, no coordinates": (bundled, None),
    }
    for seed in opts.random_seeds[:1]:
        control = random_cellplm(bundled, seed)
        runs[f"CellPLM random weights (seed {seed}), coordinates"] = (control, "spatial")
        runs[f"CellPLM random weights (seed {seed}), no coordinates"] = (control, None)
    for label, (model, key) in runs.items():
        scfm.tl.embed(adata, model, spatial_key=key, key_added=label, progress=False, min_genes=10, device=opts.device)
    hvg_pca(adata, key_added="HVG+PCA (33 genes)", seed=opts.seed)
    adata.obsm["coordinates only"] = np.asarray(adata.obsm["spatial"], dtype=np.float32)
    valid = adata[adata.obs["valid"].astype(bool).to_numpy()].copy()
    rows = []
    for label in [*runs, "HVG+PCA (33 genes)", "coordinates only"]:
        rows.append(
            {
                "method": label,
                "cells": valid.n_obs,
                "cell_type 15-NN": knn_accuracy(valid, label, "cell_type"),
                "region 15-NN": knn_accuracy(valid, label, "region"),
            }
        )
    return rows


def embedding(opts: argparse.Namespace) -> dict[str, list[dict]]:
    return {"pancreas": embedding_pancreas(opts), "pbmc": embedding_pbmc(opts), "osmfish": embedding_osmfish(opts)}


# -- main ---------------------------------------------------------------------------------------------
TASKS = ("speed", "denoise", "spatial", "embedding")


def print_results(task: str, result, opts: argparse.Namespace) -> None:
    if task == "speed":
        if result["reference"]:
            print("\n## Speed (a): scfm vs the reference CellPLM, same random paper-shape weights, fresh processes\n")
            print(f"(median of {opts.repeats} runs per side, alternating; range_s: fastest-slowest)\n")
            columns = ["cells", "implementation", "seconds", "range_s", "of_which_load_s", "cells_per_s"]
            print(table(result["reference"], [*columns, "vs_reference", "peak_rss_mib", "threads", "device"]))
        print("\n## Speed (b): bundled CellPLM vs bundled SCGPT and tGPT on the same cells, fresh processes\n")
        columns = ["cells", "model", "seconds", "cells_per_s", "vs_SCGPT", "tokens_per_cell", "genes_matched"]
        print(table(result["bundled"], [*columns, "peak_rss_mib", "threads", "device"]))
    elif task == "denoise":
        print(f"\n## Denoising: held-out {1 - VISIBLE:.0%} of the counts (binomial thinning, seed {opts.seed})\n")
        columns = ["dataset", "cells", "genes", "held_out_per_cell", "method", "pearson_gene_mean"]
        print(table(result, [*columns, "pearson_gene_median", "pearson_all", "mse_log1p", "genes_scored"]))
    elif task == "spatial":
        print("\n## Spatial gene imputation: held-out genes of held-out cells (every panel gene held out once)\n")
        columns = ["dataset", "panel_genes", "folds", "method", "pearson_gene_mean", "pearson_gene_median"]
        print(table(result, [*columns, "pearson_all", "mse_log1p", "genes_scored", "training_cells"]))
    else:
        print("\n## Embedding: pancreas (528 cells, 3 studies), scib-metrics unscaled, zero-shot\n")
        rows = result["pancreas"]
        print(table(rows, ["method", "Bio", "Batch", "Total", "15-NN accuracy", "Total sd", "15-NN accuracy sd"]))
        metric_columns = [c for c in rows[0] if c not in ("method", "Bio", "Batch", "Total", "15-NN accuracy")]
        print()
        print(table(rows[:-1], ["method", *metric_columns]))
        print("\n## Embedding: pbmc68k_reduced (adata.raw), 5-fold 15-NN accuracy of bulk_labels\n")
        print(table(result["pbmc"], ["method", "15-NN accuracy", "15-NN accuracy sd", "chance"]))
        print("\n## Embedding: osmFISH held-out right half, valid cells, 5-fold 15-NN accuracy\n")
        print(table(result["osmfish"], ["method", "cells", "cell_type 15-NN", "region 15-NN"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--cellplm", default="cellplm", help="CellPLM checkpoint (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--speed-cells", type=int, nargs="+", default=[2000, 10000], help="PBMC cells, then corpus cells per set"
    )
    parser.add_argument("--speed-genes", type=int, default=13500, help="genes of the paper-shape model")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side in the scfm-vs-reference timing")
    parser.add_argument("--spatial-folds", type=int, default=None, help="at most this many folds per data set")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-pcs", type=int, default=30, help="PCs of the kNN baselines")
    parser.add_argument("--workdir", default=None, help="keep the speed task's files here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.worker)
        return
    torch.set_num_threads(opts.threads)
    device = str(resolve_device(opts.device))
    print(f"threads {torch.get_num_threads()}, device {device}, CellPLM checkpoint {opts.cellplm!r}")
    functions = {"speed": speed, "denoise": denoise, "spatial": spatial, "embedding": embedding}
    out = {}
    for task in opts.tasks:
        start = time.perf_counter()
        out[task] = functions[task](opts)
        print_results(task, out[task], opts)
        print(f"\n({task}: {time.perf_counter() - start:.0f} s)")
    if opts.json:
        opts.json.write_text(json.dumps({"threads": opts.threads, "device": device, **out}, indent=2, default=float))


if __name__ == "__main__":
    main()

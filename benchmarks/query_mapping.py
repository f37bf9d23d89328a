"""Reference mapping of a held-out batch: scfm (SCGPT.load_query_data) beside scVI + scArches, same run.

    python benchmarks/query_mapping.py                         # both tasks
    python benchmarks/query_mapping.py --tasks pancreas --epochs 10 --query-epochs 10
    python benchmarks/query_mapping.py --methods vae scvi pca   # without the fine-tuning rows (the slow ones)
    python benchmarks/query_mapping.py --tasks mop --methods vae scvi --mop-cells 2000 --seed 1   # another seed
    python benchmarks/query_mapping.py --tasks mop --methods vae --mop-cells 2000 --vae-epochs 200  # scVI's epochs

Tasks (data from ../shared/data):

- ``pancreas``: ``integration/pancreas_3batches_cepo_small.h5ad``; reference = batches 1 (Baron, inDrop) and 4
  (Segerstolpe, Smart-seq2), query = batch 5 (Xin); 2 cell types.
- ``mop``: the RNA of ``multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu``, ``--mop-cells`` drawn at random
  (seed 0); reference = libraries 09A-09J, query = 09K and 09L; 15 cell types. Mouse symbols meet the human
  vocabulary case-insensitively (``species="mouse"``).

Every method embeds the reference, then the query in the reference's space, without the query's labels:

- ``scfm map (DSBN), GEP+GEPC``: ``tl.integrate`` fine-tunes the bundled model on the reference with the paper's
  recipe plus domain-specific batch norm; the query is mapped with ``SCGPT.load_query_data`` (new batch rows and
  batch norm, everything else frozen) and ``train(--query-epochs)`` with the reconstruction objectives (what
  ``tl.integrate`` does when it maps a query).
- ``scfm map (DSBN), +ECS+DAR``: the same with the recipe's ECS (10) and DAR (1) in query training.
- ``scfm DSBN, untrained query``: the same model and query model without query training (the new batch norm at
  the mean of the reference's).
- ``scfm map (recipe)``: the default recipe (no DSBN); ``tl.integrate(query, model=reference)``. The cell embedding
  does not depend on the batch here (batch embeddings feed the expression heads only), so this is the fine-tuned
  encoder applied to the query.
- ``scfm zero-shot``: ``tl.embed`` with the bundled model, reference and query separately.
- ``scfm vae map``: ``tl.integrate``'s default count VAE fitted on the reference (``return_model=True``), the query
  encoded by its frozen encoder (``tl.integrate(query, "batch", model=vae)``; nothing is trained on the query).
- ``scfm vae (encode_batch) map``: the VAE fitted with ``encode_batch=True`` (the encoder reads the batch too,
  layer norm, dropout 0.2: scArches' reference setting); the query's new batches get their own input columns,
  trained alone on the query (``--vae-query-epochs``, default the VAE heuristic), everything else frozen.
- ``scfm vae, reference + query fitted together``: the same VAE fitted on all cells with the query's batch known
  (not a mapping: the upper line for it).
- ``scVI + scArches``: ``scvi.model.SCVI`` on 2,000 reference HVGs (rounded counts, scArches settings: encoded
  covariates, layer norm, no batch norm), query by ``SCVI.prepare_query_anndata`` + ``SCVI.load_query_data`` and
  ``train(plan_kwargs={"weight_decay": 0})``.
- ``scVI (covariates not encoded) + scArches``: scVI's default model (batch norm, the batch read by the decoder
  only), mapped the same way; the model class of ``scfm vae``.
- ``PCA projection``: PCA (50) of the log-normalised reference HVGs; the query projected on it (no correction).

Scores (higher is better): ``kNN acc`` / ``kNN F1``: a 15-NN classifier on the reference embedding and its labels
predicts the query (accuracy, macro-F1); ``mixing``: in the joint embedding, the fraction of each query cell's
15 nearest neighbours that are reference cells, divided by the fraction expected if the batches were mixed
(``n_ref / (n - 1)``), averaged over query cells (0: the query sits apart; about 1: mixed). Seconds are wall time
on the shared machine; compare within a run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table

import scfm
from scfm.models import SCGPT

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASKS = ("pancreas", "mop")
METHODS = ("vae", "scvi", "pca", "finetune", "zero-shot")
K = 15


def load_pancreas() -> tuple[ad.AnnData, ad.AnnData, dict]:
    adata = ad.read_h5ad(DATA / "integration" / "pancreas_3batches_cepo_small.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    batch = adata.obs["batch"].astype(str)
    return adata[batch != "batch 5"].copy(), adata[batch == "batch 5"].copy(), {}


def load_mop(n_cells: int) -> tuple[ad.AnnData, ad.AnnData, dict]:
    import mudata

    rna = mudata.read_h5mu(DATA / "multiomic" / "mouse_mop_paired_rna_atac_10309cells.h5mu")["rna"].copy()
    rng = np.random.default_rng(0)
    rna = rna[np.sort(rng.choice(rna.n_obs, min(n_cells, rna.n_obs), replace=False))].copy()
    rna.X = sp.csr_matrix(rna.X, dtype=np.float32)
    held_out = rna.obs["batch"].astype(str).isin(["09K", "09L"])
    return rna[~held_out].copy(), rna[held_out].copy(), {"species": "mouse"}


def scores(reference: np.ndarray, query: np.ndarray, ref_labels: np.ndarray, query_labels: np.ndarray) -> dict:
    knn = KNeighborsClassifier(K).fit(reference, ref_labels)
    predicted = knn.predict(query)
    joint = np.vstack([reference, query])
    _, neighbours = NearestNeighbors(n_neighbors=K + 1).fit(joint).kneighbors(joint[len(reference) :])
    from_reference = (neighbours[:, 1:] < len(reference)).mean(axis=1)
    expected = len(reference) / (len(joint) - 1)
    return {
        "kNN acc": accuracy_score(query_labels, predicted),
        "kNN F1": f1_score(query_labels, predicted, average="macro"),
        "mixing": float(from_reference.mean() / expected),
    }


def log_hvg(reference: ad.AnnData, n_top: int = 2000) -> np.ndarray:
    logged = reference.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.pp.highly_variable_genes(logged, n_top_genes=min(n_top, reference.n_vars - 1), batch_key="batch")
    return logged.var["highly_variable"].to_numpy()


def pca_projection(reference: ad.AnnData, query: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    hvg = log_hvg(reference)

    def logged(adata: ad.AnnData) -> np.ndarray:
        x = adata[:, hvg].X
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        return np.log1p(x / np.maximum(np.asarray(adata.X.sum(axis=1)).reshape(-1, 1), 1) * 1e4)

    pca = PCA(50, random_state=0).fit(logged(reference))
    return pca.transform(logged(reference)), pca.transform(logged(query))


def scvi_scarches(
    reference: ad.AnnData, query: ad.AnnData, opts, *, encode_covariates: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    import scvi

    scvi.settings.seed = opts.seed
    hvg = log_hvg(reference)
    ref = reference[:, hvg].copy()
    ref.X = sp.csr_matrix(np.rint(ref.X.toarray()), dtype=np.float32)
    scvi.model.SCVI.setup_anndata(ref, batch_key="batch")
    arches = (
        {"use_layer_norm": "both", "use_batch_norm": "none", "encode_covariates": True, "dropout_rate": 0.2}
        if encode_covariates
        else {}
    )
    model = scvi.model.SCVI(ref, n_layers=2, n_latent=30, **arches)
    model.train(max_epochs=opts.scvi_epochs, enable_progress_bar=False)
    q = query.copy()
    q.X = sp.csr_matrix(np.rint(q.X.toarray()), dtype=np.float32)
    scvi.model.SCVI.prepare_query_anndata(q, model)
    mapped = scvi.model.SCVI.load_query_data(q, model)
    mapped.train(max_epochs=opts.scvi_query_epochs, plan_kwargs={"weight_decay": 0.0}, enable_progress_bar=False)
    return model.get_latent_representation(), mapped.get_latent_representation()


def run_task(name: str, reference: ad.AnnData, query: ad.AnnData, gene_kwargs: dict, opts) -> list[dict]:
    ref_labels = reference.obs["cell_type"].astype(str).to_numpy()
    query_labels = query.obs["cell_type"].astype(str).to_numpy()
    print(
        f"\n## {name}: reference {reference.n_obs} cells ({reference.obs['batch'].nunique()} batches), "
        f"query {query.n_obs} cells ({sorted(query.obs['batch'].astype(str).unique())})",
        flush=True,
    )
    rows = []

    def add(method: str, ref_emb: np.ndarray, query_emb: np.ndarray, seconds: float) -> None:
        rows.append({"method": method, **scores(ref_emb, query_emb, ref_labels, query_labels), "seconds": seconds})
        print(f"  {method}: {rows[-1]}", flush=True)

    if "vae" in opts.methods:
        start = time.perf_counter()
        r, q = reference.copy(), query.copy()
        vae = scfm.tl.integrate(
            r, "batch", return_model=True, max_epochs=opts.vae_epochs, seed=opts.seed, progress=False
        )
        scfm.tl.integrate(q, "batch", model=vae, progress=False)
        add("scfm vae map", r.obsm["X_scfm_integrated"], q.obsm["X_scfm_integrated"], time.perf_counter() - start)
        start = time.perf_counter()
        r, q = reference.copy(), query.copy()
        vae = scfm.tl.integrate(
            r, "batch", encode_batch=True, return_model=True, max_epochs=opts.vae_epochs, seed=opts.seed, progress=False
        )
        scfm.tl.integrate(q, "batch", model=vae, max_epochs=opts.vae_query_epochs, seed=opts.seed, progress=False)
        add(
            "scfm vae (encode_batch) map",
            r.obsm["X_scfm_integrated"],
            q.obsm["X_scfm_integrated"],
            time.perf_counter() - start,
        )
        start = time.perf_counter()
        both = ad.concat([reference, query])
        scfm.tl.integrate(both, "batch", max_epochs=opts.vae_epochs, seed=opts.seed, progress=False)
        joint = both.obsm["X_scfm_integrated"]
        add(
            "scfm vae, reference + query fitted together",
            joint[: reference.n_obs],
            joint[reference.n_obs :],
            time.perf_counter() - start,
        )
    if "scvi" in opts.methods:
        for method, encode in (("scVI + scArches", True), ("scVI (covariates not encoded) + scArches", False)):
            start = time.perf_counter()
            ref_emb, query_emb = scvi_scarches(reference, query, opts, encode_covariates=encode)
            add(method, ref_emb, query_emb, time.perf_counter() - start)
    if "pca" in opts.methods:
        start = time.perf_counter()
        ref_emb, query_emb = pca_projection(reference, query)
        add("PCA projection", ref_emb, query_emb, time.perf_counter() - start)
    if "finetune" in opts.methods:
        _finetune_rows(reference, query, gene_kwargs, opts, add)
    if "zero-shot" in opts.methods:
        start = time.perf_counter()
        r, q = reference.copy(), query.copy()
        for adata in (r, q):
            scfm.tl.embed(adata, model=opts.model, progress=False, **gene_kwargs)
        add("scfm zero-shot", r.obsm["X_scfm"], q.obsm["X_scfm"], time.perf_counter() - start)
    return rows


def _finetune_rows(reference: ad.AnnData, query: ad.AnnData, gene_kwargs: dict, opts, add) -> None:
    """The fine-tuning rows: a DSBN reference with and without query training, and the default recipe."""
    common = {
        "method": "finetune",
        "model": opts.model,
        "max_epochs": opts.epochs,
        "n_top_genes": opts.n_top_genes,
        "batch_size": opts.batch_size,
        "progress": False,
        "seed": opts.seed,
        **gene_kwargs,
    }
    # scfm, DSBN reference: load_query_data + train, and the untrained query model
    start = time.perf_counter()
    dsbn = scfm.tl.integrate(reference.copy(), "batch", domain_batchnorm=True, return_model=True, **common)
    reference_seconds = time.perf_counter() - start
    work = SCGPT.prepare_query_anndata(_work_copy(query, dsbn, gene_kwargs), dsbn, inplace=False)
    ref_emb = dsbn.get_latent_representation()
    start = time.perf_counter()
    untrained = SCGPT.load_query_data(work.copy(), dsbn)
    add("scfm DSBN, untrained query", ref_emb, untrained.get_latent_representation(), time.perf_counter() - start)
    for method, objectives in (
        ("scfm map (DSBN), GEP+GEPC", {}),
        ("scfm map (DSBN), +ECS+DAR", {"ecs_weight": 10.0, "ecs_threshold": 0.8, "dar_weight": 1.0}),
    ):
        start = time.perf_counter()
        mapped = SCGPT.load_query_data(work.copy(), dsbn)
        mapped.train(
            max_epochs=opts.query_epochs,
            batch_size=opts.batch_size,
            lr=opts.query_lr,
            head_lr_factor=10.0,
            enable_progress_bar=False,
            **objectives,
        )
        add(method, ref_emb, mapped.get_latent_representation(), reference_seconds + time.perf_counter() - start)
    # scfm, the default recipe: tl.integrate(query, model=reference)
    start = time.perf_counter()
    recipe = scfm.tl.integrate(reference.copy(), "batch", return_model=True, **common)
    q = query.copy()
    scfm.tl.integrate(q, "batch", **{**common, "model": recipe, "max_epochs": opts.query_epochs})
    add(
        "scfm map (recipe)",
        recipe.get_latent_representation(),
        q.obsm["X_scfm_integrated"],
        time.perf_counter() - start,
    )


def _work_copy(query: ad.AnnData, model: SCGPT, gene_kwargs: dict) -> ad.AnnData:
    """The query as ``tl.integrate`` fed the reference: in-vocabulary genes named by their vocabulary symbol."""
    from scfm.data import training_copy
    from scfm.genes import GeneRules

    work, _ = training_copy(
        query,
        {"batch": query.obs["batch"].astype(str).astype("category").to_numpy()},
        layer=None,
        use_raw=False,
        gene_key=None,
        vocab=model.vocab,
        min_genes=50,
        gene_rules=GeneRules(**gene_kwargs),
    )
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--model", default=None, help="starting checkpoint (default: the bundled model)")
    parser.add_argument("--epochs", type=int, default=10, help="scfm reference fine-tuning epochs")
    parser.add_argument("--query-epochs", type=int, default=10, help="scfm query training epochs")
    parser.add_argument("--query-lr", type=float, default=1e-3, help="scfm query learning rate")
    parser.add_argument("--n-top-genes", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mop-cells", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0, help="seed of every trained model (scfm and scVI)")
    parser.add_argument("--scvi-epochs", type=int, default=200)
    parser.add_argument("--scvi-query-epochs", type=int, default=200)
    parser.add_argument(
        "--vae-epochs", type=int, default=None, help="epochs of every VAE fit on reference cells (default: heuristic)"
    )
    parser.add_argument(
        "--vae-query-epochs", type=int, default=None, help="query epochs of the encode_batch VAE (default: heuristic)"
    )
    opts = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"the data folder {DATA} is missing")
    for task in opts.tasks:
        reference, query, gene_kwargs = load_pancreas() if task == "pancreas" else load_mop(opts.mop_cells)
        rows = run_task(task, reference, query, gene_kwargs, opts)
        print(f"\n### {task}\n")
        print(table(rows, ["method", "kNN acc", "kNN F1", "mixing", "seconds"]))


if __name__ == "__main__":
    main()

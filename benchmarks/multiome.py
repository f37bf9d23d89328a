"""Multi-omic integration through MuData: scfm (scGPT's multi-omic recipe) against MultiVI, totalVI, PCA+LSI
(+Harmony), RNA-only PCA and muon's WNN, scored with scib-metrics' Benchmarker.

Tasks (data in ../shared/data/multiomic):

- ``paired``: mouse MOp SNARE-seq2-like RNA+ATAC, batch = library (12), 15 cell types; ``--cells`` drawn at random.
- ``mosaic``: the same cells with libraries 09A-09D paired, ATAC hidden in 09E-09H (RNA-only) and RNA hidden in
  09I-09L (ATAC-only); labels are used for scoring only.
- ``cite``: the two 10x CITE-seq PBMC files (5k: 29 antibodies, 10k: 14) as two batches whose protein panels differ;
  no labels, so only batch mixing (iLISI) and a label-free structure score are reported.

Run: ``python benchmarks/multiome.py --cells 2000 --epochs 3`` (prints markdown tables; ``--out`` keeps a CSV).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multiomic"
MOP = DATA / "mouse_mop_paired_rna_atac_10309cells.h5mu"
CITE = [DATA / f"cite_10x_pbmc_{size}_protein_v3_200cells_scvi.h5mu" for size in ("5k", "10k")]
PAIRED_LIBS = ["09A", "09B", "09C", "09D"]
RNA_ONLY_LIBS = ["09E", "09F", "09G", "09H"]
ATAC_ONLY_LIBS = ["09I", "09J", "09K", "09L"]


def load_mop(n_cells: int, seed: int):
    import mudata as md

    mdata = md.read_h5mu(MOP)
    rows = np.sort(np.random.default_rng(seed).choice(mdata.n_obs, size=min(n_cells, mdata.n_obs), replace=False))
    names = mdata.obs_names[rows]
    with md.set_options(pull_on_update=False):
        sub = md.MuData({k: mdata.mod[k][names].copy() for k in ("rna", "atac")})
    for column in ("batch", "cell_type"):
        sub.obs[column] = mdata.obs.loc[names, column].astype(str).to_numpy()
    return sub


def mosaic_from(paired):
    """Hide ATAC in libraries 09E-09H and RNA in 09I-09L (cells keep their labels for scoring)."""
    import mudata as md

    batch = paired.obs["batch"]
    rna_cells = paired.obs_names[~batch.isin(ATAC_ONLY_LIBS).to_numpy()]
    atac_cells = paired.obs_names[~batch.isin(RNA_ONLY_LIBS).to_numpy()]
    with md.set_options(pull_on_update=False):
        mosaic = md.MuData({"rna": paired.mod["rna"][rna_cells].copy(), "atac": paired.mod["atac"][atac_cells].copy()})
    mosaic.obs["batch"] = paired.obs.loc[mosaic.obs_names, "batch"].to_numpy()
    mosaic.obs["cell_type"] = paired.obs.loc[mosaic.obs_names, "cell_type"].to_numpy()
    return mosaic


def load_cite():
    """Two CITE-seq batches: RNA on the genes both files measured, proteins as the union of the panels."""
    import anndata as ad
    import mudata as md

    parts = [md.read_h5mu(path) for path in CITE]
    genes = parts[0].mod["rna"].var_names.intersection(parts[1].mod["rna"].var_names)
    rna, prot = [], []
    for name, part in zip(("pbmc5k", "pbmc10k"), parts, strict=True):
        r = part.mod["rna"][:, genes].copy()
        p = part.mod["prot"].copy()
        for a in (r, p):
            a.obs = pd.DataFrame({"batch": name}, index=[f"{name}_{c}" for c in part.obs_names])
        rna.append(r)
        prot.append(p)
    rna = ad.concat(rna)
    prot = ad.concat(prot, join="outer", fill_value=0)
    prot.X = np.nan_to_num(np.asarray(prot.X.todense() if hasattr(prot.X, "todense") else prot.X)).astype(np.float32)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["batch"] = rna.obs.loc[mdata.obs_names, "batch"].to_numpy()
    return mdata


def run_scfm(mdata, args, **kwargs):
    import scfm

    start = time.perf_counter()
    model = scfm.tl.integrate_modalities(
        mdata,
        "batch",
        max_epochs=args.epochs,
        batch_size=32,
        lr=args.lr,
        n_top_genes=args.n_top_genes,
        n_top_peaks=args.n_top_peaks,
        max_tokens={"rna": args.max_tokens, "atac": args.max_tokens},
        progress=False,
        return_model=True,
        key_added="X_scfm",
        **kwargs,
    )
    seconds = time.perf_counter() - start
    record = mdata.uns["scfm"]["X_scfm"]
    embedding = np.asarray(mdata.obsm["X_scfm"])
    del mdata.obsm["X_scfm"], mdata.uns["scfm"]
    return embedding, seconds, record, model


def rna_integrate_epoch(mdata, args) -> float:
    """Seconds of one epoch of the single-modality ``scfm.tl.integrate`` on the RNA of the same cells (reference)."""
    import scfm

    rna = mdata.mod["rna"].copy()
    rna.obs["batch"] = mdata.obs.loc[rna.obs_names, "batch"].to_numpy()
    scfm.tl.integrate(rna, "batch", method="finetune", species="mouse", max_epochs=1, progress=False, key_added="X_ref")
    return float(rna.uns["scfm"]["X_ref"]["seconds_per_epoch"])


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def scib(obs: pd.DataFrame, embeddings: dict[str, np.ndarray], seconds: dict[str, float], pre: str) -> pd.DataFrame:
    from anndata import AnnData

    from scfm.bench import scib_table

    adata = AnnData(obs=obs[["batch", "cell_type"]].copy())
    for name, embedding in embeddings.items():
        adata.obsm[name] = embedding
    table = scib_table(adata, list(embeddings), batch_key="batch", label_key="cell_type", pre_integrated_key=pre)
    table = table.drop(index="Metric Type").astype(float)
    front = ["Total", "Bio conservation", "Batch correction"]
    table = table[front + [c for c in table.columns if c not in front]].sort_values("Total", ascending=False)
    table["seconds"] = [seconds.get(name, np.nan) for name in table.index]
    return table


def transfer_accuracy(embedding, labels, reference, query) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=15).fit(embedding[reference], labels[reference])
    return float((classifier.predict(embedding[query]) == labels[query]).mean())


def label_free(embedding, batches, reference_pcs, k: int = 15) -> tuple[float, float]:
    """iLISI of the embedding (scaled 0-1 as scib-metrics does) and the share of each cell's ``k`` nearest same-batch
    neighbours in the batch's own RNA PCA that stay among its ``k`` nearest same-batch neighbours (structure kept)."""
    from scib_metrics import ilisi_knn
    from scib_metrics.nearest_neighbors import pynndescent
    from sklearn.neighbors import NearestNeighbors

    ilisi = float(ilisi_knn(pynndescent(embedding, n_neighbors=90, random_state=0), batches))
    kept = []
    for batch in np.unique(batches):
        rows = np.flatnonzero(batches == batch)
        a = NearestNeighbors(n_neighbors=k + 1).fit(reference_pcs[rows]).kneighbors(return_distance=False)
        b = NearestNeighbors(n_neighbors=k + 1).fit(embedding[rows]).kneighbors(return_distance=False)
        kept += [len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b, strict=True)]
    return ilisi, float(np.mean(kept))


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    return table.to_markdown(floatfmt=f".{digits}f")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["paired", "mosaic", "cite"])
    parser.add_argument("--cells", type=int, default=2000, help="MOp cells drawn at random (seed 0)")
    parser.add_argument("--epochs", type=int, default=3, help="scfm fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cite-epochs", type=int, default=10)
    parser.add_argument("--multivi-epochs", type=int, default=25)
    parser.add_argument("--totalvi-epochs", type=int, default=100)
    parser.add_argument("--n-top-genes", type=int, default=1000)
    parser.add_argument("--n-top-peaks", type=int, default=4000)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--gene-tokens", nargs="+", default=["pretrained", "new"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epoch-reference", action="store_true", help="also time one single-modality tl.integrate epoch (ratio)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    from scfm import bench

    tables = []
    mop = load_mop(args.cells, args.seed) if {"paired", "mosaic"} & set(args.tasks) else None
    modalities = {"rna": "rna", "atac": "atac"}
    if "paired" in args.tasks:
        embeddings, seconds = {}, {}
        for tokens in args.gene_tokens:
            name = f"scfm ({tokens} gene tokens)"
            embeddings[name], seconds[name], record, _ = run_scfm(mop, args, gene_tokens=tokens, species="mouse")
            print(
                f"{name}: {record['seconds_per_epoch']:.1f} s per epoch on {mop.n_obs} cells "
                f"(~{record['seconds_per_epoch'] * 10309 / mop.n_obs / 60:.1f} min for the 10,309 MOp cells); "
                f"features {record['features']}, genes from the checkpoint {record['genes_from_checkpoint']}",
                flush=True,
            )
        if args.epoch_reference:
            reference = rna_integrate_epoch(mop, args)
            print(
                f"reference in the same run: one scfm.tl.integrate epoch (RNA only, 500 HVGs) on the same cells took "
                f"{reference:.1f} s; multi-omic / RNA-only epoch time = {record['seconds_per_epoch'] / reference:.2f}",
                flush=True,
            )
        embeddings["MultiVI"], seconds["MultiVI"] = timed(
            bench.multivi, mop, modalities, "batch", max_epochs=args.multivi_epochs, seed=args.seed
        )
        embeddings["PCA+LSI"], seconds["PCA+LSI"] = timed(bench.concatenated_pca, mop, modalities, batch_key="batch")
        embeddings["PCA+LSI+Harmony"], seconds["PCA+LSI+Harmony"] = timed(
            bench.concatenated_pca, mop, modalities, batch_key="batch", harmony=True
        )
        embeddings["RNA PCA"], seconds["RNA PCA"] = timed(bench.rna_pca, mop)
        table = scib(mop.obs, embeddings, seconds, pre="PCA+LSI")
        print(f"\n### MOp paired RNA+ATAC ({mop.n_obs} cells)\n\n{markdown(table)}\n", flush=True)
        wnn, wnn_seconds = timed(bench.wnn_scores, mop, modalities, batch_key="batch", label_key="cell_type")
        print(f"muon WNN graph ({wnn_seconds:.0f} s): " + ", ".join(f"{k} {v:.3f}" for k, v in wnn.items()), flush=True)
        tables.append(table.assign(task="paired"))
    if "mosaic" in args.tasks:
        mosaic = mosaic_from(mop)
        embeddings, seconds = {}, {}
        scfm_run = run_scfm(mosaic, args, gene_tokens="pretrained", species="mouse")
        embeddings["scfm"], seconds["scfm"] = scfm_run[:2]
        embeddings["MultiVI"], seconds["MultiVI"] = timed(
            bench.multivi, mosaic, modalities, "batch", max_epochs=args.multivi_epochs, seed=args.seed
        )
        embeddings["PCA+LSI"], seconds["PCA+LSI"] = timed(bench.concatenated_pca, mosaic, modalities, batch_key="batch")
        embeddings["PCA+LSI+Harmony"], seconds["PCA+LSI+Harmony"] = timed(
            bench.concatenated_pca, mosaic, modalities, batch_key="batch", harmony=True
        )
        table = scib(mosaic.obs, embeddings, seconds, pre="PCA+LSI")
        rna = np.asarray(mosaic.obsmap["rna"]).ravel() > 0
        atac = np.asarray(mosaic.obsmap["atac"]).ravel() > 0
        labels = mosaic.obs["cell_type"].to_numpy()
        paired_rows = np.flatnonzero(rna & atac)
        for group, rows in (("RNA-only", np.flatnonzero(rna & ~atac)), ("ATAC-only", np.flatnonzero(~rna & atac))):
            table[f"transfer acc. {group}"] = [
                transfer_accuracy(embeddings[name], labels, paired_rows, rows) for name in table.index
            ]
        print(
            f"\n### MOp mosaic ({mosaic.n_obs} cells: {len(paired_rows)} paired, {int((rna & ~atac).sum())} RNA-only, "
            f"{int((~rna & atac).sum())} ATAC-only)\n\n{markdown(table)}\n",
            flush=True,
        )
        tables.append(table.assign(task="mosaic"))
    if "cite" in args.tasks:
        cite = load_cite()
        protein = {"rna": "rna", "protein": "prot"}
        embeddings, seconds = {}, {}
        cite_args = argparse.Namespace(**{**vars(args), "epochs": args.cite_epochs})
        embeddings["scfm"], seconds["scfm"], record, _ = run_scfm(cite, cite_args, gene_tokens="pretrained")
        embeddings["totalVI"], seconds["totalVI"] = timed(
            bench.totalvi, cite, protein, "batch", max_epochs=args.totalvi_epochs, seed=args.seed
        )
        embeddings["PCA+PCA(CLR)"], seconds["PCA+PCA(CLR)"] = timed(
            bench.concatenated_pca, cite, protein, batch_key="batch"
        )
        embeddings["PCA+PCA(CLR)+Harmony"], seconds["PCA+PCA(CLR)+Harmony"] = timed(
            bench.concatenated_pca, cite, protein, batch_key="batch", harmony=True
        )
        embeddings["RNA PCA"], seconds["RNA PCA"] = timed(bench.rna_pca, cite)
        batches = cite.obs["batch"].to_numpy()
        reference = np.zeros((cite.n_obs, 30), dtype=np.float32)
        for batch in np.unique(batches):  # the reference structure: each batch's own RNA PCA
            rows = np.flatnonzero(batches == batch)
            reference[rows] = bench.rna_pca(_subset(cite, rows))
        rows = []
        for name, embedding in embeddings.items():
            ilisi, kept = label_free(embedding, batches, reference)
            rows.append({"method": name, "iLISI": ilisi, "structure kept": kept, "seconds": seconds[name]})
        table = pd.DataFrame(rows).set_index("method").sort_values("iLISI", ascending=False)
        print(f"\n### CITE-seq 5k + 10k, panels 29 vs 14 ({cite.n_obs} cells, no labels)\n\n{markdown(table)}\n")
        wnn, _ = timed(bench.wnn_scores, cite, protein, batch_key="batch", label_key=None)
        print("muon WNN graph: " + ", ".join(f"{k} {v:.3f}" for k, v in wnn.items()), flush=True)
        tables.append(table.assign(task="cite"))
    if args.out is not None:
        pd.concat(tables).to_csv(args.out)


def _subset(mdata, rows):
    import mudata as md

    names = mdata.obs_names[rows]
    with md.set_options(pull_on_update=False):
        return md.MuData({k: mdata.mod[k][names].copy() for k in mdata.mod})


if __name__ == "__main__":
    main()

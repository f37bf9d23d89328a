"""Does corpus coverage of a tissue close the zero-shot gap on it? (issue 22, diagnostic)

Usage::

    python benchmarks/corpus_coverage.py [--values rank|log] [--panel 3000] [--components 50] [--data ../shared/data]
        [--models runs/tgpt_neighbour_coverage runs/tgpt_neighbours]

A fixed read-out fitted on the corpus (``corpus_rank_projection.CorpusRankProjection``: rank scores of a panel of
corpus HVGs, z-scored, projected on the corpus's principal components; no network) is as good as the bundled tGPT on
every protocol set, and loses to HVG+PCA on the two sets whose tissue the leave-dataset-out corpus lacks (fetal
cortex, pancreas). This script fits the same read-out twice, on the protocol's corpus and on the same corpus plus
*other cells of the held-out tissue*, and scores both on the same evaluation cells, which neither corpus holds:

- cortex: the corpus gains library 10X353_7 of the cortex cultures (2,738 cells); the evaluation cells are the
  protocol's cortex cells from library 10X355_7 (one batch: bio conservation only);
- pancreas: the corpus gains the Segerstolpe Smart-seq2 cells (200); the evaluation cells are the protocol's
  pancreas cells from Baron (inDrop) and Xin (two batches).

``--models`` embeds the same cells with trained checkpoints too, e.g. ``configs/tgpt_neighbour_coverage.yaml`` (the
neighbour recipe with the same cells added) beside ``configs/tgpt_neighbour_contrastive.yaml`` (without them): the
same question asked of a network.

Neither fit is a held-out model: the second one has seen the tissue, and the held-out cells share a donor (cortex)
or a tissue (pancreas) with what was added. The question is only whether coverage is what the read-out lacks.
HVG+PCA and ``rank_pca`` are fitted on the evaluation cells themselves, in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad

import scfm

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from corpus_rank_projection import EXCLUDED_DATASETS, CorpusRankProjection, print_summary, report_rows, set_matrix
from pretrain_default import load_corpus
from zero_shot_protocol import EvalSet, load_set, score

CORTEX = "cxg_cortex_cultures_div4_div11"
CORTEX_EVALUATED_LIBRARY = "10X355_7"  # the other library, 10X353_7, is what the covered corpus adds
SEGERSTOLPE = "pancreas_batch4_SmartSeq2_Segerstolpe"
PANCREAS_EVALUATED_BATCHES = ("batch 1", "batch 5")  # Baron inDrop and Xin; batch 4 is Segerstolpe


def corpus_with_coverage(corpora: list[str]) -> ad.AnnData:
    """The protocol's corpus plus cortex library 10X353_7 and the Segerstolpe cells."""
    kept_out = [d for d in EXCLUDED_DATASETS if d not in (CORTEX, SEGERSTOLPE)]
    evaluated_library = {"dataset": CORTEX, "column": "sample", "values": [CORTEX_EVALUATED_LIBRARY]}
    corpus, _ = load_corpus(corpora, kept_out, 50, ("hg19_",), exclude_cells=[evaluated_library])
    return corpus


def restricted_set(name: str, data: Path, max_cells: int) -> EvalSet:
    """The protocol's set, restricted to the cells that neither corpus holds."""
    ev = load_set(name, data, max_cells)
    if name == "cortex":
        keep = (ev.adata.obs["sample"] == CORTEX_EVALUATED_LIBRARY).to_numpy()
        return EvalSet(name, ev.adata[keep].copy(), ev.label_key, None)
    keep = ev.adata.obs["batch"].isin(PANCREAS_EVALUATED_BATCHES).to_numpy()
    adata = ev.adata[keep].copy()
    adata.obs["batch"] = adata.obs["batch"].cat.remove_unused_categories()
    return EvalSet(name, adata, ev.label_key, ev.batch_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel", type=int, default=3000, help="corpus highly variable genes in the panel")
    parser.add_argument("--components", type=int, default=50, help="corpus principal components kept")
    parser.add_argument("--values", choices=["rank", "log"], default="rank", help="what the read-out reads")
    parser.add_argument(
        "--models", nargs="*", default=[], help="checkpoint folders also embedded (e.g. the coverage recipe's)"
    )
    parser.add_argument("--max-cells", type=int, default=1000, help="protocol cells per set before the restriction")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()

    corpora = [str(path) for path in sorted((args.data / "pretraining").glob("*.h5ad"))]
    protocol_corpus, _ = load_corpus(corpora, EXCLUDED_DATASETS, min_cells=50, strip_prefixes=("hg19_",))
    covered_corpus = corpus_with_coverage(corpora)
    fits = {
        "X_readout_protocol": CorpusRankProjection(protocol_corpus, args.panel, args.components, args.values),
        "X_readout_covered": CorpusRankProjection(covered_corpus, args.panel, args.components, args.values),
    }
    for key, corpus in (("protocol", protocol_corpus), ("covered", covered_corpus)):
        print(f"{key} corpus: {corpus.n_obs} cells, {corpus.obs['dataset'].nunique()} datasets")

    names = {
        "X_tgpt": "tGPT (bundled default)",
        "X_readout_protocol": "read-out fitted on the protocol's corpus",
        "X_readout_covered": "read-out fitted on the corpus + other cells of the tissue",
        **{f"X_model_{i}": f"checkpoint {Path(model).name}" for i, model in enumerate(args.models)},
        "X_rank_pca": "rank -> PCA fitted on these cells",
        "X_hvg_pca": "HVG+PCA",
    }
    summary = []
    for name in ("cortex", "pancreas"):
        ev = restricted_set(name, args.data, 2000 if name == "pancreas" else args.max_cells)
        cells = ev.adata
        matrix, genes = set_matrix(cells, ev.use_raw)
        for key, projection in fits.items():
            cells.obsm[key] = projection.transform(matrix, genes)
        panel_genes = {key: int(projection.panel_matrix(matrix, genes)[1].sum()) for key, projection in fits.items()}
        scfm.tl.embed(cells, "tgpt", use_raw=ev.use_raw, key_added="X_tgpt", progress=False)
        for i, model in enumerate(args.models):
            scfm.tl.embed(cells, model, use_raw=ev.use_raw, key_added=f"X_model_{i}", progress=False)
        scfm.bench.rank_pca(cells, use_raw=ev.use_raw)
        scfm.bench.hvg_pca(cells, use_raw=ev.use_raw, key_added="X_hvg_pca")
        table = score(ev, list(names))
        print(f"\n## {name} ({cells.n_obs} cells; panel genes present: {panel_genes})\n")
        summary += report_rows(name, table, names)
    print_summary(summary)


if __name__ == "__main__":
    main()

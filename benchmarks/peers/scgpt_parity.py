"""Numerical parity between the reference scGPT package (0.2.4) and scfm on converted checkpoints.

    bash benchmarks/peers/setup_scgpt_env.sh                  # once: the peer environment
    .venv/bin/python benchmarks/peers/scgpt_parity.py         # tiny and whole-human shapes
    .venv/bin/python benchmarks/peers/scgpt_parity.py --shapes tiny --n-cells 32

For each model shape the reference package builds a ``TransformerModel`` with random weights and saves it as
a checkpoint directory laid out like the published ones (flash-attn ``Wqkv`` tensors, no ``cls_decoder``);
the tiny model is also saved in the ``nn.TransformerEncoder`` layout with its ``cls_decoder`` (converted with
``drop=["cls_decoder"]``) and as a fine-tuned annotation model (``finetuned``: a 5-class ``cls_decoder``, the DAB
batch discriminator and ``id2type.json``, all imported as scfm heads). scfm converts each directory, and both
sides run the same token tensors of real cells (``integration/pbmc_10x_3chemistries.h5ad`` from
``../shared/data``; synthetic counts if absent).

Compared: ``<cls>`` cell embeddings after the reference's normalisation (per-cell cosine, target >= 0.9999),
masked-value (GEP) predictions, GEPC predictions, gene embeddings, ``scfm.tl.embed`` end to end against the
reference on the same tokens, and value binning (the reference's ``binning`` with the same uniform draws for
tied values must give identical bins). For the fine-tuned model also the classifier and discriminator logits and
the predicted classes (``SCGPT.predict`` on the AnnData against the reference's ``cls_decoder`` on the same
tokens; target: identical predictions).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from tabulate import tabulate

from scfm.genes import align_genes
from scfm.models import load_pretrained
from scfm.models.scgpt import SCGPT, BinningConfig, pad_cells, tokenize_csr, write_converted_checkpoint
from scfm.tl import embed
from scfm.tokenize import bin_expressed

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "scgpt_reference.py"
DATA = HERE.parents[1].parent / "shared" / "data" / "integration" / "pbmc_10x_3chemistries.h5ad"
WHOLE_HUMAN_GENES = 60694  # genes in the published whole-human vocabulary (60,697 tokens with 3 specials)


def peer_python(path: str | None) -> Path:
    python = Path(path) if path else HERE / ".venv-scgpt" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no peer environment at {python}; create it with: bash benchmarks/peers/setup_scgpt_env.sh")
    return python


def load_cells(n_cells: int, seed: int = 0) -> ad.AnnData:
    if DATA.exists():
        adata = ad.read_h5ad(DATA)
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        return adata
    print(f"{DATA} not found: using synthetic counts", file=sys.stderr)
    rng = np.random.default_rng(seed)
    genes = [f"SYNTH{i}" for i in range(3000)]
    rates = rng.gamma(0.3, 1.0, size=len(genes))
    counts = rng.poisson(rates, size=(n_cells, len(genes))).astype(np.float32)
    return ad.AnnData(sp.csr_matrix(counts), var={"gene": genes}).copy()


def vocabulary_genes(adata: ad.AnnData, shape: str) -> list[str]:
    genes = list(dict.fromkeys(map(str, adata.var_names)))
    if shape == "whole-human":
        genes += [f"FILLER{i}" for i in range(WHOLE_HUMAN_GENES - len(genes))]
    return genes


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run_shape(shape: str, layout: str, adata: ad.AnnData, workdir: Path, python: Path, batch_size: int) -> dict:
    name = f"{shape}-{layout}"
    ref_dir, scfm_dir = workdir / f"{name}-reference", workdir / f"{name}-scfm"
    genes_file = workdir / f"{shape}-genes.json"
    genes_file.write_text(json.dumps(vocabulary_genes(adata, shape)))
    subprocess.run(
        [python, REFERENCE, "build", "--out", ref_dir, "--genes", genes_file, "--shape", shape, "--layout", layout]
        + (["--explicit-zero"] if layout == "torch" else []),
        check=True,
    )
    drop = ["cls_decoder"] if layout == "torch" else []
    write_converted_checkpoint(ref_dir, scfm_dir, drop=drop, overwrite=True)
    pretrained = load_pretrained(scfm_dir)
    module, vocab, config = pretrained.module, pretrained.vocab, pretrained.module.config

    alignment = align_genes(adata.var, vocab, min_genes=10)
    column_ids = alignment.column_token_ids()
    cells = tokenize_csr(adata.X, column_ids, cls_id=config.cls_id, config=BinningConfig(max_len=config.max_len))
    gene_ids, values = pad_cells(cells, pad_id=config.pad_id, pad_value=config.pad_value)
    raw_rows = [
        adata.X[i].data[(adata.X[i].data > 0) & (column_ids[adata.X[i].indices] >= 0)] for i in range(adata.n_obs)
    ]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw_rows])])
    tokens_file, ref_out = workdir / f"{name}-tokens.npz", workdir / f"{name}-reference-out.npz"
    np.savez(
        tokens_file,
        gene_ids=gene_ids.numpy(),
        values=values.numpy(),
        raw_values=np.concatenate(raw_rows),
        raw_offsets=offsets,
    )
    subprocess.run(
        [
            python,
            REFERENCE,
            "outputs",
            "--ckpt",
            ref_dir,
            "--tokens",
            tokens_file,
            "--out",
            ref_out,
            "--batch-size",
            str(batch_size),
        ],
        check=True,
    )
    ref = np.load(ref_out)

    cls, gep, gepc, gene_emb = [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(gene_ids), batch_size):
            ids, vals = gene_ids[start : start + batch_size], values[start : start + batch_size]
            out = module.encode(ids, vals)
            heads = module.generative(out["hidden"], out["cell_embedding"], query_gene_ids=ids)
            cls.append(out["cell_embedding"].numpy())
            gep.append(heads["gep"]["value"].numpy())
            gepc.append(heads["gepc"]["value"].numpy())
            gene_emb.append(module.gene_embedding(ids).numpy())
    cls, gep, gepc, gene_emb = map(np.concatenate, (cls, gep, gepc, gene_emb))
    real = (gene_ids != config.pad_id).numpy()
    normalized = cls / np.linalg.norm(cls, axis=1, keepdims=True)

    tool_input = adata.copy()
    embed(tool_input, str(scfm_dir), batch_size=batch_size, min_genes=10, progress=False)

    bins_equal = 0
    for i in range(adata.n_obs):
        ours = bin_expressed(raw_rows[i], config.n_bins, np.random.RandomState(i))
        bins_equal += int(np.array_equal(ours, ref["reference_bins"][offsets[i] : offsets[i + 1]].astype(np.int64)))

    heads = {}
    if "cls_logits" in ref:
        with torch.inference_mode():
            logits = np.concatenate(
                [
                    module.classify(gene_ids[s : s + batch_size], values[s : s + batch_size]).numpy()
                    for s in range(0, len(gene_ids), batch_size)
                ]
            )
            dar = np.concatenate(
                [
                    module.batch_discriminator(module.embed(gene_ids[s : s + batch_size], values[s : s + batch_size]))
                    .detach()
                    .numpy()
                    for s in range(0, len(gene_ids), batch_size)
                ]
            )
        predicted = SCGPT.from_pretrained(str(scfm_dir), adata.copy(), min_genes=10).predict(
            adata, batch_size=batch_size
        )
        reference_classes = np.asarray(config.label_categories)[ref["cls_logits"].argmax(1)]
        heads = {
            "max |d| cls logits": f"{np.abs(logits - ref['cls_logits']).max():.1e}",
            "max |d| DAB logits": f"{np.abs(dar - ref['dab_logits']).max():.1e}",
            "identical predictions": f"{int((predicted.idxmax(axis=1) == reference_classes).sum())}/{adata.n_obs}",
        }
    return {
        "model": name,
        "params": f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M",
        "attention layout": config.extra["attention_layout"].split(" ")[0],
        "cells": adata.n_obs,
        "tokens/cell": f"{real.sum(1).mean():.0f}",
        "min cos <cls> (normalised)": f"{cosine(normalized, ref['cls_normalized']).min():.7f}",
        "min cos tl.embed": f"{cosine(tool_input.obsm['X_scfm'], ref['cls_normalized']).min():.7f}",
        "max |d| GEP": f"{np.abs(gep - ref['gep'])[real].max():.1e}",
        "max |d| GEPC": f"{np.abs(gepc - ref['gepc'])[real].max():.1e}",
        "max |d| gene emb": f"{np.abs(gene_emb - ref['gene_embeddings'])[real].max():.1e}",
        "cells with identical bins": f"{bins_equal}/{adata.n_obs}",
        **heads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "whole-human"], choices=["tiny", "whole-human"])
    parser.add_argument("--n-cells", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--peer-python", default=None, help="python of the peer environment")
    parser.add_argument("--workdir", default=None, help="keep the checkpoints and arrays here")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    opts = parser.parse_args()
    python = peer_python(opts.peer_python)
    torch.set_num_threads(2)
    adata = load_cells(opts.n_cells)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for shape in opts.shapes:
            for layout in ["published", "torch", "finetuned"] if shape == "tiny" else ["published"]:
                rows.append(run_shape(shape, layout, adata, workdir, python, opts.batch_size))
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    ok = all(
        float(row["min cos <cls> (normalised)"]) >= 0.9999 and float(row["min cos tl.embed"]) >= 0.9999 for row in rows
    )
    ok &= all(
        row["cells with identical bins"].split("/")[0] == row["cells with identical bins"].split("/")[1] for row in rows
    )
    ok &= all(
        row["identical predictions"].split("/")[0] == row["identical predictions"].split("/")[1]
        for row in rows
        if "identical predictions" in row
    )
    print("PARITY OK" if ok else "PARITY FAILED")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

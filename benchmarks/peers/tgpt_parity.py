"""Numerical parity between the reference tGPT (Hugging Face GPT-2) and scfm on converted checkpoints.

    bash benchmarks/peers/setup_tgpt_env.sh                    # once: the peer environment (transformers 4.46.3)
    .venv/bin/python benchmarks/peers/tgpt_parity.py           # tiny and published shapes
    .venv/bin/python benchmarks/peers/tgpt_parity.py --shapes tiny --n-cells 32

For each shape the peer environment builds a random ``GPT2LMHeadModel`` with a word-level gene tokenizer and saves
both with ``save_pretrained`` (the published layout: ``config.json``, ``pytorch_model.bin``, ``tokenizer.json``,
``special_tokens_map.json``; the tiny model also as ``model.safetensors``). The vocabulary is the genes of the cells
(``integration/pbmc_10x_3chemistries.h5ad``, 19,974 genes; the published ``tokenizer.json`` is 302 kB, roughly
20,000 tokens). The published shape is ``transcriptome-gpt-1024-8-16-64``: 8 layers, width 1024, 16 heads,
64 positions.

The reference side runs the reference README's feature extraction on gene-ranking text lines (genes ranked by
expression here, highest first, ties by vocabulary id; only genes scfm matched to the vocabulary). scfm converts the
directory (``scfm convert tgpt``), tokenises the same cells itself (``rank_tokenize_csr``), and embeds them through
``scfm.tl.embed`` straight from the reference directory. Compared: token sequences, per-cell cosine of the
embeddings (module and ``tl.embed``, target >= 0.99999), next-gene logits (max abs difference) and their argmax
(the model's zero-shot next-gene prediction; target: identical).
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
from scfm.models.tgpt import rank_tokenize_csr, write_converted_tgpt
from scfm.tl import embed

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "tgpt_reference.py"
DATA = HERE.parents[1].parent / "shared" / "data" / "integration" / "pbmc_10x_3chemistries.h5ad"


def peer_python(path: str | None) -> Path:
    python = Path(path) if path else HERE / ".venv-tgpt" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no peer environment at {python}; create it with: bash benchmarks/peers/setup_tgpt_env.sh")
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
    genes = [f"SYNTH{i}" for i in range(3000)] + ["HLA-DRA", "AC000061.1", "RP11-34P13.3"]
    counts = rng.poisson(rng.gamma(0.3, 1.0, size=len(genes)), size=(n_cells, len(genes))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = genes
    return adata


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def ranking_lines(adata: ad.AnnData, column_ids: np.ndarray, keep: int) -> list[str]:
    """Gene symbols of each cell's expressed matched genes, highest value first (ties by vocabulary id)."""
    names = np.asarray(adata.var_names)
    lines = []
    for i in range(adata.n_obs):
        row = adata.X[i]
        cols, values = row.indices, row.data
        ok = (column_ids[cols] >= 0) & (values > 0)
        cols, values = cols[ok], values[ok]
        order = np.lexsort((column_ids[cols], -values))[:keep]
        lines.append(" ".join(names[cols[order]]))
    return lines


def run_shape(shape: str, layout: str, adata: ad.AnnData, workdir: Path, python: Path, opts) -> dict:
    name = f"{shape}-{layout}"
    ref_dir, scfm_dir = workdir / f"{name}-reference", workdir / f"{name}-scfm"
    genes_file = workdir / "genes.json"
    genes_file.write_text(json.dumps(list(dict.fromkeys(map(str, adata.var_names)))))
    build = [python, REFERENCE, "build", "--out", ref_dir, "--genes", genes_file, "--shape", shape, "--layout", layout]
    subprocess.run(build, check=True)
    write_converted_tgpt(ref_dir, scfm_dir, overwrite=True)
    pretrained = load_pretrained(scfm_dir)
    module, vocab, config = pretrained.module, pretrained.vocab, pretrained.module.config

    alignment = align_genes(adata.var, vocab, min_genes=10)
    column_ids = alignment.column_token_ids()
    lines_file, ref_out = workdir / f"{name}-lines.txt", workdir / f"{name}-reference-out.npz"
    lines_file.write_text("\n".join(ranking_lines(adata, column_ids, keep=4 * config.max_len)) + "\n")
    run = [python, REFERENCE, "outputs", "--ckpt", ref_dir, "--lines", lines_file, "--out", ref_out]
    subprocess.run([*run, "--batch-size", str(opts.batch_size)], check=True)
    ref = np.load(ref_out)
    offsets = np.concatenate([[0], np.cumsum(ref["lengths"])])
    ref_ids = [ref["input_ids"][offsets[i] : offsets[i + 1]] for i in range(adata.n_obs)]

    cells = rank_tokenize_csr(
        adata.X, column_ids, begin_id=config.begin_id, end_id=config.end_id, max_len=config.max_len, end_when_cut=True
    )
    same_tokens = sum(np.array_equal(a, b) for a, b in zip(cells, ref_ids, strict=True))
    features, max_logit, same_argmax, n_positions = [], 0.0, 0, 0
    with torch.inference_mode():
        for i, tokens in enumerate(cells):
            ids = torch.as_tensor(tokens)[None]
            features.append(module.embed(ids)[0].numpy())
            logits = module.next_token_logits(module.hidden_states(ids))[0].numpy()
            ref_logits = ref["logits"][offsets[i] : offsets[i + 1]]
            if len(ref_logits) == len(logits):
                max_logit = max(max_logit, float(np.abs(logits - ref_logits).max()))
                same_argmax += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
                n_positions += len(logits)
    features = np.stack(features)
    tool_input = adata.copy()
    embed(tool_input, str(ref_dir), batch_size=opts.batch_size, min_genes=10, progress=False)
    reference_features = ref["features"]
    return {
        "model": name,
        "params": f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M",
        "vocab": len(vocab),
        "genes matched": f"{alignment.n_matched}/{adata.n_vars}",
        "cells": adata.n_obs,
        "identical tokens": f"{same_tokens}/{adata.n_obs}",
        "min cos embedding": f"{cosine(features, reference_features).min():.7f}",
        "min cos tl.embed": f"{cosine(tool_input.obsm['X_scfm'], reference_features).min():.7f}",
        "max |d| logits": f"{max_logit:.1e}",
        "identical next-gene argmax": f"{same_argmax}/{n_positions}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "published"], choices=["tiny", "published"])
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
            for layout in ["bin", "safetensors"] if shape == "tiny" else ["bin"]:
                rows.append(run_shape(shape, layout, adata, workdir, python, opts))
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    ok = all(
        float(row["min cos embedding"]) >= 0.99999
        and float(row["min cos tl.embed"]) >= 0.99999
        and row["identical tokens"].split("/")[0] == row["identical tokens"].split("/")[1]
        and row["identical next-gene argmax"].split("/")[0] == row["identical next-gene argmax"].split("/")[1]
        for row in rows
    )
    print("PARITY OK" if ok else "PARITY FAILED")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Numerical parity between the public scMulan (re-implemented independently) and scfm on converted checkpoints.

    .venv/bin/python benchmarks/peers/scmulan_parity.py                         # tiny and published shapes
    .venv/bin/python benchmarks/peers/scmulan_parity.py --shapes tiny --n-cells 64

The public scMulan code does not install offline, so the reference side is ``scmulan_reference.py``: an independent
re-implementation (it never imports scfm; it runs as its own process) of what the public code computes with its
default ``model_inference`` + ``get_cell_types_and_embds_for_adata`` path: the nanoGPT-style forward pass, the
c-sentence builder (genes in reversed gene-set order, ``np.digitize`` levels of ``linspace(0, max, 11)``, ``<PCT>``),
greedy ``generate_cellGenesis`` without a cache (the whole sequence re-run at each step, ``input_ids[0, :-1]``
banned, top-1 + ``multinomial``, rounded regression levels) and the read-out of the coarse/fine cell types
(``sequence[-3:-1]``) and of the embedding (``hidden_states[-1][0, -2]``).

For each shape the reference side writes random weights in the published layout (``ckpt_scMulan.pt`` with
``model``/``model_args``, ``meta_info.pt`` with ``token_set``/``gene_set``/``cell_type``/``MCT`` sets). The gene set is
the genes of ``integration/pbmc_10x_3chemistries.h5ad`` (19,974) shuffled among metadata tokens in ``token_set``; the
published shape pads the vocabulary with metadata tokens to 42,492 tokens, which with 15 layers, width 1120 and
20 heads gives the 368.80M parameters the reference logs for ``ckpt_scMulan.pt``. scfm converts the directory
(``scfm convert scmulan``) and runs the same cells (``normalize_total`` + ``log1p``) through ``scfm.tl.embed`` and
``SCMulan.predict_metadata``. Compared: per-cell cosine of the embeddings (target >= 0.99999), the generated tokens
and levels, the entity logits at every generation step (max abs difference), and the coarse and fine cell types
(target: identical).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from tabulate import tabulate

from scfm.models import load_pretrained
from scfm.models.scmulan import SCMulan, write_converted_scmulan
from scfm.tl import embed

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "scmulan_reference.py"
DATA = HERE.parents[1].parent / "shared" / "data" / "integration" / "pbmc_10x_3chemistries.h5ad"
PUBLISHED_VOCAB = 42_492  # with width 1120 and 15 layers: the 368.80M parameters of ckpt_scMulan.pt


def load_cells(n_cells: int, seed: int = 0) -> ad.AnnData:
    """``n_cells`` random cells, ``normalize_total(1e4)`` + ``log1p`` over all genes (the reference's input)."""
    if DATA.exists():
        adata = ad.read_h5ad(DATA)
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
        counts = sp.csr_matrix(adata.X, dtype=np.float64)
    else:
        print(f"{DATA} not found: using synthetic counts", file=sys.stderr)
        rng = np.random.default_rng(seed)
        genes = [f"SYNTH{i}" for i in range(3000)]
        counts = sp.csr_matrix(rng.poisson(rng.gamma(0.3, 1.0, size=3000), size=(n_cells, 3000)).astype(np.float64))
        adata = ad.AnnData(counts)
        adata.var_names = genes
    totals = np.asarray(counts.sum(1)).ravel()
    logged = sp.diags(1e4 / totals) @ counts
    logged.data = np.log1p(logged.data)
    adata.X = sp.csr_matrix(logged, dtype=np.float32)
    return adata


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def step_logits(module, sequence: np.ndarray, levels: np.ndarray, n_steps: int) -> np.ndarray:
    """scfm's entity logits at the positions the reference generated from (one full causal pass)."""
    with torch.inference_mode():
        ids, lv = torch.as_tensor(sequence[:-1])[None], torch.as_tensor(levels[:-1])[None]
        hidden = module.transformer(module.embed_words(ids, lv), is_causal=True)[0]
        prefix = len(sequence) - n_steps
        return module.entity_head(hidden[prefix - 1 : prefix - 1 + n_steps]).numpy()


def run_shape(shape: str, adata: ad.AnnData, workdir: Path, opts) -> dict:
    ref_dir, scfm_dir = workdir / f"{shape}-reference", workdir / f"{shape}-scfm"
    genes_file, cells_file, ref_out = workdir / "genes.json", workdir / f"{shape}-cells.npz", workdir / f"{shape}.npz"
    genes = [str(g) for g in adata.var_names]
    genes_file.write_text(json.dumps(genes))
    extra = PUBLISHED_VOCAB - len(genes) if shape == "published" else 120
    python = sys.executable
    build = [python, REFERENCE, "build", "--out", ref_dir, "--genes", genes_file, "--shape", shape]
    subprocess.run([*build, "--extra-tokens", str(extra)], check=True)
    np.savez(cells_file, X=adata.X.toarray(), genes=np.array(genes))
    start = time.perf_counter()
    subprocess.run(
        [python, REFERENCE, "outputs", "--ckpt", ref_dir, "--cells", cells_file, "--out", ref_out], check=True
    )
    ref_seconds = time.perf_counter() - start
    ref = np.load(ref_out)

    write_converted_scmulan(ref_dir, scfm_dir, overwrite=True)
    pretrained = load_pretrained(scfm_dir)
    module = pretrained.module
    start = time.perf_counter()
    tool_input = adata.copy()
    embed(tool_input, str(scfm_dir), batch_size=opts.batch_size, min_genes=10, progress=False)
    model = SCMulan.from_pretrained(str(scfm_dir), adata.copy(), min_genes=10)
    table = model.predict_metadata(batch_size=opts.batch_size)["cell_type"].table
    scfm_seconds = time.perf_counter() - start

    offsets = np.concatenate([[0], np.cumsum(ref["lengths"])])
    step_offsets = np.concatenate([[0], np.cumsum(ref["n_steps"])])
    max_logit, same_sequences = 0.0, 0
    for i in range(adata.n_obs):
        sequence = ref["sequences"][offsets[i] : offsets[i + 1]]
        levels = ref["levels"][offsets[i] : offsets[i + 1]]
        n_steps = int(ref["n_steps"][i])
        ours = step_logits(module, sequence, levels, n_steps)
        theirs = ref["logits"][step_offsets[i] : step_offsets[i + 1]]
        max_logit = max(max_logit, float(np.abs(ours - theirs).max()))
        same_sequences += int(np.array_equal(ours.argmax(1), theirs.argmax(1)))
    cos = cosine(tool_input.obsm["X_scfm"], ref["embeddings"])
    fine, coarse = table["label"].to_numpy().astype(str), table["coarse_label"].to_numpy().astype(str)
    return {
        "model": shape,
        "params": f"{sum(t.numel() for t in module.parameters()) / 1e6:.2f}M",
        "vocab": module.config.n_reference_tokens,
        "cells": adata.n_obs,
        "mean words": f"{ref['lengths'].mean():.0f}",
        "min cos embedding": f"{cos.min():.7f}",
        "median cos": f"{np.median(cos):.7f}",
        "max |d| step logits": f"{max_logit:.1e}",
        "same unbanned argmax": f"{same_sequences}/{adata.n_obs}",
        "identical fine type": f"{int((fine == ref['fine']).sum())}/{adata.n_obs}",
        "identical coarse type": f"{int((coarse == ref['coarse']).sum())}/{adata.n_obs}",
        "distinct fine types": len(set(ref["fine"])),
        "reference s": f"{ref_seconds:.0f}",
        "scfm s (embed + annotate)": f"{scfm_seconds:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "published"], choices=["tiny", "published"])
    parser.add_argument("--n-cells", type=int, default=64)
    parser.add_argument("--n-cells-published", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="keep the checkpoints and arrays here")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    opts = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for shape in opts.shapes:
            adata = load_cells(opts.n_cells_published if shape == "published" else opts.n_cells)
            rows.append(run_shape(shape, adata, workdir, opts))
            print(tabulate(rows[-1:], headers="keys", tablefmt="github", disable_numparse=True), flush=True)
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    ok = all(
        float(row["min cos embedding"]) >= 0.99999
        and all(row[k].split("/")[0] == row[k].split("/")[1] for k in ("identical fine type", "identical coarse type"))
        for row in rows
    )
    print("PARITY OK" if ok else "PARITY FAILED")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Numerical parity between the reference CellPLM package (0.1.0.post2) and scfm on converted checkpoints.

    bash benchmarks/peers/setup_cellplm_env.sh                # once: the peer environment
    .venv/bin/python benchmarks/peers/cellplm_parity.py       # tiny, paper and released shapes
    .venv/bin/python benchmarks/peers/cellplm_parity.py --shapes released
    .venv/bin/python benchmarks/peers/cellplm_parity.py --shapes tiny --n-cells 128

For each model shape the reference package builds an ``OmicsFormer`` with random weights over the 2,000 genes
detected in most cells of ``integration/pbmc_10x_3chemistries.h5ad`` (from ``../shared/data``; synthetic counts
if absent) and writes it as ``{prefix}.config.json`` + ``{prefix}.best.ckpt`` (``cellplm_reference.py build``).
``tiny`` and ``paper`` use ``norm="layernorm"``; ``released`` is the released ``20230926_85M`` layout: the paper
shape with ``norm="groupnorm"`` and decoder covariate layers (``batch_num=7``, ``dataset_num=3``; the released
tables are larger, which changes only how many embedding rows are summed). scfm converts the pair with
``write_converted_cellplm`` (covariates folded into ``decoder.offsets``). Both sides embed the same raw counts
(all genes of the file; each side matches them to the gene list itself):

- **chunks**: the reference's ``CellEmbeddingPipeline.predict`` with ``batch_size`` cells per sentence (each
  ``obs["batch"]`` sample in label order, chunked in file order) and zero Gumbel noise
  (``cellplm_reference.py embed --no-gumbel-noise``); scfm runs ``cell_features`` and
  ``iter_sentences`` (``CellPLMModule.embed_sentence``) on exactly the same cell groups.
- **samples**: the reference with ``batch_size=0`` (each sample is one sentence) against ``scfm.tl.embed`` with
  ``sample_key="batch"`` and a ``context`` larger than every sample (one sentence per sample there too).
- **control**: the reference's default eval mode (hard Gumbel-softmax with noise: a cell's mixture component is
  drawn at random) against the same run without noise, for scale; not part of the pass criterion.
- **NB proportions**: each side's decoder on its own latents of the chunk run; the reference runs its own
  ``NBMLPDecoder`` (``load_pretrain``, inline in the peer environment) and its expected counts are normalised
  per cell, scfm takes ``softmax(decoder(z))``. With covariates the reference decoder gets no covariate label,
  so it adds its summed covariate embeddings; a control row shows scfm's decoder with the folded offsets zeroed.

Printed per shape: per-cell cosine (min and median; target >= 0.999) and the largest absolute difference.
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

from scfm.data import expression_source
from scfm.genes import align_genes
from scfm.models import load_pretrained
from scfm.models.cellplm import cell_features, iter_sentences, write_converted_cellplm
from scfm.tl import embed

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "cellplm_reference.py"
DATA = HERE.parents[1].parent / "shared" / "data" / "integration" / "pbmc_10x_3chemistries.h5ad"
N_GENES = 2000
TARGET = 0.999
# the norm each shape is built with (the released checkpoint uses groupnorm)
NORMS = {"tiny": "layernorm", "paper": "layernorm", "released": "groupnorm"}

# Runs in the peer environment: the reference's own NB decoder on the reference latents.
DECODER_SNIPPET = """
import sys, warnings, numpy as np, torch
warnings.filterwarnings("ignore")
from CellPLM.pipeline import load_pretrain
directory, prefix, latents, out = sys.argv[1:5]
model = load_pretrain(prefix, {}, directory).eval()
with torch.no_grad():
    mean = model.decoder({"h": torch.from_numpy(np.load(latents))})["mean"]
np.save(out, (mean / mean.sum(1, keepdim=True)).numpy())
"""


def peer_python(path: str | None) -> Path:
    python = Path(path) if path else HERE / ".venv-cellplm" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no peer environment at {python}; create it with: bash benchmarks/peers/setup_cellplm_env.sh")
    return python


def load_cells(n_cells: int, seed: int = 0) -> tuple[ad.AnnData, list[str]]:
    """``n_cells`` random cells (file order kept, ``obs["batch"]``) and the 2,000 genes detected in most cells."""
    rng = np.random.default_rng(seed)
    if DATA.exists():
        full = ad.read_h5ad(DATA)
        full.X = sp.csr_matrix(full.X, dtype=np.float32)
    else:
        print(f"{DATA} not found: using synthetic counts", file=sys.stderr)
        genes = [f"SYNTH{i}" for i in range(3000)]
        rates = rng.gamma(0.3, 1.0, size=len(genes))
        counts = rng.poisson(rates, size=(3 * n_cells, len(genes))).astype(np.float32)
        full = ad.AnnData(sp.csr_matrix(counts))
        full.var_names = genes
        full.obs_names = [f"cell{i}" for i in range(full.n_obs)]
        full.obs["batch"] = np.repeat(["s1", "s2", "s3"], n_cells)
    detected = np.asarray((full.X > 0).sum(0)).ravel()
    order = np.argsort(-detected, kind="stable")[:N_GENES]
    genes = [str(g) for g in full.var_names[np.sort(order)]]
    cells = np.sort(rng.choice(full.n_obs, min(n_cells, full.n_obs), replace=False))
    adata = full[cells].copy()
    adata.obs = adata.obs[["batch"]].astype(str)
    return adata, genes


def reference_chunks(batches: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The reference's sentences: samples in sorted label order (its LabelEncoder), file order, ``chunk`` cells."""
    sentences = []
    for label in np.unique(batches):
        cells = np.flatnonzero(batches == label)
        step = chunk if chunk > 0 else len(cells)
        sentences += [cells[start : start + step] for start in range(0, len(cells), step)]
    return sentences


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run(python: Path, *args: object) -> dict:
    """Run ``cellplm_reference.py`` in the peer environment; its last stdout line is a JSON summary."""
    result = subprocess.run([python, REFERENCE, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def row(shape: str, compared: str, params: int, ours: np.ndarray, ref: np.ndarray) -> dict:
    cos = cosine(ours, ref)
    return {
        "model": shape,
        "reference params": f"{params / 1e6:.1f}M",
        "compared": compared,
        "cells": len(cos),
        "min cos": f"{cos.min():.7f}",
        "median cos": f"{np.median(cos):.7f}",
        "max |d|": f"{np.abs(ours - ref).max():.1e}",
    }


def run_shape(shape: str, adata: ad.AnnData, genes: list[str], workdir: Path, python: Path, chunk: int) -> list[dict]:
    ref_dir, prefix, scfm_dir = workdir / f"{shape}-reference", f"parity-{shape}", workdir / f"{shape}-scfm"
    genes_file, cells_file = workdir / "genes.json", workdir / "cells.h5ad"
    genes_file.write_text(json.dumps(genes))
    adata.write_h5ad(cells_file)
    build = ["--config-out", ref_dir, "--prefix", prefix, "--shape", shape, "--genes", genes_file]
    built = run(python, "build", *build, "--norm", NORMS[shape])
    write_converted_cellplm(
        ref_dir / f"{prefix}.config.json", ref_dir / f"{prefix}.best.ckpt", scfm_dir, overwrite=True
    )
    pretrained = load_pretrained(scfm_dir, family="cellplm")
    module, vocab = pretrained.module, pretrained.vocab

    reference = {}
    for name, size, noise in (("chunks", chunk, False), ("samples", 0, False), ("noisy", chunk, True)):
        out = workdir / f"{shape}-{name}.npy"
        args = ["--config-dir", ref_dir, "--prefix", prefix, "--h5ad", cells_file, "--out", out, "--batch-size", size]
        reference[name] = run(python, "embed", *args, *([] if noise else ["--no-gumbel-noise"]))
        reference[name]["embedding"] = np.load(out)
    proportions_file = workdir / f"{shape}-proportions.npy"
    subprocess.run(
        [python, "-c", DECODER_SNIPPET, ref_dir, prefix, workdir / f"{shape}-chunks.npy", proportions_file], check=True
    )

    # scfm on the reference's chunks: stage one over all cells, then one sentence per chunk
    source = expression_source(adata)
    alignment = align_genes(source.var, vocab, min_genes=10)
    features = cell_features(module, source, alignment).features
    ours = np.zeros_like(reference["chunks"]["embedding"])
    sentences = reference_chunks(np.asarray(adata.obs["batch"]), chunk)
    for cells, latent in iter_sentences(module, features, sentences, coordinates=None, device=torch.device("cpu")):
        ours[cells] = latent.numpy()
    with torch.inference_mode():
        proportions = torch.softmax(module.decoder(torch.from_numpy(ours)), -1).numpy()
        offsets = module.decoder.offsets
        if offsets is not None:  # control: the decoder without the folded covariate constants
            saved = offsets.detach().clone()
            offsets.zero_()
            without_offsets = torch.softmax(module.decoder(torch.from_numpy(ours)), -1).numpy()
            offsets.copy_(saved)

    # scfm.tl.embed end to end, one sentence per sample
    tool = adata.copy()
    largest = int(tool.obs["batch"].value_counts().max())
    embed(tool, str(scfm_dir), sample_key="batch", context=max(largest, 2), min_genes=10, progress=False)

    if reference["chunks"]["n_genes_used"] != alignment.n_matched:
        print(
            f"{shape}: the reference used {reference['chunks']['n_genes_used']} genes, scfm matched "
            f"{alignment.n_matched}",
            file=sys.stderr,
        )
    params = int(built["n_params"])
    noisy = reference["noisy"]["embedding"], reference["chunks"]["embedding"]
    per_sample = reference["samples"]["embedding"]
    per_sample = per_sample / np.linalg.norm(per_sample, axis=1, keepdims=True)  # tl.embed L2-normalises
    rows = [
        row(shape, f"embedding, chunks of {chunk}", params, ours, reference["chunks"]["embedding"]),
        row(shape, "embedding, tl.embed per sample", params, tool.obsm["X_scfm"], per_sample),
        row(shape, "NB proportions (chunks)", params, proportions, np.load(proportions_file)),
        row(shape, "control: reference with vs without Gumbel noise", params, *noisy),
    ]
    if offsets is not None:
        control = "control: scfm decoder without the folded offsets vs reference"
        rows.append(row(shape, control, params, without_offsets, np.load(proportions_file)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(NORMS), choices=list(NORMS))
    parser.add_argument("--n-cells", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=100, help="cells per sentence in the chunk comparison")
    parser.add_argument("--peer-python", default=None, help="python of the peer environment")
    parser.add_argument("--workdir", default=None, help="keep the checkpoints and arrays here")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    opts = parser.parse_args()
    python = peer_python(opts.peer_python)
    torch.set_num_threads(2)
    adata, genes = load_cells(opts.n_cells)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for shape in opts.shapes:
            rows += run_shape(shape, adata, genes, workdir, python, opts.chunk)
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    ok = all(float(r["min cos"]) >= TARGET for r in rows if not r["compared"].startswith("control"))
    print("PARITY OK" if ok else "PARITY FAILED")
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Embedding speed and memory: the reference ``scgpt.tasks.embed_data`` vs ``scfm.tl.embed``, same weights, same cells.

    bash benchmarks/peers/setup_scgpt_env.sh                           # once: the peer environment
    .venv/bin/python benchmarks/peers/embed_vs_scgpt.py                # 2,000 cells, whole-human shape
    .venv/bin/python benchmarks/peers/embed_vs_scgpt.py --n-cells 200 --shape tiny   # a quick look

The reference package builds a whole-human-shaped ``TransformerModel`` (12 layers, d_model 512, 8 heads,
60,697 tokens) with random weights and saves it as a published-style checkpoint directory; scfm converts it
(``scfm convert scgpt``). Each side then embeds the same real cells (``integration/pbmc_10x_3chemistries.h5ad``
from ``../shared/data``, raw counts) in its own process on CPU with the same number of torch threads, from an
``.h5ad`` file to embeddings in memory. Printed: cells/s, the ratio, peak resident memory of each process
(the reference's DataLoader workers separately), and the per-cell cosine between the two embeddings.

The reference draws random numbers for values tied to a bin edge and for the genes it keeps when a cell
expresses more than 1,199 genes, so its embeddings differ from run to run; ``--repeat-reference`` runs it
twice to show that floor. ``benchmarks/peers/scgpt_parity.py`` compares both models on identical tokens.
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

import numpy as np
from tabulate import tabulate

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "scgpt_reference.py"
DATA = HERE.parents[1].parent / "shared" / "data" / "integration" / "pbmc_10x_3chemistries.h5ad"
WHOLE_HUMAN_GENES = 60694


def scfm_worker(opts: argparse.Namespace) -> None:
    """Runs in its own process: read the file, embed with scfm, report time and peak memory."""
    import anndata as ad
    import torch

    import scfm

    torch.set_num_threads(opts.threads)
    adata = ad.read_h5ad(opts.h5ad)
    start = time.perf_counter()
    scfm.tl.embed(adata, model=opts.ckpt, batch_size=opts.batch_size, device="cpu", progress=False, min_genes=10)
    seconds = time.perf_counter() - start
    np.save(opts.out, adata.obsm["X_scfm"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "n_cells": adata.n_obs,
                "peak_rss_mib": peak,
                "worker_peak_rss_mib": 0.0,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _run(cmd: list) -> dict:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{result.stderr[-4000:]}")
    return _last_json(result.stdout)


def prepare(opts: argparse.Namespace, workdir: Path, python: Path) -> tuple[Path, Path, Path]:
    import anndata as ad
    import scipy.sparse as sp

    from scfm.models.scgpt import write_converted_checkpoint

    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data")
    adata = ad.read_h5ad(DATA)
    rng = np.random.default_rng(opts.seed)
    adata = adata[np.sort(rng.choice(adata.n_obs, min(opts.n_cells, adata.n_obs), replace=False))].copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    cells = workdir / "cells.h5ad"
    adata.write_h5ad(cells)
    genes = list(dict.fromkeys(map(str, adata.var_names)))
    if opts.shape == "whole-human":
        genes += [f"FILLER{i}" for i in range(WHOLE_HUMAN_GENES - len(genes))]
    (workdir / "genes.json").write_text(json.dumps(genes))
    ref_ckpt, scfm_ckpt = workdir / "reference-checkpoint", workdir / "scfm-checkpoint"
    _run([python, REFERENCE, "build", "--out", ref_ckpt, "--genes", workdir / "genes.json", "--shape", opts.shape])
    write_converted_checkpoint(ref_ckpt, scfm_ckpt, overwrite=True)
    return cells, ref_ckpt, scfm_ckpt


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--shape", choices=["tiny", "whole-human"], default="whole-human")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat-reference", action="store_true", help="run the reference twice (its own noise)")
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--h5ad", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        scfm_worker(opts)
        return
    python = Path(opts.peer_python) if opts.peer_python else HERE / ".venv-scgpt" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no peer environment at {python}; create it with: bash benchmarks/peers/setup_scgpt_env.sh")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cells, ref_ckpt, scfm_ckpt = prepare(opts, workdir, python)
        common = ["--threads", opts.threads, "--batch-size", opts.batch_size]
        runs = {}
        for name in ["reference", "scfm"] + (["reference (repeat)"] if opts.repeat_reference else []):
            out = workdir / f"{name.split()[0]}-{len(runs)}.npy"
            if name.startswith("reference"):
                ref_args = ["embed", "--ckpt", ref_ckpt, "--h5ad", cells, "--out", out, "--gene-col", "index"]
                cmd = [python, REFERENCE, *ref_args, "--seed", len(runs), *common]
            else:
                worker_args = ["--worker", "--h5ad", cells, "--ckpt", scfm_ckpt, "--out", out]
                cmd = [sys.executable, Path(__file__).resolve(), *worker_args, *common]
            runs[name] = _run(cmd) | {"embeddings": np.load(out)}
            print(f"{name}: {runs[name]['seconds']:.1f} s", file=sys.stderr)

    ref = runs["reference"]
    rows, cosine_min = [], {}
    for name, run in runs.items():
        row = {
            "implementation": name,
            "cells": run["n_cells"],
            "seconds": round(run["seconds"], 1),
            "cells/s": round(run["n_cells"] / run["seconds"], 3),
            "speed vs reference": round(ref["seconds"] / run["seconds"], 2),
            "peak RSS MiB": round(run["peak_rss_mib"]),
            "worker peak RSS MiB": round(run["worker_peak_rss_mib"]),
        }
        if name != "reference":
            c = cosine(ref["embeddings"], run["embeddings"])
            cosine_min[name] = float(c.min())
            row |= {"cos vs reference min": f"{c.min():.5f}", "median": f"{np.median(c):.5f}"}
        rows.append(row)
    print(f"shape {opts.shape}, {opts.threads} threads, batch size {opts.batch_size}")
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    if opts.json:
        Path(opts.json).write_text(json.dumps({"rows": rows, "cosine_min": cosine_min}, indent=2))


if __name__ == "__main__":
    main()

"""Embedding speed and memory: the reference ``scgpt.tasks.embed_data`` vs ``scfm.tl.embed``, same weights, same cells.

    bash benchmarks/peers/setup_scgpt_env.sh                           # once: the peer environment
    .venv/bin/python benchmarks/peers/embed_vs_scgpt.py                # 2,000 cells, whole-human shape
    .venv/bin/python benchmarks/peers/embed_vs_scgpt.py --n-cells 200 --shape tiny   # a quick look
    .venv/bin/python benchmarks/peers/embed_vs_scgpt.py --n-cells 200 --precisions fp32 bf16 --families tgpt cellplm

The reference package builds a whole-human-shaped ``TransformerModel`` (12 layers, d_model 512, 8 heads,
60,697 tokens) with random weights and saves it as a published-style checkpoint directory; scfm converts it
(``scfm convert scgpt``). Each side then embeds the same real cells (``integration/pbmc_10x_3chemistries.h5ad``
from ``../shared/data``, raw counts) in its own process on CPU with the same number of torch threads, from an
``.h5ad`` file to embeddings in memory. Printed: cells/s (of the whole call; for scfm also the seconds
``tl.embed`` records for the embedding alone, model load and gene alignment excluded), the ratio, peak resident
memory of each process (the reference's DataLoader workers separately), and the per-cell cosine between the two
embeddings.

``--precisions`` runs scfm once per precision (``tl.embed(precision=...)``: ``fp32`` exact, ``bf16`` autocast).
Besides cells/s and the ratio to the reference, each row reports ``GFLOP/s``: the model FLOPs of the cells (all 12
layers on every real token, ``<cls>`` included, no padding: ``2 t (4 d^2 + 2 d f) + 4 t^2 d`` per layer and cell of
``t`` tokens, the same yardstick for both sides: work a side adds, such as padding, counts as waste, and work it
skips, such as scfm's last layer beyond ``<cls>``, as if done) divided by its seconds, and ``% of peak``: that rate
over the square-matmul GFLOP/s of its precision (fp32 for the reference), measured with the same threads before and
after the runs (the better kept). Each scfm precision is also compared with scfm fp32: per-cell cosine and the share
of cells whose 15 nearest neighbours (cosine) are the same. ``--families`` adds scfm-only rows for bundled models of
other families (``tgpt``, ``cellplm``, ``scmulan``) on the same cells and precisions (their own shapes, so cells/s
only; no reference ratio).

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
    scfm.tl.embed(
        adata,
        model=opts.ckpt,
        batch_size=opts.batch_size,
        device="cpu",
        progress=False,
        min_genes=10,
        precision=opts.precision,
    )
    seconds = time.perf_counter() - start
    np.save(opts.out, adata.obsm["X_scfm"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "embed_seconds": float(adata.uns["scfm"]["X_scfm"]["seconds"]),
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


def same_neighbours(a: np.ndarray, b: np.ndarray, k: int = 15) -> float:
    """Share of cells whose ``k`` nearest other cells (cosine) are the same in ``a`` and ``b``."""

    def knn(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        similarity = x.astype(np.float64) @ x.astype(np.float64).T
        np.fill_diagonal(similarity, -np.inf)
        return np.sort(np.argpartition(-similarity, k - 1, axis=1)[:, :k], axis=1)

    return float((knn(a) == knn(b)).all(1).mean())


def matmul_peaks(threads: int, size: int = 2048) -> dict[str, float]:
    """GFLOP/s of a square matmul in float32 and bf16 with ``threads`` torch threads (best of 1 s of repeats)."""
    import torch

    torch.set_num_threads(threads)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b
        best, start = 0.0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - t) / 1e9)
        peaks[name] = best
    return peaks


def model_flops(cells: Path, genes: list[str], shape: str, max_len: int = 1200) -> float:
    """FLOPs of the whole transformer on every real token of every cell (``<cls>`` + expressed genes, capped)."""
    import anndata as ad

    sys.path.insert(0, str(HERE))
    from scgpt_reference import SHAPES  # the shapes the reference builds (imports no scgpt)

    d, f, n_layers = (SHAPES[shape][key] for key in ("embsize", "d_hid", "nlayers"))
    adata = ad.read_h5ad(cells)
    known = np.isin(adata.var_names.astype(str), genes)
    tokens = np.minimum(np.asarray((adata.X[:, known] > 0).sum(1)).ravel(), max_len - 1) + 1.0
    return float(n_layers * (2 * tokens * (4 * d * d + 2 * d * f) + 4 * tokens**2 * d).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--shape", choices=["tiny", "whole-human"], default="whole-human")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"], help="scfm runs")
    parser.add_argument("--families", nargs="*", default=[], help="bundled models of other families, scfm only")
    parser.add_argument("--repeat-reference", action="store_true", help="run the reference twice (its own noise)")
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--h5ad", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        scfm_worker(opts)
        return
    python = Path(opts.peer_python) if opts.peer_python else HERE / ".venv-scgpt" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no peer environment at {python}; create it with: bash benchmarks/peers/setup_scgpt_env.sh")

    peaks_before = matmul_peaks(opts.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cells, ref_ckpt, scfm_ckpt = prepare(opts, workdir, python)
        flops = model_flops(cells, json.loads((workdir / "genes.json").read_text()), opts.shape)
        common = ["--threads", opts.threads, "--batch-size", opts.batch_size]
        plan = [("reference", None, None)] + [(f"scfm {p}", str(scfm_ckpt), p) for p in opts.precisions]
        plan += [("reference (repeat)", None, None)] if opts.repeat_reference else []
        plan += [(f"scfm {family} (bundled) {p}", family, p) for family in opts.families for p in opts.precisions]
        runs = {}
        for name, ckpt, precision in plan:
            out = workdir / f"run-{len(runs)}.npy"
            if ckpt is None:
                ref_args = ["embed", "--ckpt", ref_ckpt, "--h5ad", cells, "--out", out, "--gene-col", "index"]
                cmd = [python, REFERENCE, *ref_args, "--seed", len(runs), *common]
            else:
                worker_args = ["--worker", "--h5ad", cells, "--ckpt", ckpt, "--out", out, "--precision", precision]
                cmd = [sys.executable, Path(__file__).resolve(), *worker_args, *common]
            runs[name] = _run(cmd) | {"embeddings": np.load(out), "precision": precision or "fp32"}
            print(f"{name}: {runs[name]['seconds']:.1f} s", file=sys.stderr)
    peaks_after = matmul_peaks(opts.threads)
    peaks = {p: max(peaks_before[p], peaks_after[p]) for p in peaks_before}

    ref = runs["reference"]
    rows, cosine_min = [], {}
    for name, run in runs.items():
        own_shape = "bundled" not in name
        rate = flops / run["seconds"] / 1e9 if own_shape else None
        row = {
            "implementation": name,
            "cells": run["n_cells"],
            "seconds": round(run["seconds"], 1),
            "of which embedding s": f"{run['embed_seconds']:.1f}" if "embed_seconds" in run else "",
            "cells/s": round(run["n_cells"] / run["seconds"], 3),
            "speed vs reference": round(ref["seconds"] / run["seconds"], 2) if own_shape else "",
            "GFLOP/s": f"{rate:.0f}" if rate else "",
            "% of peak": f"{100 * rate / peaks[run['precision']]:.0f}%" if rate else "",
            "peak RSS MiB": round(run["peak_rss_mib"]),
            "worker peak RSS MiB": round(run["worker_peak_rss_mib"]),
        }
        if name != "reference" and own_shape:
            c = cosine(ref["embeddings"], run["embeddings"])
            cosine_min[name] = float(c.min())
            row |= {"cos vs reference min": f"{c.min():.5f}", "median": f"{np.median(c):.5f}"}
        exact_name = "scfm fp32" if own_shape else name.rsplit(" ", 1)[0] + " fp32"
        if run["precision"] != "fp32" and exact_name in runs and name.startswith("scfm"):
            c = cosine(runs[exact_name]["embeddings"], run["embeddings"])
            row |= {
                "cos vs scfm fp32 min": f"{c.min():.6f}",
                "same 15-NN as fp32": f"{same_neighbours(runs[exact_name]['embeddings'], run['embeddings']):.3f}",
            }
        rows.append(row)
    print(
        f"shape {opts.shape}, {opts.threads} threads, batch size {opts.batch_size}; model {flops / 1e9:.0f} GFLOP "
        f"({flops / ref['n_cells'] / 1e9:.1f} per cell); matmul 2048^2 peak GFLOP/s: "
        + ", ".join(f"{p} {v:.0f} (before {peaks_before[p]:.0f}, after {peaks_after[p]:.0f})" for p, v in peaks.items())
    )
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    if opts.json:
        Path(opts.json).write_text(
            json.dumps({"rows": rows, "cosine_min": cosine_min, "peaks": peaks, "model_gflop": flops / 1e9}, indent=2)
        )


if __name__ == "__main__":
    main()

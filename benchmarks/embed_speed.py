"""Speed and memory of ``scfm.tl.embed`` on synthetic counts, in memory and backed, with and without bucketing.

Command used for ``docs/benchmarks.md``::

    python benchmarks/embed_speed.py

(defaults: the bundled default checkpoint, 10,000 / 50,000 / 100,000 cells, batch size 64, seed 0, torch's
default number of threads; add ``--json results.json`` to keep the rows, ``--workdir DIR`` to keep the data).

``python benchmarks/embed_speed.py --profile [--threads 2 --profile-cells 32]`` instead profiles ``tl.embed`` at the
whole-human shape (12 layers, d_model 512, 8 heads, random weights, synthetic cells of ~565 genes) in fp32 and bf16:
seconds by group of torch ops (QKV and other GEMMs, attention, copies/casts, layer norm, residual adds, activation,
the rest outside torch ops), achieved GFLOP/s against the GEMM peak measured in the same run, and padding waste. The
profiler is :func:`run_profile` of ``benchmarks/precision.py``, which documents it.

What is measured
----------------
Data
    Synthetic raw counts over the model's first 20,000 vocabulary genes, shaped like 10x PBMC data: genes per
    cell are log-normal (median 1,000, clipped to [200, 5,000]); genes have Zipf-like popularity (weight
    ``1 / rank``, ranks shuffled over the vocabulary), a gene is detected in a cell with probability
    ``1 - exp(-s * w)`` where the cell's scale ``s`` is solved so that the expected number of detected genes is
    the cell's target; a detected gene's count is geometric with the mean of a zero-truncated Poisson (mostly
    1-3, long tail for popular genes; about 2,000 UMIs per cell). Cells are generated in chunks of 1,000 from
    ``--seed`` and the chunk index, so a smaller data set is exactly the first rows of a larger one. Each size is
    written once as a CSR ``.h5ad`` and reused by every mode.
Modes (one row each, every run in a fresh Python subprocess)
    ``csr``
        ``anndata.read_h5ad(path)`` (the whole CSR matrix in memory), then ``scfm.tl.embed``.
    ``backed``
        ``anndata.read_h5ad(path, backed="r")``, then ``scfm.tl.embed``, which streams row blocks from disk.
    ``padded`` / ``bucketed``
        ``scfm.models.scgpt.embed_cells`` on the first ``--padding-size`` cells (in memory), with every cell
        padded to the model's full context (``bucketing=False``, the naive scheme) or with length-bucketed
        batches (``bucketing=True``, what ``tl.embed`` does). Source and gene alignment are built as in
        ``tl.embed`` (``scfm.data.expression_source``, ``scfm.genes.align_genes``).
Numbers
    ``load s``: model load plus data read (not part of the embedding time; data generation is never timed).
    ``embed s``: wall time of the embedding call alone (model already loaded and on the device).
    ``peak RSS``: peak resident memory of the subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).
    ``embed ΔRSS``: peak resident memory during the embedding call minus the resident memory just before it,
    i.e. the embedding's own footprint. On Linux the peak is reset (``/proc/self/clear_refs``) right before the
    call so that a higher peak while loading cannot hide it; elsewhere it is an upper bound.

The summary reports seconds per 1,000 cells at each size (constant means linear scaling), the peak RSS of
``backed`` across sizes (flat means memory does not grow with the data), the bucketing speed-up
(padded seconds / bucketed seconds) and, as sanity checks, the largest difference between the embeddings of
``csr`` and ``backed`` and of ``padded`` and ``bucketed`` (first 2,048 cells).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

MARKER = "@@embed_speed@@ "
CHUNK_CELLS = 1000
MAX_GENES = 20_000
GENES_MEDIAN, GENES_SIGMA, GENES_MIN, GENES_MAX = 1000.0, 0.6, 200, 5000
ZIPF_EXPONENT = 1.0
DATA_VERSION = 1
N_SAVED_EMBEDDINGS = 2048
MODES = ("csr", "backed")


# ----------------------------------------------------------------------------------------------------------------------
# synthetic data
# ----------------------------------------------------------------------------------------------------------------------
def _gene_weights(n_genes: int, seed: int) -> np.ndarray:
    """Zipf-like relative expression of each gene (sums to 1), popularity ranks shuffled over the genes."""
    ranks = np.random.default_rng([seed, 0]).permutation(n_genes) + 1
    weights = 1.0 / ranks.astype(np.float64) ** ZIPF_EXPONENT
    return weights / weights.sum()


def _scale_lookup(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected detected genes ``sum(1 - exp(-s * w))`` on a log grid of cell scales ``s`` (increasing in ``s``)."""
    log_scales = np.linspace(0.0, np.log(1e10), 2000)
    expected = np.array([-np.expm1(-np.exp(log_s) * weights).sum() for log_s in log_scales])
    return expected, log_scales


def synthetic_chunk(
    chunk: int, n_cells: int, weights: np.ndarray, lookup: tuple[np.ndarray, np.ndarray], seed: int
) -> sp.csr_matrix:
    """Counts of ``n_cells`` cells (CSR, float32) for chunk number ``chunk``; deterministic in ``(seed, chunk)``.

    Parameters
    ----------
    chunk
        Chunk index (seeds the generator together with ``seed``).
    n_cells
        Rows to generate (``CHUNK_CELLS`` except for the last chunk of a data set).
    weights
        Relative expression of each gene, from :func:`_gene_weights`.
    lookup
        Expected detected genes per cell scale, from :func:`_scale_lookup`.
    seed
        Data seed.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n_cells x len(weights)`` counts.
    """
    import scipy.sparse as sp  # imported here: the parent process stays lean

    rng = np.random.default_rng([seed, 1, chunk])
    n_genes = len(weights)
    target = rng.lognormal(np.log(GENES_MEDIAN), GENES_SIGMA, n_cells)
    target = np.clip(target, min(GENES_MIN, n_genes // 10), min(GENES_MAX, n_genes // 2))
    expected, log_scales = lookup
    scales = np.exp(np.interp(target, expected, log_scales)).astype(np.float32)
    rate = scales[:, None] * weights.astype(np.float32)[None, :]
    detect = -np.expm1(-rate)
    rows, cols = np.nonzero(rng.random(rate.shape, dtype=np.float32) < detect)
    mean_rate = rate[rows, cols].astype(np.float64)
    # geometric with the mean of a zero-truncated Poisson: lambda / (1 - exp(-lambda))
    success = np.clip(-np.expm1(-mean_rate) / mean_rate, 1e-6, 1.0)
    counts = rng.geometric(success).astype(np.float32)
    return sp.csr_matrix((counts, (rows, cols)), shape=(n_cells, n_genes), dtype=np.float32)


def generate_datasets(model: str | None, sizes: list[int], workdir: Path, seed: int) -> dict[str, Any]:
    """Write ``synthetic_<n>.h5ad`` for each size (one pass, CSR appended chunk by chunk); existing files are reused.

    Parameters
    ----------
    model
        Checkpoint (``None`` for the bundled default) whose vocabulary genes become ``var_names``.
    sizes
        Numbers of cells.
    workdir
        Where the files go; names include the seed and the vocabulary fingerprint.
    seed
        Data seed.

    Returns
    -------
    dict
        ``paths`` (size -> file), ``n_genes``, ``generate_s``, and per-file statistics.
    """
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    from scfm.models import load_pretrained

    vocab = load_pretrained(model).vocab
    genes = list(vocab.genes)[:MAX_GENES]
    tag = f"v{DATA_VERSION}_seed{seed}_genes{len(genes)}_{vocab.fingerprint()[:10]}"
    paths = {n: workdir / f"synthetic_{n}_{tag}.h5ad" for n in sorted(set(sizes))}
    missing = sorted(n for n, path in paths.items() if not path.exists())
    start = time.perf_counter()
    if missing:
        weights = _gene_weights(len(genes), seed)
        lookup = _scale_lookup(weights)
        partial = {n: paths[n].with_suffix(".partial") for n in missing}
        var = pd.DataFrame(index=pd.Index(genes, name="gene"))
        for n in missing:
            obs = pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n)], name="cell"))
            ad.AnnData(obs=obs, var=var).write_h5ad(partial[n])
        handles = {n: h5py.File(partial[n], "a") for n in missing}
        try:
            for chunk, first in enumerate(range(0, max(missing), CHUNK_CELLS)):
                block = synthetic_chunk(chunk, min(CHUNK_CELLS, max(missing) - first), weights, lookup, seed)
                for n, handle in handles.items():
                    if first >= n:
                        continue
                    part = block[: n - first]
                    if "X" in handle:
                        sparse_dataset(handle["X"]).append(part)
                    else:
                        write_elem(handle, "X", part)
        finally:
            for handle in handles.values():
                handle.close()
        for n in missing:
            partial[n].rename(paths[n])
    stats = {}
    for n, path in paths.items():
        backed = ad.read_h5ad(path, backed="r")
        with h5py.File(path, "r") as handle:
            indptr = handle["X"]["indptr"][:]
        genes_per_cell = np.diff(indptr)
        stats[n] = {
            "shape": list(backed.shape),
            "median_genes_per_cell": float(np.median(genes_per_cell)),
            "nnz": int(indptr[-1]),
            "file_mib": path.stat().st_size / 2**20,
        }
        backed.file.close()
    return {
        "paths": {str(n): str(path) for n, path in paths.items()},
        "generated": missing,
        "n_genes": len(genes),
        "generate_s": time.perf_counter() - start,
        "stats": {str(n): value for n, value in stats.items()},
    }


# ----------------------------------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident memory of this process (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mib() -> float:
    """Resident memory now (``/proc/self/statm`` on Linux, psutil elsewhere, else the peak as an upper bound)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return peak_rss_mib()


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# child process: one measurement
# ----------------------------------------------------------------------------------------------------------------------
def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process.

    Parameters
    ----------
    spec
        ``mode`` (``generate``, ``csr``, ``backed``, ``padded`` or ``bucketed``), data path, number of cells,
        model, batch size, device, threads, and where to save embeddings.

    Returns
    -------
    dict
        The row: timings (seconds), memory (MiB) and run details.
    """
    if spec["mode"] == "generate":
        return generate_datasets(spec["model"], spec["sizes"], Path(spec["workdir"]), spec["seed"])

    import torch

    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    import anndata as ad

    import scfm
    from scfm.data import expression_source
    from scfm.genes import align_genes
    from scfm.models import load_pretrained, resolve_device
    from scfm.models.scgpt import embed_cells

    mode = spec["mode"]
    start = time.perf_counter()
    pretrained = load_pretrained(spec["model"])
    device = resolve_device(spec["device"])
    pretrained.module.to(device)  # weights on the device (and CUDA initialised) before the clock starts
    model_load_s = time.perf_counter() - start

    start = time.perf_counter()
    adata = ad.read_h5ad(spec["path"], backed="r" if mode == "backed" else None)
    data_load_s = time.perf_counter() - start
    if adata.n_obs != spec["cells"]:
        raise RuntimeError(f"{spec['path']} has {adata.n_obs} cells, expected {spec['cells']}")
    if mode in ("padded", "bucketed"):
        source = expression_source(adata)
        alignment = align_genes(source.var, pretrained.vocab)

    gc.collect()
    load_peak = peak_rss_mib()
    rss_before = current_rss_mib()
    exact = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if mode in MODES:
        scfm.tl.embed(
            adata,
            pretrained,
            batch_size=spec["batch_size"],
            device=spec["device"],
            max_len=spec.get("max_len"),
            progress=False,
        )
        seconds = time.perf_counter() - start
        embeddings = adata.obsm["X_scfm"]
        tokens_per_cell = adata.uns["scfm"]["X_scfm"]["mean_tokens_per_cell"]
    else:
        result = embed_cells(
            pretrained.module,
            source,
            alignment,
            device=device,
            batch_size=spec["batch_size"],
            bucketing=mode == "bucketed",
            max_len=spec.get("max_len"),
            progress=False,
        )
        seconds = time.perf_counter() - start
        embeddings = result.embeddings
        tokens_per_cell = result.n_tokens / adata.n_obs
    embed_peak = peak_rss_mib()
    if spec.get("save_embeddings"):
        np.save(spec["save_embeddings"], np.asarray(embeddings[:N_SAVED_EMBEDDINGS], dtype=np.float32))
    row = {
        "cells": int(adata.n_obs),
        "mode": mode,
        "model_load_s": model_load_s,
        "data_load_s": data_load_s,
        "load_s": model_load_s + data_load_s,
        "seconds": seconds,
        "cells_per_s": adata.n_obs / seconds,
        "tokens_per_cell": float(tokens_per_cell),
        "peak_rss_mib": max(load_peak, embed_peak),
        "rss_before_embed_mib": rss_before,
        "embed_rss_mib": embed_peak - rss_before,
        "embed_rss_exact": exact,
        "max_len": spec.get("max_len") or pretrained.module.config.max_len,
        "batch_size": spec["batch_size"],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "scfm": getattr(scfm, "__version__", "unknown"),
        "checkpoint": pretrained.path,
        "checkpoint_sha256": pretrained.sha256,
    }
    if device.type == "cuda":
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


# ----------------------------------------------------------------------------------------------------------------------
# parent process: orchestration and report
# ----------------------------------------------------------------------------------------------------------------------
def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`run_child` in a fresh Python process and return its JSON result (``error`` set on failure)."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
    return {"error": f"exit status {completed.returncode}:\n{tail}"}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One markdown row per run."""
    header = (
        "| cells | mode | load s | embed s | cells/s | s / 1k cells | tokens/cell | peak RSS MiB | embed ΔRSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    )
    lines = list(header)
    for row in rows:
        if "error" in row:
            lines.append(f"| {_fmt(row['cells'])} | {row['mode']} | failed | | | | | | |")
            continue
        delta = _fmt(row["embed_rss_mib"], 0) + ("" if row["embed_rss_exact"] else " (≤)")
        lines.append(
            f"| {_fmt(row['cells'])} | {row['mode']} | {_fmt(row['load_s'], 2)} | {_fmt(row['seconds'], 2)} "
            f"| {_fmt(row['cells_per_s'], 0)} | {_fmt(1000 * row['seconds'] / row['cells'], 3)} "
            f"| {_fmt(row['tokens_per_cell'], 0)} | {_fmt(row['peak_rss_mib'], 0)} | {delta} |"
        )
    return "\n".join(lines)


def _max_abs_diff(a: Path, b: Path) -> float | None:
    if not (a.exists() and b.exists()):
        return None
    return float(np.abs(np.load(a) - np.load(b)).max())


def summary(rows: list[dict[str, Any]], diffs: dict[str, float | None]) -> list[str]:
    """Scaling, backed memory across sizes, bucketing speed-up and embedding agreement, one line each."""
    ok = [row for row in rows if "error" not in row]
    lines = []
    for mode in MODES:
        runs = sorted((row for row in ok if row["mode"] == mode), key=lambda row: row["cells"])
        if not runs:
            continue
        per_k = [1000 * row["seconds"] / row["cells"] for row in runs]
        values = ", ".join(f"{v:.3f} @ {row['cells']:,}" for v, row in zip(per_k, runs, strict=True))
        lines.append(f"scaling {mode}: s per 1k cells {values} (max/min {max(per_k) / min(per_k):.2f}; 1.00 = linear)")
    backed = sorted((row for row in ok if row["mode"] == "backed"), key=lambda row: row["cells"])
    if backed:
        peaks = [row["peak_rss_mib"] for row in backed]
        values = ", ".join(f"{p:,.0f} @ {row['cells']:,}" for p, row in zip(peaks, backed, strict=True))
        spread = (max(peaks) - min(peaks)) / min(peaks)
        verdict = "flat" if spread <= 0.10 else "grows with cells"
        lines.append(f"backed peak RSS MiB: {values} (spread {100 * spread:.0f}%: {verdict})")
    padded = next((row for row in ok if row["mode"] == "padded"), None)
    bucketed = next((row for row in ok if row["mode"] == "bucketed"), None)
    if padded and bucketed:
        lines.append(
            f"bucketing speed-up on {padded['cells']:,} cells: padded {padded['seconds']:.2f} s "
            f"({padded['tokens_per_cell']:.0f} tokens/cell), bucketed {bucketed['seconds']:.2f} s "
            f"({bucketed['tokens_per_cell']:.0f} tokens/cell) -> {padded['seconds'] / bucketed['seconds']:.2f}x"
        )
    for name, value in diffs.items():
        shown = "–" if value is None else f"{value:.2e}"
        lines.append(f"max |Δ embedding| {name} (first {N_SAVED_EMBEDDINGS:,} cells): {shown}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000, 100_000], help="numbers of cells")
    parser.add_argument("--padding-size", type=int, default=10_000, help="cells for the padded vs bucketed runs")
    parser.add_argument("--model", default=None, help="checkpoint directory or bundled name (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=None, help="tokens per cell (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the children (default: torch's)")
    parser.add_argument("--device", default="auto", help="as in scfm.tl.embed (default: auto)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated data here (default: temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--json", type=Path, default=None, help="save the rows (and run metadata) as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: where the time of tl.embed goes at the whole-human shape, fp32 and bf16 (see precision.py)",
    )
    parser.add_argument("--profile-cells", type=int, default=32, help="synthetic cells of --profile")
    parser.add_argument("--profile-repeats", type=int, default=2, help="profiles of each precision (fastest kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.padding_size < 0 or args.batch_size < 1:
        parser.error("--sizes and --batch-size must be >= 1, --padding-size >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from precision import run_profile  # the one profiler, shared with benchmarks/precision.py

        results = run_profile(n_cells=args.profile_cells, threads=args.threads or 2, repeats=args.profile_repeats)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return 0
    if args.child is not None:
        print(MARKER + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0

    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="scfm_embed_speed_")
    workdir = Path(temp.name) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _benchmark(args, workdir)
    finally:
        if temp is not None:
            temp.cleanup()


def _benchmark(args: argparse.Namespace, workdir: Path) -> int:
    common = {
        "model": args.model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device": args.device,
        "max_len": args.max_len,
    }
    sizes = sorted(set(args.sizes))
    all_sizes = sizes + ([args.padding_size] if args.padding_size else [])
    print(f"generating synthetic data for {', '.join(f'{n:,}' for n in sorted(set(all_sizes)))} cells in {workdir}")
    data = spawn({"mode": "generate", "sizes": all_sizes, "workdir": str(workdir), "seed": args.seed, **common})
    if "error" in data:
        print(f"data generation failed: {data['error']}", file=sys.stderr)
        return 1
    for n, stats in data["stats"].items():
        print(
            f"  {int(n):>9,} cells x {stats['shape'][1]:,} genes: median {stats['median_genes_per_cell']:,.0f} "
            f"genes/cell, {stats['file_mib']:,.0f} MiB"
        )
    print(f"  ({data['generate_s']:.1f} s; reused: {sorted(set(all_sizes) - set(data['generated'])) or 'none'})")

    embeddings = workdir / "embeddings"
    embeddings.mkdir(exist_ok=True)
    plan = [(n, mode) for n in sizes for mode in MODES]
    if args.padding_size:
        plan += [(args.padding_size, "padded"), (args.padding_size, "bucketed")]
    rows = []
    for n, mode in plan:
        print(f"running {mode} on {n:,} cells ...", flush=True)
        spec = {
            "mode": mode,
            "cells": n,
            "path": data["paths"][str(n)],
            "save_embeddings": str(embeddings / f"{mode}_{n}.npy"),
            **common,
        }
        row = spawn(spec)
        if "error" in row:
            print(f"  failed: {row['error']}", file=sys.stderr)
            row.update(cells=n, mode=mode)
        rows.append(row)

    diffs = {
        f"csr vs backed @ {n:,}": _max_abs_diff(embeddings / f"csr_{n}.npy", embeddings / f"backed_{n}.npy")
        for n in sizes
    }
    if args.padding_size:
        n = args.padding_size
        diffs["padded vs bucketed"] = _max_abs_diff(embeddings / f"padded_{n}.npy", embeddings / f"bucketed_{n}.npy")

    first = next((row for row in rows if "error" not in row), {})
    meta = {
        "command": shlex.join(["python", "benchmarks/embed_speed.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "n_genes": data["n_genes"],
        "seed": args.seed,
        "data": data["stats"],
        **{key: first.get(key) for key in ("torch", "scfm", "device", "threads", "checkpoint", "checkpoint_sha256")},
        "max_len": first.get("max_len"),
        "batch_size": args.batch_size,
        "embedding_max_abs_diff": diffs,
    }
    print()
    print(
        f"scfm {meta['scfm']}, torch {meta['torch']}, device {meta['device']}, {meta['threads']} threads, "
        f"{meta['cpu_count']} CPUs, batch size {args.batch_size}, max_len {meta['max_len']}, "
        f"checkpoint {meta['checkpoint']} ({str(meta['checkpoint_sha256'])[:12]})"
    )
    print()
    print(markdown_table(rows))
    print()
    for line in summary(rows, diffs):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"\nrows written to {args.json}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

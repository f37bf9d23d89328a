"""``scfm.tl.embed(precision="bf16")`` against the exact float32 default: speed, per-cell cosine, kNN agreement.

Commands used for ``docs/benchmarks.md`` (the second is the profile alone)::

    python benchmarks/precision.py --cells 500 --synthetic-cells 0
    python benchmarks/embed_speed.py --profile --threads 2 --profile-cells 16

What is measured (one process, ``--threads`` torch threads, default 2)
--------------------------------------------------------------------
GEMM peak
    GFLOP/s of a square ``--gemm-size`` matmul in float32 and in bf16, and of ``F.linear`` on a
    ``(8192, 512) x (512, 512)`` problem in float32, under CPU bf16 autocast (the kernel the models use) and
    int8 dynamically quantised (``torch.ao.quantization.quantize_dynamic``; not an scfm option, for comparison).
    Each is repeated until one second has passed (at least once).
Bundled models on real cells
    The first ``--cells`` cells of ``--data`` (default: the Zheng 2017 sorted PBMC reference, raw counts) are
    embedded by ``scfm.tl.embed(adata, model=name, precision=p)`` for each bundled model and both precisions,
    after a 16-cell warm-up of each precision. ``fp32 s`` / ``bf16 s`` are the embedding times ``tl.embed``
    records (model load excluded). ``cos min/median``: per-cell cosine of the bf16 embedding to the fp32 one.
    ``kNN`` uses the 15 nearest neighbours of every cell (cosine, self excluded) in each embedding:
    ``kNN overlap`` is the mean share of a cell's 15 fp32 neighbours found among its 15 bf16 neighbours,
    ``same 15-NN`` the fraction of cells whose two neighbour sets are identical (15 of 15), ``>= 14/15`` the
    fraction that share at least 14. ``15th-16th gap``: median over cells of the cosine gap between a cell's
    15th and 16th fp32 neighbours; ``cos change``: median over cells of the largest change, fp32 to bf16, of a
    cell's cosine to another cell. Neighbour sets change where the change reaches the gap. ``GFLOP/s`` divides
    the FLOPs of the forward passes (counted once, in float32, by ``torch.utils.flop_counter.FlopCounterMode``:
    matmul, linear, attention) by each time.
Whole-human-shaped scGPT
    A random-weight scGPT model with 12 layers, d_model 512, 8 heads, feed-forward 512 and a 1,200-token
    context, built in memory on ``--synthetic-cells`` synthetic cells expressing ~565 of 8,000 genes each (the
    whole-human checkpoint's shape at the cell size of the reference comparison); same columns.
``--profile`` (also ``benchmarks/embed_speed.py --profile``)
    :func:`run_profile`: ``torch.profiler`` over ``tl.embed`` of ``--profile-cells`` whole-human-shaped cells, fp32
    and bf16 alternating twice (the faster of each kept). Self CPU time of torch ops is grouped (QKV projection,
    other GEMMs, attention, copies and casts, layer norm, residual adds, activation, other ops); the rest of the wall
    time is tokenisation, batching and Python. FLOPs come from the recorded shapes of the matrix products and of
    attention, so each group's GFLOP/s is printed against the square-matmul peak of its precision measured in the
    same run (before and after the profiles, the better kept), with the padding waste of the batches.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.flop_counter import FlopCounterMode

import scfm
from scfm.models.base._device import cpu_has_native_bf16

DEFAULT_DATA = "/work/shared/data/annotation/pbmc_zheng2017_sorted_reference.h5ad"
BUNDLED = ("scgpt", "tgpt", "scmulan", "cellplm")
K = 15
WHOLE_HUMAN = {"n_layers": 12, "d_model": 512, "n_heads": 8, "d_hidden": 512, "max_len": 1200}


# ----------------------------------------------------------------------------------------------------------------------
# hardware
# ----------------------------------------------------------------------------------------------------------------------
def _rate(flops: float, step) -> float:
    """GFLOP/s of ``step()`` (``flops`` each), repeated until one second has passed, after one warm-up call."""
    step()
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < 1.0:
        step()
        n += 1
    return flops * n / (time.perf_counter() - start) / 1e9


def gemm_peaks(size: int) -> dict[str, float]:
    """GFLOP/s of a square matmul (float32, bf16) and of a linear layer (float32, bf16 autocast, int8 dynamic)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    x, w = torch.randn(8192, 512), torch.randn(512, 512)
    linear_flops = 2 * 8192 * 512 * 512

    def linear_bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(x, w)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(512, 512, bias=False)), {torch.nn.Linear}, dtype=torch.qint8
        )
    return {
        "matmul_fp32": _rate(2 * size**3, lambda: a @ b),
        "matmul_bf16": _rate(2 * size**3, lambda: a16 @ b16),
        "linear_fp32": _rate(linear_flops, lambda: torch.nn.functional.linear(x, w)),
        "linear_bf16_autocast": _rate(linear_flops, linear_bf16),
        "linear_int8_dynamic": _rate(linear_flops, lambda: int8(x)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# agreement
# ----------------------------------------------------------------------------------------------------------------------
def similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows (rows are unit vectors), ``-inf`` on the diagonal."""
    similarity = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def neighbours(similarity: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the ``k`` most similar other rows of every row."""
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]


def agreement(exact: np.ndarray, reduced: np.ndarray) -> dict[str, float]:
    """Per-cell cosine (min, median) and 15-NN agreement of ``reduced`` against ``exact``.

    Also what explains neighbour changes: the median (over cells) gap between the cosine of a cell's 15th and 16th
    fp32 neighbours, and the median largest change of a cell's cosines to the other cells from fp32 to bf16.
    """
    cos = (exact.astype(np.float64) * reduced.astype(np.float64)).sum(1)
    k = min(K, len(exact) - 2)
    s_exact, s_reduced = similarities(exact), similarities(reduced)
    a, b = neighbours(s_exact, k), neighbours(s_reduced, k)
    shared = np.array([len(np.intersect1d(x, y)) for x, y in zip(a, b, strict=True)])
    ranked = -np.sort(-s_exact, axis=1)
    finite = np.isfinite(s_exact)
    change = np.where(finite, np.abs(s_exact - np.where(finite, s_reduced, 0)), 0).max(1)
    return {
        "cos_min": float(cos.min()),
        "cos_median": float(np.median(cos)),
        "k": k,
        "knn_overlap": float((shared / k).mean()),
        "knn_same": float((shared == k).mean()),
        "knn_14": float((shared >= k - 1).mean()),
        "gap_k_median": float(np.median(ranked[:, k - 1] - ranked[:, k])),
        "similarity_change_median": float(np.median(change)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------------------------
def embed_once(adata: ad.AnnData, model, precision: str, **kwargs) -> tuple[np.ndarray, float]:
    """``tl.embed`` on a copy: the embeddings and the seconds ``tl.embed`` records."""
    data = adata.copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16")
        scfm.tl.embed(data, model=model, precision=precision, device="cpu", progress=False, **kwargs)
    return data.obsm["X_scfm"], float(data.uns["scfm"]["X_scfm"]["seconds"])


def count_flops(adata: ad.AnnData, model, **kwargs) -> float:
    """FLOPs of one float32 embedding of ``adata`` (matmul, linear, attention), counted by torch."""
    counter = FlopCounterMode(display=False)
    with counter:
        embed_once(adata, model, "fp32", **kwargs)
    return float(counter.get_total_flops())


def compare(name: str, adata: ad.AnnData, model, **kwargs) -> dict:
    """fp32 vs bf16 on ``adata``: seconds, cells/s, agreement and achieved GFLOP/s."""
    for precision in ("fp32", "bf16"):
        embed_once(adata[: min(16, adata.n_obs)], model, precision, **kwargs)
    exact, fp32_s = embed_once(adata, model, "fp32", **kwargs)
    reduced, bf16_s = embed_once(adata, model, "bf16", **kwargs)
    flops = count_flops(adata, model, **kwargs)
    row = {
        "model": name,
        "cells": adata.n_obs,
        "fp32_s": fp32_s,
        "bf16_s": bf16_s,
        "speedup": fp32_s / bf16_s,
        "fp32_cells_s": adata.n_obs / fp32_s,
        "bf16_cells_s": adata.n_obs / bf16_s,
        "gflop": flops / 1e9,
        "fp32_gflops": flops / fp32_s / 1e9,
        "bf16_gflops": flops / bf16_s / 1e9,
        **agreement(exact, reduced),
    }
    print(_format_row(row), flush=True)
    return row


def synthetic_cells(genes: list[str], n_cells: int, seed: int = 0, expressed: int = 565) -> ad.AnnData:
    """Raw counts: each cell expresses ~``expressed`` genes (Poisson) drawn with Zipf-like weights."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(genes) + 1)
    weights = rng.permutation(weights / weights.sum())
    rows = []
    for _ in range(n_cells):
        n = min(int(rng.poisson(expressed)), len(genes))
        columns = np.sort(rng.choice(len(genes), n, replace=False, p=weights))
        counts = rng.geometric(0.5, n).astype(np.float32)
        rows.append(sp.csr_matrix((counts, columns, [0, n]), shape=(1, len(genes))))
    adata = ad.AnnData(sp.vstack(rows).tocsr())
    adata.var_names = genes
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    return adata


def whole_human_model(adata: ad.AnnData):
    """A random-weight scGPT model of the whole-human checkpoint's shape on ``adata``'s genes."""
    from scfm.models import SCGPT

    torch.manual_seed(0)
    data = adata.copy()
    SCGPT.setup_anndata(data)
    return SCGPT(data, **WHOLE_HUMAN)


# ----------------------------------------------------------------------------------------------------------------------
# profile (also run by ``benchmarks/embed_speed.py --profile``)
# ----------------------------------------------------------------------------------------------------------------------
PROFILE_GROUPS = (
    "GEMM: QKV projection",
    "GEMM: out-projection + feed-forward",
    "attention (SDPA)",
    "copies and casts",
    "layer norm",
    "residual adds",
    "activation",
    "other torch ops",
    "outside torch ops (tokenisation, batching, Python)",
)


def _event_group(name: str, shapes: list, d_model: int) -> tuple[str, float]:
    """Profile group of one aggregated torch op and the FLOPs of one call (matrix products and attention only)."""
    if name == "aten::addmm" and len(shapes) >= 3 and len(shapes[1]) == 2 and len(shapes[2]) == 2:
        (m, k), (_, n) = shapes[1], shapes[2]
        group = "GEMM: QKV projection" if n == 3 * d_model else "GEMM: out-projection + feed-forward"
        return group, 2.0 * m * k * n
    if name == "aten::mm" and len(shapes) >= 2 and len(shapes[0]) == 2 and len(shapes[1]) == 2:
        (m, k), (_, n) = shapes[0], shapes[1]
        return "GEMM: out-projection + feed-forward", 2.0 * m * k * n
    if "scaled_dot_product" in name and "_efficient" not in name and name.startswith("aten::_"):
        (b, h, lq, e), (_, _, lk, _) = shapes[0], shapes[1]
        return "attention (SDPA)", 4.0 * b * h * lq * lk * e
    if name in ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"):
        return "copies and casts", 0.0
    if "layer_norm" in name:
        return "layer norm", 0.0
    if name in ("aten::add", "aten::add_"):
        return "residual adds", 0.0
    if name in ("aten::clamp_min", "aten::relu", "aten::gelu", "aten::relu_"):
        return "activation", 0.0
    return "other torch ops", 0.0


def profile_embedding(adata: ad.AnnData, model, precision: str, d_model: int) -> dict:
    """One profiled ``tl.embed`` (after an unprofiled warm-up): seconds and FLOPs by group, padding, wall.

    Seconds are the self CPU time of torch ops (``torch.profiler``, 2 threads share one clock), grouped by
    :data:`PROFILE_GROUPS`; the wall time not spent in torch ops is tokenisation, batching and Python. FLOPs come from
    the recorded input shapes of the matrix products (``addmm``/``mm``: ``2mkn``) and of attention
    (``4 b h l_q l_k e``); padded tokens from the attention calls of full layers (``l_q == l_k``).
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    embed_once(adata[: min(4, adata.n_obs)], model, precision)
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        data = adata.copy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16")
            scfm.tl.embed(data, model=model, precision=precision, device="cpu", progress=False)
    wall = time.perf_counter() - start
    seconds = dict.fromkeys(PROFILE_GROUPS, 0.0)
    flops = dict.fromkeys(PROFILE_GROUPS, 0.0)
    padded_tokens = full_layer_calls = 0
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = [list(s) for s in (event.input_shapes or [])]
        group, call_flops = _event_group(event.key, shapes, d_model)
        seconds[group] += event.self_cpu_time_total / 1e6
        flops[group] += call_flops * event.count
        if group == "attention (SDPA)" and shapes[0][2] == shapes[1][2]:
            padded_tokens += shapes[0][0] * shapes[0][2] * event.count
            full_layer_calls += event.count
    outside = "outside torch ops (tokenisation, batching, Python)"
    seconds[outside] = max(wall - sum(seconds.values()), 0.0)
    real_tokens = float(data.uns["scfm"]["X_scfm"]["mean_tokens_per_cell"]) * data.n_obs
    n_full_layers = max(WHOLE_HUMAN["n_layers"] - 1, 1)
    return {
        "precision": precision,
        "cells": adata.n_obs,
        "wall_s": wall,
        "seconds": seconds,
        "flops": flops,
        "real_tokens": real_tokens,
        "padded_tokens": padded_tokens / n_full_layers if full_layer_calls else float("nan"),
    }


def profile_gemm_peaks(size: int, n_tokens: int, d_model: int) -> dict[str, float]:
    """GEMM peaks measured in the profiling run: a square matmul and the model's QKV-shaped linear, fp32 and bf16."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    x, w, bias = torch.randn(n_tokens, d_model), torch.randn(3 * d_model, d_model), torch.randn(3 * d_model)
    qkv_flops = 2 * n_tokens * d_model * 3 * d_model

    def qkv_bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(x, w, bias)

    return {
        "matmul_fp32": _rate(2 * size**3, lambda: a @ b),
        "matmul_bf16": _rate(2 * size**3, lambda: a16 @ b16),
        "qkv_linear_fp32": _rate(qkv_flops, lambda: torch.nn.functional.linear(x, w, bias)),
        "qkv_linear_bf16_autocast": _rate(qkv_flops, qkv_bf16),
    }


def print_profile(results: dict[str, dict], peaks: dict[str, float]) -> None:
    """Markdown table of :func:`profile_embedding` for each precision, with GFLOP/s against the measured peaks."""
    precisions = list(results)
    print(
        "| group | "
        + " | ".join(f"{p} s | {p} share | {p} GFLOP/s | {p} % of {p} matmul peak" for p in precisions)
        + " |\n|---|"
        + "---:|" * 4 * len(precisions)
    )
    for group in (*PROFILE_GROUPS, "total (wall)"):
        cells = []
        for p in precisions:
            r = results[p]
            peak = peaks[f"matmul_{p}"]
            s = r["wall_s"] if group == "total (wall)" else r["seconds"][group]
            f = sum(r["flops"].values()) if group == "total (wall)" else r["flops"][group]
            rate = f / s / 1e9 if f and s else None
            cells += [
                f"{s:.2f}",
                f"{100 * s / r['wall_s']:.0f}%",
                "" if rate is None else f"{rate:.0f}",
                "" if rate is None else f"{100 * rate / peak:.0f}%",
            ]
        print(f"| {group} | " + " | ".join(cells) + " |")
    first = results[precisions[0]]
    print(
        f"\ntokens: {first['real_tokens']:,.0f} real, {first['padded_tokens']:,.0f} computed per full layer "
        f"(padding waste {100 * (first['padded_tokens'] / first['real_tokens'] - 1):.1f}%); FLOPs "
        f"{sum(first['flops'].values()) / 1e9:.1f} G ({sum(first['flops'].values()) / first['real_tokens'] / 1e6:.1f} "
        "MFLOP per real token)"
    )
    if len(precisions) > 1:
        a, b = precisions[:2]
        print(f"wall {a} / wall {b}: {results[a]['wall_s'] / results[b]['wall_s']:.2f}")


def run_profile(
    data: str = DEFAULT_DATA,
    n_cells: int = 32,
    threads: int = 2,
    gemm_size: int = 2048,
    expressed: int = 565,
    repeats: int = 2,
) -> dict:
    """Profile ``tl.embed`` at the whole-human shape (random weights, synthetic cells) in fp32 and bf16; print it.

    The genes are the first 8,000 of ``data``; ``repeats`` profiles of each precision alternate and the fastest of
    each is reported (the GEMM peaks are measured before and after, the better kept).
    """
    torch.set_num_threads(threads)
    genes = list(ad.read_h5ad(data, backed="r").var_names[:8000])
    cells = synthetic_cells(genes, n_cells, expressed=expressed)
    model = whole_human_model(cells)
    d_model = WHOLE_HUMAN["d_model"]
    print(
        f"scfm {scfm.__version__}, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 (oneDNN): {cpu_has_native_bf16()}, "
        f"{threads} threads; whole-human-shaped scGPT {WHOLE_HUMAN} "
        f"(random weights), {n_cells} synthetic cells expressing ~{expressed} genes",
        flush=True,
    )
    results: dict[str, dict] = {}
    peaks_before = profile_gemm_peaks(gemm_size, 8 * (expressed + 1), d_model)
    for _ in range(repeats):  # alternating, the fastest of each kept: other jobs share the cores
        for precision in ("fp32", "bf16"):
            run = profile_embedding(cells, model, precision, d_model)
            if precision not in results or run["wall_s"] < results[precision]["wall_s"]:
                results[precision] = run
    peaks_after = profile_gemm_peaks(gemm_size, 8 * (expressed + 1), d_model)
    peaks = {name: max(peaks_before[name], peaks_after[name]) for name in peaks_before}
    print(
        "GEMM GFLOP/s (best of before/after the profiles): "
        + ", ".join(f"{name} {value:.0f}" for name, value in peaks.items())
        + f" (matmul {gemm_size}^2; QKV linear {8 * (expressed + 1)}x{d_model}x{3 * d_model})\n",
        flush=True,
    )
    print_profile(results, peaks)
    return {"peaks": peaks, "peaks_before": peaks_before, "peaks_after": peaks_after, "profile": results}


# ----------------------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------------------
HEADER = (
    "| model | cells | fp32 s | bf16 s | speedup (fp32 s / bf16 s) | fp32 cells/s | bf16 cells/s | GFLOP/s fp32 | "
    "GFLOP/s bf16 | cos min | cos median | kNN overlap | same 15-NN | >= 14/15 | 15th-16th gap | cos change |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _format_row(r: dict) -> str:
    return (
        f"| {r['model']} | {r['cells']:,} | {r['fp32_s']:.2f} | {r['bf16_s']:.2f} | {r['speedup']:.2f} | "
        f"{r['fp32_cells_s']:.1f} | {r['bf16_cells_s']:.1f} | {r['fp32_gflops']:.1f} | {r['bf16_gflops']:.1f} | "
        f"{r['cos_min']:.6f} | {r['cos_median']:.6f} | {r['knn_overlap']:.3f} | {r['knn_same']:.3f} | "
        f"{r['knn_14']:.3f} | {r['gap_k_median']:.1e} | {r['similarity_change_median']:.1e} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="real raw-count .h5ad (default: Zheng 2017 sorted)")
    parser.add_argument("--cells", type=int, default=1000, help="first N cells of --data")
    parser.add_argument("--models", nargs="+", default=list(BUNDLED))
    parser.add_argument("--synthetic-cells", type=int, default=200, help="cells for the whole-human shape (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--profile", action="store_true", help="where the time goes at the whole-human shape")
    parser.add_argument("--profile-cells", type=int, default=32, help="synthetic cells of the profile")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(
        f"scfm {scfm.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 (oneDNN): {cpu_has_native_bf16()}, "
        f"{args.threads} threads",
        flush=True,
    )
    peaks = gemm_peaks(args.gemm_size)
    print(
        "GEMM GFLOP/s: "
        + ", ".join(f"{name} {value:.1f}" for name, value in peaks.items())
        + f" (matmul {args.gemm_size}^2, linear 8192x512x512)",
        flush=True,
    )
    real = ad.read_h5ad(args.data)[: args.cells].copy()
    print(f"\n{args.data}: first {real.n_obs} cells\n\n{HEADER}", flush=True)
    rows = [compare(name, real, name) for name in args.models]
    results: dict = {"gemm_gflops": peaks, "rows": rows, "threads": args.threads, "torch": torch.__version__}
    if args.synthetic_cells:
        genes = list(ad.read_h5ad(args.data, backed="r").var_names[:8000])
        cells = synthetic_cells(genes, args.synthetic_cells)
        model = whole_human_model(cells)
        print(f"\nwhole-human-shaped scGPT (random weights, {WHOLE_HUMAN}), synthetic cells\n\n{HEADER}", flush=True)
        rows.append(compare("scgpt whole-human shape", cells, model))
    if args.profile:
        print("\nprofile (where the time goes)", flush=True)
        results["profile"] = run_profile(args.data, args.profile_cells, args.threads, args.gemm_size)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Pretraining throughput of ``scfm pretrain``: length bucketing vs padding, 1 vs 2 processes, fp32 vs bf16.

Every variant is a fresh ``scfm pretrain`` process on both shared pretraining corpora (streamed from the .h5ad
files) with the bundled default SCGPT's size and vocabulary (d_model 128, 4 layers, 4 heads). Three contexts:
256 tokens (the bundled model's training context; nearly every cell is cut to it, so lengths hardly vary), 1200
(scGPT's pretraining context) and 3072 (almost no cell truncated; batches of a quarter of the size). Baselines:
random batches padded to their longest cell, and every batch padded to the full context (the reference code's
static shapes).

Each shuffling window holds 16 batches (blocks of 8 batches, 2 blocks per window); of the default 48 steps,
those after the first window are measured. A single-process variant therefore trains on exactly the same cells in the
measured steps, whatever its batching, and only the grouping into batches differs. Tokens/s is the
total of real (non-padding) tokens over all ranks divided by the total time of the measured steps, from the
run's CSV log (throughput is logged per 8 batches); peak memory is
rank 0's resident set (CPU) or the allocator's peak (GPU). Model FLOPs per token follow the
``6 * parameters + 12 * layers * d_model * tokens per cell`` estimate (forward + backward over real tokens;
embeddings and output heads excluded), so the achieved TFLOP/s and, with ``--peak-tflops``, the model FLOP
utilisation can be compared across devices.

Usage::

    python benchmarks/pretrain_throughput.py                       # CPU table (about 30 min on 2 cores)
    python benchmarks/pretrain_throughput.py --gpu --peak-tflops 989  # on a GPU: fp32 vs bf16-mixed, MFU (H100 bf16)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "pretraining"
CORPORA = [DATA / "human_raw_counts_corpus.h5ad", DATA / "human_extra_corpus.h5ad"]
DEFAULT = REPO / "src" / "scfm" / "checkpoints" / "scgpt_default"
LOG_EVERY = 8  # throughput is logged per 8 batches: windows of 16 batches are covered exactly
WINDOW_BATCHES = 16  # a shuffling window holds 16 batches of cells: every variant trains on the same cells per window
WHOLE_CELL = 3072  # ~97% of the corpora's cells express fewer vocabulary genes: almost nothing is truncated


def variant_config(
    output: Path,
    *,
    context: int,
    bucketing: bool,
    pad_to_max: bool,
    steps: int,
    devices: int,
    accelerator: str,
    precision: str,
    batch_size: int,
) -> dict:
    architecture = json.loads((DEFAULT / "config.json").read_text())
    keep = ("d_model", "n_heads", "n_layers", "d_hidden", "n_bins", "input_style", "predict_zero")
    return {
        "output": str(output),
        "data": {
            "shards": [str(p) for p in CORPORA],
            "vocab": str(DEFAULT / "vocab.json"),
            "batch_size": batch_size,
            "block_size": batch_size * WINDOW_BATCHES // 2,
            "buffer_blocks": 2,
            "length_bucketing": bucketing,
            "pad_to_max_len": pad_to_max,
        },
        "model": {"max_len": context, "architecture": {**{k: architecture[k] for k in keep}, "dropout": 0.0}},
        "objectives": {"ecs_weight": 0.1},
        "trainer": {
            "max_steps": steps,
            "max_epochs": 10,
            "accelerator": accelerator,
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "precision": precision,
            "log_every_n_steps": LOG_EVERY,
            "progress_bar": False,
        },
        "checkpoint": {"every_n_steps": 10_000},
    }


def flops_per_token(tokens_per_cell: float) -> float:
    """Training FLOPs per real token: weights (6 per multiply-add parameter) plus attention over the cell's tokens."""
    architecture = json.loads((DEFAULT / "config.json").read_text())
    d, layers, hidden = architecture["d_model"], architecture["n_layers"], architecture["d_hidden"]
    per_layer = 4 * d * d + 2 * d * hidden
    return 6 * layers * per_layer + 12 * layers * d * tokens_per_cell


def run_variant(name: str, config: dict, threads: int, warmup: int) -> dict:
    output = Path(config["output"])
    recipe = output.parent / f"{output.name}.yaml"
    recipe.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "scfm.cli", "pretrain", "--config", str(recipe), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    log = pd.read_csv(next((output / "logs").glob("version_*/metrics.csv")))
    rows = log.dropna(subset=["tokens_per_s"])
    rows = rows[rows["step"] >= warmup + LOG_EVERY // 2]  # logging windows wholly after the warm-up
    cells_per_window = LOG_EVERY * config["data"]["batch_size"] * config["trainer"]["devices"]
    seconds = cells_per_window / rows["cells_per_s"]  # aggregate over windows: total tokens / total time
    tokens = rows["tokens_per_s"] * seconds
    padded = log.dropna(subset=["train_loss_step"])
    return {
        "variant": name,
        "tokens_per_s": tokens.sum() / seconds.sum(),
        "cells_per_s": cells_per_window * len(rows) / seconds.sum(),
        "tokens_per_cell": tokens.sum() / (cells_per_window * len(rows)),
        "peak_memory_mb": log["peak_memory_mb"].max(),
        "final_loss": padded["train_loss_step"].iloc[-5:].mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3 * WINDOW_BATCHES, help="optimiser steps per variant")
    parser.add_argument("--warmup", type=int, default=WINDOW_BATCHES, help="steps left out of the throughput mean")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gpu", action="store_true", help="fp32 vs bf16-mixed on one GPU instead of the CPU table")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (e.g. 989 for H100 bf16)")
    parser.add_argument("--out", default=None, help="also write the table as JSON here")
    parser.add_argument("--only", default=None, help="run the variants whose name contains this text")
    args = parser.parse_args()
    missing = [str(p) for p in CORPORA if not p.is_file()]
    if missing:
        sys.exit(f"needs the shared pretraining corpora: {missing}")

    # (name, context, bucketing, pad to context, processes, accelerator, precision, threads per process, batch)
    batch = args.batch_size
    variants = []
    if args.gpu:
        for precision in ("32-true", "bf16-mixed"):
            for context in (1200, WHOLE_CELL):
                size = batch if context <= 1200 else max(batch // 4, 1)
                variants.append((f"gpu {precision} ctx{context}", context, True, False, 1, "gpu", precision, 1, size))
    else:
        for context in (256, 1200):
            variants.append((f"ctx{context} bucketed", context, True, False, 1, "cpu", "32-true", 2, batch))
            variants.append(
                (f"ctx{context} random, pad to longest", context, False, False, 1, "cpu", "32-true", 2, batch)
            )
            variants.append((f"ctx{context} pad to context", context, False, True, 1, "cpu", "32-true", 2, batch))
        small = max(batch // 4, 1)
        variants.append((f"ctx{WHOLE_CELL} bucketed", WHOLE_CELL, True, False, 1, "cpu", "32-true", 2, small))
        variants.append(
            (f"ctx{WHOLE_CELL} random, pad to longest", WHOLE_CELL, False, False, 1, "cpu", "32-true", 2, small)
        )
        variants.append(("ctx1200 bucketed, 2 DDP processes", 1200, True, False, 2, "cpu", "32-true", 1, batch))

    if args.only:
        variants = [v for v in variants if args.only in v[0]]
    results = []
    with tempfile.TemporaryDirectory(prefix="scfm_throughput_") as tmp:
        for index, variant in enumerate(variants):
            name, context, bucketing, pad_to_max, devices, accelerator, precision, threads, size = variant
            config = variant_config(
                Path(tmp) / f"v{index}",
                context=context,
                bucketing=bucketing,
                pad_to_max=pad_to_max,
                steps=args.steps,
                devices=devices,
                accelerator=accelerator,
                precision=precision,
                batch_size=size,
            )
            result = run_variant(name, config, threads, args.warmup)
            result["context"] = context
            result["batch_size"] = size
            result["tflops"] = result["tokens_per_s"] * flops_per_token(result["tokens_per_cell"]) / 1e12
            if args.peak_tflops:
                result["mfu"] = result["tflops"] / args.peak_tflops
            results.append(result)
            print(json.dumps(result), flush=True)

    table = pd.DataFrame(results).set_index("variant")
    for context in sorted(table["context"].unique()):
        rows = table[table["context"] == context]
        base = rows.index[rows.index.str.contains("pad to context")]
        if len(base):
            table.loc[rows.index, "x vs pad to context"] = rows["tokens_per_s"] / rows.loc[base[0], "tokens_per_s"]
        shuffled = rows.index[rows.index.str.contains("pad to longest")]
        if len(shuffled):
            table.loc[rows.index, "x vs pad to longest"] = rows["tokens_per_s"] / rows.loc[shuffled[0], "tokens_per_s"]
    one = "ctx1200 bucketed"
    two = "ctx1200 bucketed, 2 DDP processes"
    if one in table.index and two in table.index:
        table.loc[two, "x vs 1 process"] = table.loc[two, "tokens_per_s"] / table.loc[one, "tokens_per_s"]
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    if args.out:
        Path(args.out).write_text(table.reset_index().to_json(orient="records", indent=1))


if __name__ == "__main__":
    main()

"""Reference side of the CellPLM parity and speed benchmarks; runs inside the peer environment only.

    bash benchmarks/peers/setup_cellplm_env.sh
    benchmarks/peers/.venv-cellplm/bin/python benchmarks/peers/cellplm_reference.py build ...
    benchmarks/peers/.venv-cellplm/bin/python benchmarks/peers/cellplm_reference.py embed ...

It imports the reference ``cellplm`` 0.1.0.post2 package (module ``CellPLM``, never scfm). ``build`` writes a
randomly initialised reference ``OmicsFormer`` in the layout ``CellPLM.pipeline.load_pretrain`` reads
(``{prefix}.config.json`` and ``{prefix}.best.ckpt``) plus ``{prefix}.keys.json`` (every state-dict key with its
shape). ``embed`` runs ``CellEmbeddingPipeline.predict`` on an ``.h5ad`` and saves the embeddings as ``.npy``.

The hyper-parameters other than the shape follow the released ``20230926_85M.config.json`` (OmicsML/CellPLM,
``ckpt/``): Flowformer encoder, GMVAE latent, NB-MLP decoder, ``norm="groupnorm"`` (a 4-group GroupNorm after the
gene-embedding projection and in the decoder; the transformer layers and the pre-latent norm are LayerNorms
whatever ``norm`` says) and ``cat_pe=False``. ``batch_num`` and ``dataset_num`` are 0 for the ``tiny`` and
``paper`` shapes; the ``released`` shape is ``paper`` with ``batch_num=7`` and ``dataset_num=3`` (the released
model has 12,596 and 484: they only size the decoder's covariate embedding tables, which the embedding pipeline
never uses and the decoder, given no covariate label, sums).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

SHAPES = {
    # a small model for quick checks
    "tiny": {
        "enc_hid": 64,
        "enc_layers": 2,
        "enc_head": 4,
        "post_latent_dim": 32,
        "dec_hid": 64,
        "dec_layers": 2,
        "num_clusters": 4,
    },
    # the released 20230926_85M checkpoint: 4 Flowformer layers of width 1024, 8 heads (the OmicsFormer default;
    # the released config does not set enc_head), latent 512, 16 mixture components, decoder 1024 x 2 layers
    "paper": {
        "enc_hid": 1024,
        "enc_layers": 4,
        "enc_head": 8,
        "post_latent_dim": 512,
        "dec_hid": 1024,
        "dec_layers": 2,
        "num_clusters": 16,
    },
}
# the released checkpoint's layout: the paper shape with decoder covariate layers (smaller tables than its
# 12,596 batches and 484 datasets; the sizes only set how many embedding rows the decoder sums)
SHAPES["released"] = {**SHAPES["paper"], "batch_num": 7, "dataset_num": 3}

# The released config's model settings besides the shape (training-only keys such as lr or epochs left out).
RELEASED = {
    "enc_mod": "flowformer",
    "latent_mod": "gmvae",
    "dec_mod": "nbmlp",
    "model_dropout": 0.2,
    "norm": "groupnorm",
    "lamda": 5.0,
    "w_li": 5.0,
    "w_en": 5.0,
    "mask_node_rate": 0.75,
    "mask_feature_rate": 0.25,
    "drop_node_rate": 0.3,
    "max_batch_size": 4000,
    "mask_beta": True,
    "dae": True,
    "dar": False,
    "ecs": False,
    "dsbn": False,
    "input_covariate": False,
}


def _read_genes(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".json":
        genes = [str(g) for g in json.loads(text)]
    else:
        genes = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(genes)) != len(genes):
        raise SystemExit(f"{path}: the gene list has duplicates")
    return genes


def _config(shape: str, genes: list[str], norm: str) -> dict:
    config = {"name": f"scfm-peer-{shape}", "batch_num": 0, "dataset_num": 0, "platform_num": 0}
    config.update(RELEASED)
    config.update(SHAPES[shape])
    config.update(
        {
            "norm": norm,
            "mask_type": "input",
            "pe_type": "sin",
            "cat_pe": False,  # True crashes in the released embedder (torch.cat([x, 0.]))
            "head_type": None,
            "out_dim": len(genes),
            "gene_list": genes,
        }
    )
    return config


def build(opts: argparse.Namespace) -> None:
    """Write ``{prefix}.config.json``, ``{prefix}.best.ckpt`` and ``{prefix}.keys.json`` of a random model."""
    from CellPLM.model import OmicsFormer

    genes = _read_genes(Path(opts.genes))
    config = _config(opts.shape, genes, opts.norm)
    torch.manual_seed(opts.seed)
    model = OmicsFormer(**config)
    generator = torch.Generator().manual_seed(opts.seed + 1)
    with torch.no_grad():
        # Norm weights start at 1, biases at 0 or at a default uniform draw: move every 1-D parameter (norm
        # weights and biases, linear biases of the GMVAE and elsewhere, missing_pe, dec_disp) so that a wrong
        # mapping shows. The sinusoidal table (2-D, frozen) and the weight matrices keep their reference init.
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    state = model.state_dict()
    out = Path(opts.config_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{opts.prefix}.config.json").write_text(json.dumps(config))
    torch.save({"model_state_dict": state}, out / f"{opts.prefix}.best.ckpt")
    keys = {k: list(v.shape) for k, v in state.items()}
    (out / f"{opts.prefix}.keys.json").write_text(json.dumps(keys, indent=1))
    print(
        json.dumps(
            {
                "dir": str(out),
                "prefix": opts.prefix,
                "shape": opts.shape,
                "norm": opts.norm,
                "n_genes": len(genes),
                "n_tensors": len(state),
                "n_params": int(sum(v.numel() for v in state.values())),
            }
        )
    )


def _disable_gumbel_noise() -> None:
    """Make the GMVAE's Gumbel draw zero: the hard component is then the argmax of the logits."""
    from CellPLM.latent.autoencoders import GumbelSoftmax

    def sample_gumbel(self, logits, eps=1e-20):
        return torch.zeros_like(logits)

    GumbelSoftmax.sample_gumbel = sample_gumbel


def _check_loaded(model: torch.nn.Module, ckpt: Path) -> None:
    """``load_pretrain`` skips missing or mis-shaped tensors silently; insist that every tensor came from the file."""
    saved = torch.load(ckpt, map_location="cpu")["model_state_dict"]
    bad = [k for k, v in model.state_dict().items() if k not in saved or not torch.equal(saved[k], v)]
    if bad:
        raise SystemExit(f"the reference loader did not take these tensors from {ckpt}: {bad[:8]}")


def embed(opts: argparse.Namespace) -> None:
    """Time ``CellEmbeddingPipeline.predict`` (CPU) and save the embeddings in the AnnData's cell order."""
    import anndata as ad
    from CellPLM.pipeline.cell_embedding import CellEmbeddingPipeline

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # noqa: NPY002 (the reference draws from the global state)
    if opts.no_gumbel_noise:
        _disable_gumbel_noise()
    adata = ad.read_h5ad(opts.h5ad)
    if opts.ignore_batch and "batch" in adata.obs:
        del adata.obs["batch"]  # one sample: cells are chunked into sentences in file order
    n_samples = int(adata.obs["batch"].nunique()) if "batch" in adata.obs else 1
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = CellEmbeddingPipeline(pretrain_prefix=opts.prefix, pretrain_directory=opts.config_dir)
        _check_loaded(pipeline.model, Path(opts.config_dir) / f"{opts.prefix}.best.ckpt")
        start = time.perf_counter()
        emb = pipeline.predict(
            adata,
            inference_config={"batch_size": opts.batch_size},
            ensembl_auto_conversion=False,
            device="cpu",
        )
        seconds = time.perf_counter() - start
    emb = emb.detach().cpu().numpy().astype(np.float32)
    if emb.shape[0] != adata.n_obs:
        raise SystemExit(f"got {emb.shape[0]} embeddings for {adata.n_obs} cells")
    np.save(opts.out, emb)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cells_per_s": adata.n_obs / seconds,
                "n_cells": int(adata.n_obs),
                "n_genes_used": len(pipeline.gene_list),
                "n_samples": n_samples,
                "batch_size": opts.batch_size,
                "gumbel_noise": not opts.no_gumbel_noise,
                "embedding_dim": int(emb.shape[1]),
                "peak_rss_mib": peak_kib / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a randomly initialised reference checkpoint")
    b.add_argument("--config-out", required=True, help="directory for {prefix}.config.json / .best.ckpt / .keys.json")
    b.add_argument("--prefix", required=True)
    b.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    b.add_argument("--genes", required=True, help="gene list: one name a line, or a .json list")
    b.add_argument(
        "--norm",
        choices=["groupnorm", "layernorm"],
        default="groupnorm",
        help="the config's norm (released: groupnorm; layernorm is the OmicsFormer default)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=build)
    e = sub.add_parser("embed", help="run CellEmbeddingPipeline.predict on an .h5ad")
    e.add_argument("--config-dir", required=True)
    e.add_argument("--prefix", required=True)
    e.add_argument("--h5ad", required=True, help="raw counts; var_names in the model's gene list")
    e.add_argument("--out", required=True, help=".npy of float32 embeddings, in the AnnData's cell order")
    e.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="cells per sentence within a sample (0: the whole sample, the reference default)",
    )
    e.add_argument(
        "--no-gumbel-noise",
        action="store_true",
        help="zero Gumbel noise in the GMVAE: hard component = argmax of the logits (deterministic)",
    )
    e.add_argument("--ignore-batch", action="store_true", help="drop obs['batch'] so that all cells form one sample")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--seed", type=int, default=0, help="torch/numpy seed before predict")
    e.set_defaults(func=embed)
    opts = parser.parse_args()
    opts.func(opts)


if __name__ == "__main__":
    main()

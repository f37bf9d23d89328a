"""Reference side of the scGPT parity and speed benchmarks; runs inside the peer environment only.

    benchmarks/peers/.venv-scgpt/bin/python benchmarks/peers/scgpt_reference.py build ...
    benchmarks/peers/.venv-scgpt/bin/python benchmarks/peers/scgpt_reference.py outputs ...
    benchmarks/peers/.venv-scgpt/bin/python benchmarks/peers/scgpt_reference.py embed ...

It imports the reference ``scgpt`` 0.2.4 package (never scfm) and exchanges arrays with the scfm side through
``.npz`` files. ``build`` writes a randomly initialised reference ``TransformerModel`` as a checkpoint directory
laid out like the published ones; ``outputs`` runs a checkpoint on given token tensors through the reference's
own loading code; ``embed`` times ``scgpt.tasks.embed_data`` on an ``.h5ad``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", message=".*flash.attn.*")
warnings.filterwarnings("ignore", category=FutureWarning)

# the classes and batches of the fine-tuned ("finetuned" layout) annotation model: cls_decoder + DAB discriminator
CLASSES = ["B cell", "CD4 T cell", "CD8 T cell", "NK cell", "monocyte"]
N_DAB_BATCHES = 3

SHAPES = {
    # a small model for quick checks
    "tiny": {"embsize": 64, "nheads": 4, "d_hid": 64, "nlayers": 2},
    # the published whole-human model (scGPT_human): 12 layers, d_model 512, 8 heads, feed-forward 512
    "whole-human": {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12},
}


def _args_json(shape: str) -> dict:
    args = dict(SHAPES[shape])
    args.update(
        {
            "n_layers_cls": 3,
            "dropout": 0.2,
            "pad_token": "<pad>",
            "pad_value": -2,
            "mask_value": -1,
            "n_bins": 51,
            "max_seq_len": 1200,
            "input_emb_style": "continuous",
            "input_style": "binned",
            "MVC": True,
            "fast_transformer": True,
        }
    )
    return args


def _build_model(
    args: dict,
    vocab,
    explicit_zero_prob: bool,
    use_batch_labels: bool = False,
    n_batches: int = 0,
    n_cls: int = 1,
    do_dab: bool = False,
):
    from scgpt.model import TransformerModel

    return TransformerModel(
        ntoken=len(vocab),
        d_model=args["embsize"],
        nhead=args["nheads"],
        d_hid=args["d_hid"],
        nlayers=args["nlayers"],
        nlayers_cls=args["n_layers_cls"],
        n_cls=n_cls,
        vocab=vocab,
        dropout=args["dropout"],
        pad_token=args["pad_token"],
        pad_value=args["pad_value"],
        do_mvc=True,
        do_dab=do_dab,
        use_batch_labels=use_batch_labels,
        num_batch_labels=n_batches or (N_DAB_BATCHES if do_dab else None),
        domain_spec_batchnorm=False,
        explicit_zero_prob=explicit_zero_prob,
        use_fast_transformer=False,
        pre_norm=False,
    )


def _load_vocab(path: Path):
    from scgpt.tokenizer import GeneVocab

    vocab = GeneVocab.from_file(path / "vocab.json")
    for token in ("<pad>", "<cls>", "<eoc>"):  # as scgpt.tasks.embed_data does
        if token not in vocab:
            vocab.append_token(token)
    vocab.set_default_index(vocab["<pad>"])
    return vocab


def build(opts: argparse.Namespace) -> None:
    """Write ``best_model.pt``, ``args.json`` and ``vocab.json`` of a random reference model."""
    torch.manual_seed(opts.seed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    genes = json.loads(Path(opts.genes).read_text())
    tokens = [*genes, "<pad>", "<cls>", "<eoc>"]
    (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    args = _args_json(opts.shape)
    (out / "args.json").write_text(json.dumps(args, indent=2))
    vocab = _load_vocab(out)
    finetuned = opts.layout == "finetuned"
    model = _build_model(
        args,
        vocab,
        explicit_zero_prob=opts.explicit_zero,
        n_cls=len(CLASSES) if finetuned else 1,
        do_dab=finetuned,
    )
    if finetuned:  # the label mapping of the fine-tuning run, as {id: name}
        (out / "id2type.json").write_text(json.dumps(dict(enumerate(CLASSES))))
    with torch.no_grad():  # LayerNorms and biases start at 1/0: move them so that a wrong mapping shows
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
    state = model.state_dict()
    if opts.layout in ("published", "finetuned"):
        # The published checkpoints were trained with flash-attn (packed Wqkv) and carry no cls_decoder; a model
        # fine-tuned for annotation from them keeps the layout and adds its cls_decoder (and DAB discriminator).
        state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
        if opts.layout == "published":
            state = {k: v for k, v in state.items() if not k.startswith("cls_decoder.")}
    torch.save(state, out / "best_model.pt")
    n_params = sum(v.numel() for v in state.values())
    print(json.dumps({"path": str(out), "n_tensors": len(state), "n_params": n_params, "layout": opts.layout}))


def _load_reference(path: Path):
    """Build and load a model exactly as ``scgpt.tasks.embed_data`` does (non-strict ``load_pretrained``)."""
    from scgpt.utils import load_pretrained

    vocab = _load_vocab(path)
    args = json.loads((path / "args.json").read_text())
    state = torch.load(path / "best_model.pt", map_location="cpu")
    explicit_zero = any(k.startswith("decoder.zero_logit.") for k in state)
    n_cls = state["cls_decoder.out_layer.weight"].shape[0] if "cls_decoder.out_layer.weight" in state else 1
    do_dab = "grad_reverse_discriminator.out_layer.weight" in state
    model = _build_model(args, vocab, explicit_zero_prob=explicit_zero, n_cls=n_cls, do_dab=do_dab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_pretrained(model, state, verbose=False)
    after = model.state_dict()
    unloaded = sorted(
        k
        for k in after
        if k in before and torch.equal(before[k], after[k]) and not (k.startswith("cls_") and n_cls == 1)
    )
    if unloaded:
        raise SystemExit(f"the reference loader left tensors at their initial values: {unloaded[:8]}")
    model.eval()
    return model, vocab, args


@torch.no_grad()
def outputs(opts: argparse.Namespace) -> None:
    """Cell embeddings, GEP and GEPC predictions and gene embeddings on given tokens; reference binning too."""
    model, vocab, args = _load_reference(Path(opts.ckpt))
    tokens = np.load(opts.tokens)
    gene_ids = torch.as_tensor(tokens["gene_ids"], dtype=torch.long)
    values = torch.as_tensor(tokens["values"], dtype=torch.float32)
    pad_id = vocab[args["pad_token"]]
    cls, gep, gepc, genes, heads = [], [], [], [], {"cls_logits": [], "dab_logits": []}
    for start in range(0, len(gene_ids), opts.batch_size):
        ids, vals = gene_ids[start : start + opts.batch_size], values[start : start + opts.batch_size]
        hidden = model._encode(ids, vals, src_key_padding_mask=ids.eq(pad_id))
        cell = hidden[:, 0, :]
        cls.append(cell.numpy())
        gep.append(model.decoder(hidden)["pred"].numpy())
        gepc.append(model.mvc_decoder(cell, model.cur_gene_token_embs)["pred"].numpy())
        genes.append(model.encoder(ids).numpy())
        if "cls_decoder.out_layer.weight" in model.state_dict() and model.cls_decoder.out_layer.out_features > 1:
            heads["cls_logits"].append(model.cls_decoder(cell).numpy())
        if hasattr(model, "grad_reverse_discriminator"):
            heads["dab_logits"].append(model.grad_reverse_discriminator(cell).numpy())
    cls = np.concatenate(cls)
    result = {
        "cls": cls,
        "cls_normalized": cls / np.linalg.norm(cls, axis=1, keepdims=True),  # embed_data's normalisation
        "gep": np.concatenate(gep),
        "gepc": np.concatenate(gepc),
        "gene_embeddings": np.concatenate(genes),
    }
    result.update({name: np.concatenate(parts) for name, parts in heads.items() if parts})
    if "raw_values" in tokens:
        from scgpt.preprocess import binning

        raw, offsets = tokens["raw_values"], tokens["raw_offsets"]
        binned = np.empty_like(raw, dtype=np.float32)
        for i in range(len(offsets) - 1):
            np.random.seed(i)  # noqa: NPY002 (the reference draws from the global state); the uniform draws for values tied to a bin edge; the scfm side reuses them
            row = torch.as_tensor(raw[offsets[i] : offsets[i + 1]], dtype=torch.float32)
            binned[offsets[i] : offsets[i + 1]] = binning(row, n_bins=51).numpy()
        result["reference_bins"] = binned
    np.savez(opts.out, **result)


def embed(opts: argparse.Namespace) -> None:
    """Time ``scgpt.tasks.embed_data`` (CPU) and record peak memory."""
    import anndata as ad
    from scgpt.tasks import embed_data

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # noqa: NPY002 (the reference draws from the global state)
    adata = ad.read_h5ad(opts.h5ad)
    if opts.n_cells:
        adata = adata[: opts.n_cells].copy()
    start = time.perf_counter()
    result = embed_data(
        adata,
        opts.ckpt,
        gene_col=opts.gene_col,
        max_length=opts.max_length,
        batch_size=opts.batch_size,
        device="cpu",
        use_fast_transformer=False,
        return_new_adata=True,
    )
    seconds = time.perf_counter() - start
    np.save(opts.out, np.asarray(result.X, dtype=np.float32))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "n_cells": int(adata.n_obs),
                "peak_rss_mib": peak_kib / 1024,
                "worker_peak_rss_mib": children_kib / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--genes", required=True, help="JSON list of gene symbols for the vocabulary")
    b.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    b.add_argument("--layout", choices=["published", "torch", "finetuned"], default="published")
    b.add_argument("--explicit-zero", action="store_true", help="add the zero-probability heads")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=build)
    o = sub.add_parser("outputs")
    o.add_argument("--ckpt", required=True)
    o.add_argument("--tokens", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--batch-size", type=int, default=16)
    o.set_defaults(func=outputs)
    e = sub.add_parser("embed")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--h5ad", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--gene-col", default="index")
    e.add_argument("--n-cells", type=int, default=0)
    e.add_argument("--max-length", type=int, default=1200)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=embed)
    opts = parser.parse_args()
    opts.func(opts)


if __name__ == "__main__":
    main()

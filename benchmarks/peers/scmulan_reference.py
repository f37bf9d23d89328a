"""Reference side of the scMulan parity benchmark: an independent re-implementation of the public scMulan.

    .venv/bin/python benchmarks/peers/scmulan_reference.py build --out DIR --genes genes.json --shape tiny
    .venv/bin/python benchmarks/peers/scmulan_reference.py outputs --ckpt DIR --cells cells.npz --out out.npz

The public scMulan code (github.com/SuperBianC/scMulan: ``scMulan/model/model.py``, ``scMulan/scMulan.py``,
``scMulan/utils/hf_tokenizer.py``) does not install offline (it needs ``transformers``, ``loguru``, ``scanpy`` and
CUDA for its embedding path), so this file re-implements, without importing scfm, what it computes with its default
``model_inference(ckpt, adata)`` + ``get_cell_types_and_embds_for_adata()`` path:

* the nanoGPT-style ``scMulanModel`` (token embedding ``wte`` + level embedding ``wee``, pre-norm blocks with
  ``F.layer_norm(..., 1e-5)``, SDPA ``is_causal=True``, tanh GELU, ``ln_f``, ``lm_head`` and ``epx_head``);
* the c-sentence of a cell: a DataFrame with the gene set's columns, the expressed genes in that column order,
  reversed, ``np.digitize(values, np.linspace(0, max, expression_level + 1), right=True)``, then ``<PCT>``;
* ``generate_cellGenesis(..., max_new_tokens=prefix + 3, top_k=1)`` *without* a key/value cache: the whole sequence
  is run again at each step, tokens ``input_ids[0, :-1]`` are banned, top-1 filtering then
  ``torch.multinomial``, the level is ``clamp(round(epx_head[next]), 0, 10)``, stop at token 0;
* coarse/fine cell type from ``sequence[-3:-1]`` (``"Unclassified"`` unless in ``cell_type | MCT``) and the
  embedding ``hidden_states[-1][0, -2]``.

``build`` writes a randomly initialised model in the published layout: ``ckpt_scMulan.pt`` (``{"model": state_dict,
"model_args": {...}, "iter_num", "best_val_loss"}``) and ``meta_info.pt`` (``token_set``, ``gene_set``, ``cell_type``,
``MCT`` as Python sets).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

SHAPES = {
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    # 368.80M parameters with a ~42.5k-token vocabulary (the count the reference logs when it loads
    # ckpt_scMulan.pt); the published model_args are not documented, this shape reproduces that count
    "published": {"n_layer": 15, "n_head": 20, "n_embd": 1120},
}
CELL_TYPES = [f"celltype {i}" for i in range(40)]
COARSE_TYPES = [f"lineage {i}" for i in range(8)]
ORGANS = ["Heart", "Lung", "Liver", "Blood", "Brain", "Thymus", "Bone marrow"]


def build(opts: argparse.Namespace) -> None:
    rng = np.random.default_rng(opts.seed)
    genes = json.loads(Path(opts.genes).read_text())
    # token ids in an order of their own (genes shuffled among metadata terms), token 0 ends generation
    gene_tokens = [str(g) for g in rng.permutation(genes)]
    others = ["<PCT>", "<GEN>", *ORGANS, *CELL_TYPES, *COARSE_TYPES]
    tokens = ["<#E#>", *gene_tokens[: len(gene_tokens) // 2], *others, *gene_tokens[len(gene_tokens) // 2 :]]
    extra = opts.extra_tokens - len(others) - 1
    tokens += [f"metadata term {i}" for i in range(max(extra, 0))]
    args = {
        "block_size": 1000,
        "vocab_size": len(tokens),
        "dropout": 0.0,
        "bias": True,
        "train_mode": "pretrian",
        "expression_level": 10,
        "ele": 1,
        **SHAPES[opts.shape],
    }
    torch.manual_seed(opts.seed)
    d, v = args["n_embd"], args["vocab_size"]
    # weights of unit gain, sharp attention (q.k of std ~4): cells differ, so that predictions differ
    gain = 1 / math.sqrt(d)
    # token and level embeddings large next to the LayerNorm biases, so that cells differ
    sd = {"transformer.wte.weight": torch.randn(v, d), "transformer.wee.weight": torch.randn(11, d)}
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}."
        sd |= {
            p + "ln_1.weight": 1 + 0.1 * torch.randn(d),
            p + "ln_1.bias": 0.1 * torch.randn(d),
            p + "attn.c_attn.weight": torch.randn(3 * d, d) * 2 * gain,
            p + "attn.c_attn.bias": torch.randn(3 * d) * 0.1,
            p + "attn.c_proj.weight": torch.randn(d, d) * gain,
            p + "attn.c_proj.bias": torch.randn(d) * 0.1,
            p + "ln_2.weight": 1 + 0.1 * torch.randn(d),
            p + "ln_2.bias": 0.1 * torch.randn(d),
            p + "mlp.c_fc.weight": torch.randn(4 * d, d) * gain,
            p + "mlp.c_fc.bias": torch.randn(4 * d) * 0.1,
            p + "mlp.c_proj.weight": torch.randn(d, 4 * d) * gain / 2,
            p + "mlp.c_proj.bias": torch.randn(d) * 0.1,
        }
    sd |= {"transformer.ln_f.weight": 1 + 0.1 * torch.randn(d), "transformer.ln_f.bias": 0.1 * torch.randn(d)}
    head = torch.randn(v, d) / math.sqrt(d)
    typed = [tokens.index(t) for t in CELL_TYPES + COARSE_TYPES]
    head[typed] *= 4  # cell types win most greedy choices, so that predictions are not all "Unclassified"
    sd["lm_head.weight"] = head
    sd["epx_head.weight"] = torch.randn(v, d) * 4 / math.sqrt(d)  # rounded levels spread over 0..10
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": sd, "model_args": args, "iter_num": 0, "best_val_loss": torch.tensor(1.0)}, out / "ckpt_scMulan.pt"
    )
    meta = {"token_set": tokens, "gene_set": list(genes), "cell_type": set(CELL_TYPES), "MCT": set(COARSE_TYPES)}
    torch.save(meta, out / "meta_info.pt")
    n_params = sum(t.numel() for t in sd.values())
    print(json.dumps({"path": str(out), "n_params": n_params, "vocab": v, **SHAPES[opts.shape]}))


class Reference(torch.nn.Module):
    """The forward pass of the public ``scMulanModel`` (inference: no dropout), from its state dict."""

    def __init__(self, sd: dict[str, torch.Tensor], args: dict) -> None:
        super().__init__()
        self.sd, self.n_head, self.n_layer = sd, args["n_head"], args["n_layer"]

    def forward(self, idx: torch.Tensor, expr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sd = self.sd
        x = sd["transformer.wte.weight"][idx] + sd["transformer.wee.weight"][expr]
        b, t, c = x.shape
        for i in range(self.n_layer):
            p = f"transformer.h.{i}."
            h = F.layer_norm(x, (c,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
            q, k, v = F.linear(h, sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]).split(c, dim=2)
            q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
            x = x + F.linear(y, sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"])
            h = F.layer_norm(x, (c,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
            h = F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
            h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
            x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
        x = F.layer_norm(x, (c,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5)
        last = x[:, [-1], :]
        return F.linear(last, sd["lm_head.weight"]), F.linear(last, sd["epx_head.weight"]), x

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, levels: torch.Tensor, max_new_tokens: int):
        """``generate_cellGenesis(..., top_k=1, return_hidden=True)`` of the non-cached model."""
        hidden_states, step_logits = [], []
        while True:
            logits_cls, logits_exp, hidden = self(input_ids, levels)
            hidden_states.append(hidden)
            logits_cls, logits_exp = logits_cls[:, -1, :].clone(), logits_exp[:, -1, :]
            step_logits.append(logits_cls[0].clone())
            logits_cls[:, input_ids[0, :-1]] = float("-inf")
            top, _ = torch.topk(logits_cls, 1)
            logits_cls[logits_cls < top[:, [-1]]] = float("-inf")
            probs = F.softmax(logits_cls, dim=-1)
            next_tokens = torch.multinomial(probs, num_samples=1)
            level = logits_exp[torch.arange(logits_exp.size(0)), next_tokens.squeeze(1)].unsqueeze(1)
            level = torch.clamp(torch.round(level), 0, 10).int()
            input_ids = torch.cat((input_ids, next_tokens), dim=1)
            levels = torch.cat((levels, level), dim=1)
            if next_tokens == 0 or len(input_ids[0]) >= max_new_tokens:
                break
        return input_ids, levels, hidden_states, step_logits


def outputs(opts: argparse.Namespace) -> None:
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    ckpt = torch.load(Path(opts.ckpt) / "ckpt_scMulan.pt", map_location="cpu", weights_only=True)
    meta = torch.load(Path(opts.ckpt) / "meta_info.pt", weights_only=True)
    model = Reference({k: v.float() for k, v in ckpt["model"].items()}, ckpt["model_args"]).eval()
    n_levels = ckpt["model_args"]["expression_level"]
    stoi = {t: i for i, t in enumerate(meta["token_set"])}
    cell_types = meta["cell_type"] | meta["MCT"]
    cells = np.load(opts.cells, allow_pickle=False)
    # the reference: adata[:, gene_set] (normalize_total + log1p values) as a DataFrame with the gene set's columns
    frame = pd.DataFrame(cells["X"], columns=[str(g) for g in cells["genes"]])[meta["gene_set"]]
    embeddings, coarse, fine, sequences, levels_out, logits, lengths = [], [], [], [], [], [], []
    for i in range(len(frame)):
        row = frame.iloc[i]
        expressed = row[row > 0]
        genes = expressed.index.tolist()[::-1]
        values = expressed.values[::-1]
        binned = np.digitize(values, np.linspace(0, np.max(values), n_levels + 1), right=True)
        prompt = [stoi[g] for g in [*genes, "<PCT>"]]
        prompt_levels = np.append(binned, [0])
        ids, levels, hidden, step_logits = model.generate(
            torch.tensor(prompt)[None], torch.tensor(prompt_levels)[None], max_new_tokens=len(prompt) + 3
        )
        sequence = ids[0].tolist()
        names = [meta["token_set"][t] for t in sequence[-3:-1]]
        coarse.append(names[-2] if names[-2] in cell_types else "Unclassified")
        fine.append(names[-1] if names[-1] in cell_types else "Unclassified")
        embeddings.append(hidden[-1][0, -2, :].numpy())
        sequences.append(np.asarray(sequence))
        levels_out.append(levels[0].numpy())
        logits.append(torch.stack(step_logits).numpy())
        lengths.append(len(sequence))
    np.savez(
        opts.out,
        embeddings=np.stack(embeddings),
        coarse=np.array(coarse),
        fine=np.array(fine),
        sequences=np.concatenate(sequences),
        levels=np.concatenate(levels_out),
        lengths=np.array(lengths),
        logits=np.concatenate(logits),
        n_steps=np.array([len(x) for x in logits]),
    )
    print(json.dumps({"cells": len(frame), "mean_length": float(np.mean(lengths))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--genes", required=True, help="JSON list of gene symbols: the gene set, in its order")
    b.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    b.add_argument("--extra-tokens", type=int, default=0, help="non-gene tokens in all (metadata terms padded up)")
    b.add_argument("--seed", type=int, default=0)
    o = sub.add_parser("outputs")
    o.add_argument("--ckpt", required=True)
    o.add_argument("--cells", required=True, help="npz: X (cells x genes, normalize_total + log1p), genes")
    o.add_argument("--out", required=True)
    o.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    build(opts) if opts.command == "build" else outputs(opts)


if __name__ == "__main__":
    main()

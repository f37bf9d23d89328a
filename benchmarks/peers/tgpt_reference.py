"""Reference side of the tGPT parity benchmark; runs inside the peer environment only (``.venv-tgpt``).

    benchmarks/peers/.venv-tgpt/bin/python benchmarks/peers/tgpt_reference.py build ...
    benchmarks/peers/.venv-tgpt/bin/python benchmarks/peers/tgpt_reference.py outputs ...

It imports Hugging Face ``transformers``/``tokenizers`` (never scfm) and exchanges arrays with the scfm side through
files. ``build`` writes a randomly initialised ``GPT2LMHeadModel`` with the published tGPT configuration shape and a
word-level gene tokenizer (``<pad>`` 0, ``</b>`` 1, ``</s>`` 2, ``<unk>`` 3, template ``</b> $A </s>``) with
``save_pretrained``, i.e. in the published layout. ``outputs`` loads that directory with ``from_pretrained`` and
runs the reference README's feature extraction on gene-ranking text lines: ``-``/``.`` -> ``_``, tokenise with
``max_length`` and truncation, ``GPT2LMHeadModel(...).transformer``, mean of ``last_hidden_state[1:eos]``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64},
    # lixiangchun/transcriptome-gpt-1024-8-16-64: n_embd 1024, 8 layers, 16 heads, 64 positions
    "published": {"n_embd": 1024, "n_layer": 8, "n_head": 16, "n_positions": 64},
}
SPECIALS = ["<pad>", "</b>", "</s>", "<unk>"]


def build(opts: argparse.Namespace) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(opts.seed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    genes = json.loads(Path(opts.genes).read_text())
    tokens = SPECIALS + [re.sub(r"\-|\.", "_", g) for g in genes]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="</b> $A </s>", special_tokens=[("</b>", vocab["</b>"]), ("</s>", vocab["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</b>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(out)
    config = GPT2Config(vocab_size=len(vocab), bos_token_id=1, eos_token_id=2, pad_token_id=0, **SHAPES[opts.shape])
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorms and biases start at 1/0: move them so that a wrong mapping shows
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(out, safe_serialization=opts.layout == "safetensors")
    n_params = sum(p.numel() for p in model.parameters())
    files = sorted(p.name for p in out.iterdir())
    print(json.dumps({"path": str(out), "n_params": n_params, "vocab": len(vocab), "files": files}))


def outputs(opts: argparse.Namespace) -> None:
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.set_num_threads(opts.threads)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(opts.ckpt)
    lm = GPT2LMHeadModel.from_pretrained(opts.ckpt, output_hidden_states=True).eval()
    model = lm.transformer
    max_len = model.config.n_positions
    regex = re.compile(r"\-|\.")
    lines = [regex.sub("_", line) for line in Path(opts.lines).read_text().splitlines()]
    features, ids_out, logits_out = [], [], []
    for start in range(0, len(lines), opts.batch_size):
        batch = tokenizer(
            lines[start : start + opts.batch_size],
            max_length=max_len,
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            x = model(**batch)
            hidden = x.last_hidden_state
            logits = lm.lm_head(hidden)
        eos = batch["attention_mask"].sum(dim=1) - 1
        for j in range(hidden.shape[0]):
            n = int(eos[j])
            features.append(hidden[j, 1:n].mean(dim=0).numpy())
            ids_out.append(batch["input_ids"][j, : n + 1].numpy())
            logits_out.append(logits[j, : n + 1].numpy())
    lengths = np.array([len(i) for i in ids_out])
    np.savez(
        opts.out,
        features=np.stack(features),
        input_ids=np.concatenate(ids_out),
        logits=np.concatenate(logits_out),
        lengths=lengths,
    )
    print(json.dumps({"cells": len(features), "max_tokens": int(lengths.max())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--genes", required=True, help="JSON list of gene symbols (the tokenizer's vocabulary)")
    b.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    b.add_argument("--layout", choices=["bin", "safetensors"], default="bin")
    b.add_argument("--seed", type=int, default=0)
    o = sub.add_parser("outputs")
    o.add_argument("--ckpt", required=True)
    o.add_argument("--lines", required=True, help="text file: one cell per line, gene symbols ranked by expression")
    o.add_argument("--out", required=True)
    o.add_argument("--batch-size", type=int, default=64)
    o.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    build(opts) if opts.command == "build" else outputs(opts)


if __name__ == "__main__":
    main()

"""Shrink a checkpoint for shipping: keep its most frequent genes and store float16 weights.

Usage::

    python scripts/compact_checkpoint.py SRC DEST --keep-genes 13000

The vocabulary of a checkpoint trained by ``scripts/pretrain_default.py`` lists genes by the number of training
cells that express them, most first, after the special tokens. Keeping the first ``--keep-genes`` genes leaves
every kept token's id unchanged, so the per-token tensors (rows indexed by token id) are cut, not re-ordered.
Genes dropped this way are treated like any gene outside the vocabulary (ignored and reported when embedding).
The model card gets a line saying what was done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scfm.genes import GeneVocab
from scfm.models.base import load_checkpoint, save_checkpoint


def compact(source: str, dest: str, keep_genes: int) -> Path:
    checkpoint = load_checkpoint(source)
    vocab = checkpoint.vocab
    specials = [token for token in vocab.tokens if token.startswith("<") and token.endswith(">")]
    if vocab.tokens[: len(specials)] != specials:
        raise SystemExit("the special tokens must come first in the vocabulary")
    genes = vocab.genes
    if keep_genes >= len(genes):
        raise SystemExit(f"the vocabulary has {len(genes)} genes; nothing to cut for --keep-genes {keep_genes}")
    n_tokens = len(vocab)
    kept_vocab = GeneVocab(genes[:keep_genes], specials=specials)
    state = {
        key: value[: len(kept_vocab)] if value.ndim >= 1 and value.shape[0] == n_tokens else value
        for key, value in checkpoint.state_dict.items()
    }
    config = dict(checkpoint.config, n_tokens=len(kept_vocab))
    card = checkpoint.model_card.rstrip("\n") + (
        f"\n\nShipped compact: the {keep_genes} genes expressed in the most training cells (of {len(genes)}) and "
        f"float16 weights (`python scripts/compact_checkpoint.py SRC DEST --keep-genes {keep_genes}`); token ids "
        "are unchanged, dropped genes are ignored like any gene outside the vocabulary.\n"
    )
    return save_checkpoint(
        dest, config=config, vocab=kept_vocab, state_dict=state, model_card=card, overwrite=True, half_precision=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("--keep-genes", type=int, required=True)
    args = parser.parse_args()
    print(f"wrote {compact(args.source, args.dest, args.keep_genes)}")


if __name__ == "__main__":
    main()

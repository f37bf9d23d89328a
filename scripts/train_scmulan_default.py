"""Train the bundled scMulan checkpoint on both pretraining corpora plus the labelled reference sets.

Usage::

    python scripts/train_scmulan_default.py --data ../shared/data --out src/scfm/checkpoints/scmulan_default

The cells, their ``cell_type``/``tissue``/``technology`` terms and the held-out evaluation split come from
:func:`scfm.bench._scmulan_data.scmulan_corpus` (documented there and in the model card). The gene vocabulary
keeps the genes that reach the top ``max_gene_words`` of at least ``--vocab-min-cells`` training cells (a gene
never that high never appears in a c-sentence). A checkpoint directory is written after every epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pretrain_default import EpochCheckpoint, StopAfterEpochs, top_ranked_vocab

from scfm.bench._scmulan_data import METADATA_KEYS, scmulan_corpus
from scfm.models import SCMulan, SCMulanConfig

ARCHITECTURE = {"d_model": 128, "n_heads": 4, "n_layers": 4, "d_hidden": 512, "max_len": 128}


def model_card(
    model: SCMulan, train_cells: int, held: dict, epochs: int, losses: dict, seconds: float, vocab_min_cells: int
) -> str:
    config = model.config
    terms = "\n".join(
        f"- `{k}`: {len(t)} terms ({', '.join(t[:12])}{', ...' if len(t) > 12 else ''})"
        for k, t in config.metadata_terms.items()
    )
    held_lines = "\n".join(f"- `{name}`: {a.n_obs} cells" for name, a in held.items())
    return f"""# scMulan default (scfm)

A small scMulan-family model (Bian et al. 2024, re-implemented from the paper) trained by
`scripts/train_scmulan_default.py` on CPU in {seconds / 60:.0f} minutes ({epochs} epochs).

- Architecture: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, feed-forward
  {config.d_hidden}; c-sentences of at most {config.max_len} words ({config.max_gene_words} genes);
  {config.n_levels} expression levels of width {config.level_width} on log1p(normalised to {config.target_sum:g}).
- Gene vocabulary: {len(model.vocab.genes)} genes (those in the top {config.max_gene_words} of at least
  {vocab_min_cells} training cells).
- Training cells: {train_cells} from both pretraining corpora of `shared/data/pretraining` (ECCITE-seq cells left
  out: their genes carry an `hg19_` prefix), with the FACS-sorted PBMC labels of Zheng 2017 and the pancreas
  labels of the Cepo set attached to the corpus cells they belong to.
- Metadata terms:
{terms}
- Held out for evaluation (`scfm.bench._scmulan_data`, seed 0, stratified): 30% of each sorted PBMC population,
  20% of each labelled extra-corpus cell type with at least 5 cells, and the whole Xin 2016 pancreas batch:
{held_lines}
- Objectives: metadata from expression (annotation sentences), expression from metadata (generation sentences
  with 30% condition dropout), genes from the other genes (every gene word); last epoch's losses:
  `{json.dumps({k: round(v, 4) for k, v in losses.items()})}`.
- Weights are stored as float16.

Limits: a few thousand labelled cells, mostly blood, cell lines and pancreas; the cell-type terms are those of
the sources (sorted PBMC populations, cell lines, PDAC ductal subtypes...), so zero-shot annotation can only
answer with them. See `docs/scmulan.md` and `docs/benchmarks.md` for measured quality.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="src/scfm/checkpoints/scmulan_default")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--stop-after", type=int, default=None, help="end after this many epochs (schedule kept)")
    parser.add_argument("--vocab-min-cells", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit-cells", type=int, default=None, help="train on the first N cells (smoke runs)")
    args = parser.parse_args()
    start = time.time()
    train, held = scmulan_corpus(args.data)
    if args.limit_cells:
        train = train[: args.limit_cells].copy()
    max_genes = SCMulanConfig(n_gene_tokens=10, metadata_terms={key: [] for key in METADATA_KEYS}, **ARCHITECTURE)
    vocab = top_ranked_vocab(train, max_genes.max_gene_words, args.vocab_min_cells)
    print(f"{train.n_obs} training cells, {len(vocab.genes)} genes in the vocabulary", flush=True)
    SCMulan.setup_anndata(train, metadata_keys=METADATA_KEYS)
    model = SCMulan(train, vocab=vocab, min_genes=1, **ARCHITECTURE)
    print(model, flush=True)
    out = Path(args.out)
    saver = EpochCheckpoint(
        model,
        out,
        lambda epochs, losses: model_card(
            model, train.n_obs, held, epochs, losses, time.time() - start, args.vocab_min_cells
        ),
        half_precision=True,
    )
    callbacks = [saver] + ([StopAfterEpochs(args.stop_after)] if args.stop_after else [])
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=200,
        accelerator="cpu",
        callbacks=callbacks,
        enable_progress_bar=False,
        log_every_n_steps=50,
    )
    print(f"done in {(time.time() - start) / 60:.1f} min; checkpoint at {out}", flush=True)


if __name__ == "__main__":
    main()

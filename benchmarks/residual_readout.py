"""Can training add to the fixed rank read-out, if the network starts from it? (issue 22)

Usage::

    python benchmarks/residual_readout.py [--epochs 2] [--data ../shared/data] [--out runs/residual]

The cell embedding is ``r(x) / s + W pool(tGPT(x))``: ``r`` is the fixed corpus-fitted rank read-out of
``corpus_rank_projection.py`` (3,000-gene panel, 50 components; ``s`` its root-mean-square norm over the corpus), the
second term a linear map of the mean-pooled states of a tGPT network (the candidate recipes' architecture: 127-gene
context, d_model 128, 4 layers) with ``W`` initialised to zero, so training starts exactly at the read-out. Objective:
InfoNCE (temperature 0.1) between the embeddings of two binomially thinned views of each cell (each count kept with a
probability drawn from U(0.3, 1)), minibatches of 64 cells within one dataset, plus next-gene prediction on the first
view; AdamW (lr 1e-3, 50 warm-up steps, weight decay 0.01), bf16 autocast, seed 0, on the leave-dataset-out corpus.
``--objective labels`` replaces the thinned-view InfoNCE by a supervised contrastive loss (Khosla et al. 2020;
temperature 0.1) on the labelled corpus cells: the pancreatic-cancer (20 types) and cell-line (4 lines) datasets of
``human_extra_corpus.h5ad``, positives being the other cells of the minibatch with the same label; the other
datasets' minibatches train next-gene only; one thinned view per cell.

Then the read-out alone, the trained sum and the pooled states alone are scored on the protocol's sets beside
HVG+PCA (the protocol's ``score``).
"""

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from corpus_rank_projection import EXCLUDED_DATASETS, CorpusRankProjection, set_matrix
from pretrain_default import load_corpus, top_ranked_vocab
from zero_shot_protocol import load_set, score

import scfm
from scfm.models.tgpt._config import TGPTConfig
from scfm.models.tgpt._module import TGPTModule
from scfm.models.tgpt._tokenizer import rank_tokenize_csr
from scfm.nn._losses import paired_view_contrastive

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--objective", choices=["thinned", "labels"], default="thinned")
parser.add_argument("--data", type=Path, default=Path("../shared/data"))
parser.add_argument("--out", type=Path, default=Path("runs/residual"))
args = parser.parse_args()
EPOCHS, DATA, OUT = args.epochs, args.data, args.out
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
rng = np.random.default_rng(0)
torch.set_num_threads(2)

corpus, _ = load_corpus(
    [str(p) for p in sorted((DATA / "pretraining").glob("*.h5ad"))], EXCLUDED_DATASETS, 50, ("hg19_",)
)
projection = CorpusRankProjection(corpus, 3000, 50)
vocab = top_ranked_vocab(corpus, 127, 5)
config = TGPTConfig(
    n_tokens=len(vocab),
    pad_id=vocab.pad_id,
    begin_id=vocab.cls_id,
    end_id=vocab.eoc_id,
    d_model=128,
    n_heads=4,
    n_layers=4,
    d_hidden=256,
    max_len=128,
)
print(corpus.n_obs, "cells, vocab", len(vocab), flush=True)
X = sp.csr_matrix(corpus.X, dtype=np.float32)
column_tokens = vocab.lookup(corpus.var_names)
genes = corpus.var_names
r_all = projection.transform(X, genes)
R_SCALE = float(np.sqrt((r_all**2).sum(1).mean()))
print("read-out rms norm", R_SCALE, flush=True)


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tgpt = TGPTModule(config)
        self.mix = torch.nn.Linear(config.d_model, 50, bias=False)
        torch.nn.init.zeros_(self.mix.weight)

    def embed(self, token_ids, readout):
        hidden = self.tgpt.hidden_states(token_ids)
        return readout / R_SCALE + self.mix(self.tgpt.pool(hidden, token_ids).float()), hidden


def pad(seqs):
    n = max(len(s) for s in seqs)
    out = np.full((len(seqs), n), config.pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def views(block):
    keep = rng.uniform(0.3, 1.0, size=block.shape[0])
    thinned = block.copy()
    thinned.data = rng.binomial(thinned.data.astype(np.int64), np.repeat(keep, np.diff(thinned.indptr))).astype(
        np.float32
    )
    thinned.eliminate_zeros()
    return thinned


def batch_inputs(block):
    tokens = pad(
        rank_tokenize_csr(block, column_tokens, begin_id=config.begin_id, end_id=config.end_id, max_len=config.max_len)
    )
    return tokens, torch.from_numpy(projection.transform(block, genes))


def supervised_contrastive(embeddings: torch.Tensor, labels: np.ndarray, temperature: float = 0.1) -> torch.Tensor:
    """Mean over anchors with a positive of -log p(positive | anchor), positives = other cells with the same label."""
    z = F.normalize(embeddings.float(), dim=1)
    logits = (z @ z.T / temperature).masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    same = torch.from_numpy(labels[:, None] == labels[None, :]) & ~torch.eye(len(z), dtype=torch.bool)
    log_p = logits.log_softmax(1).masked_fill(~same, 0.0)
    has_positive = same.any(1)
    return -(log_p.sum(1)[has_positive] / same.sum(1)[has_positive]).mean()


LABELLED_DATASETS = ("card_pdac_moncada_1926", "scds_cellhashing_celllines_1701")
labels = np.full(corpus.n_obs, "", dtype=object)
if args.objective == "labels":
    extra = ad.read_h5ad(DATA / "pretraining" / "human_extra_corpus.h5ad", backed="r")
    known = extra.obs[extra.obs["dataset"].isin(LABELLED_DATASETS)]["cell_type"].astype(str)
    position = corpus.obs_names.get_indexer(known.index)
    labels[position[position >= 0]] = known.to_numpy()[position >= 0]
    print(f"{int((labels != '').sum())} labelled corpus cells, {len(set(labels) - {''})} labels", flush=True)

model = Residual()
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
datasets = corpus.obs["dataset"].astype(str).to_numpy()
counts_X = X.copy()
counts_X.data = np.round(counts_X.data)
start = time.perf_counter()
step = 0
for epoch in range(EPOCHS):
    batches = []
    for d in np.unique(datasets):
        rows = rng.permutation(np.flatnonzero(datasets == d))
        batches += [rows[i : i + 64] for i in range(0, len(rows), 64) if len(rows[i : i + 64]) >= 8]
    order = rng.permutation(len(batches))
    losses = []
    for b in order:
        rows = np.sort(batches[b])
        block = counts_X[rows]
        t1, r1 = batch_inputs(views(block))
        if args.objective == "thinned":
            t2, r2 = batch_inputs(views(block))
        lr = 1e-3 * min(1.0, (step + 1) / 50)
        for g in optimiser.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e1, h1 = model.embed(t1, r1)
            next_gene = model.tgpt.next_gene_loss(t1, model.tgpt.next_token_logits(h1))
            if args.objective == "thinned":
                e2, _ = model.embed(t2, r2)
        if args.objective == "thinned":
            contrastive = paired_view_contrastive(e1.float(), e2.float(), 0.1)
        elif (labels[rows] != "").all() and len(set(labels[rows])) > 1:
            contrastive = supervised_contrastive(e1, labels[rows].astype(str))
        else:
            contrastive = torch.zeros(())
        loss = next_gene.float() + contrastive
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append((float(next_gene.detach()), float(contrastive.detach())))
        step += 1
        if step % 50 == 0:
            m = np.mean(losses[-50:], 0)
            print(
                f"epoch {epoch} step {step} next {m[0]:.3f} nce {m[1]:.3f} |W| {model.mix.weight.norm():.3f} "
                f"{time.perf_counter() - start:.0f}s",
                flush=True,
            )
torch.save(model.state_dict(), OUT / f"model_{args.objective}_{EPOCHS}ep.pt")

model.eval()
rows = []
for name in ("pancreas", "pbmc_sorted", "cortex", "pbmc68k"):
    ev = load_set(name, DATA, 2000 if name == "pancreas" else 1000)
    cells = ev.adata
    matrix, set_genes = set_matrix(cells, ev.use_raw)
    set_tokens = vocab.lookup(set_genes)
    out_r, out_e, out_p = [], [], []
    with torch.no_grad():
        for i in range(0, matrix.shape[0], 128):
            block = matrix[i : i + 128]
            tokens = pad(
                rank_tokenize_csr(
                    block, set_tokens, begin_id=config.begin_id, end_id=config.end_id, max_len=config.max_len
                )
            )
            readout = torch.from_numpy(projection.transform(block, set_genes))
            e, h = model.embed(tokens, readout)
            out_e.append(e.numpy())
            out_r.append(readout.numpy())
            out_p.append(model.tgpt.pool(h, tokens).numpy())
    cells.obsm["X_readout"] = np.vstack(out_r).astype(np.float32)
    cells.obsm["X_residual"] = np.vstack(out_e).astype(np.float32)
    cells.obsm["X_pooled_only"] = np.vstack(out_p).astype(np.float32)
    scfm.bench.hvg_pca(cells, use_raw=ev.use_raw, key_added="X_hvg_pca")
    table = score(ev, ["X_readout", "X_residual", "X_pooled_only", "X_hvg_pca"])
    print(
        f"\n## {name}\n"
        + table[[c for c in ("Bio conservation", "Total", "15-NN accuracy") if c in table]].round(3).to_markdown(),
        flush=True,
    )

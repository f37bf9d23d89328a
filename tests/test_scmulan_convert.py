"""Import of the public scMulan checkpoint (``ckpt_scMulan.pt`` + ``meta_info.pt``).

The reference files are built here from the published layout's tensor names and shapes (a nanoGPT-style
``scMulanModel`` state dict under ``"model"``, its ``"model_args"``, and ``meta_info.pt`` with ``token_set``,
``gene_set`` and the ``cell_type``/``MCT`` sets); no download, no scMulan package. scfm's outputs are compared with an
independent float64 implementation of the reference forward pass, prompt builder and greedy generation written here
from the public code's semantics. The larger comparison is ``benchmarks/peers/scmulan_parity.py``.
"""

from __future__ import annotations

import math
import pickle

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import scfm
from scfm.cli import main as cli_main
from scfm.models import CheckpointError, load_pretrained
from scfm.models.scmulan import SCMulan, convert_scmulan_checkpoint, write_converted_scmulan

D, HEADS, LAYERS, LEVELS = 32, 4, 2, 10
GENES = [f"GENE{i}" for i in range(60)]
CELL_TYPES = ["T cell", "B cell", "NK cell", "monocyte"]
COARSE = ["lymphocyte", "myeloid"]


def token_set() -> list[str]:
    """Token 0 ends generation; genes are shuffled among metadata terms (their ids differ from gene-set order)."""
    order = np.random.default_rng(1).permutation(len(GENES))
    genes = [GENES[i] for i in order]
    return ["<#E#>", *genes[:30], "<PCT>", "Heart", "Lung", *CELL_TYPES, *COARSE, *genes[30:], "<GEN>"]


def state_dict(tokens: list[str], seed: int = 0, type_gain: float = 3.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    gain = 1 / math.sqrt(D)
    v = len(tokens)
    sd = {"transformer.wte.weight": rand(v, D), "transformer.wee.weight": rand(LEVELS + 1, D)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        sd |= {
            p + "ln_1.weight": 1 + rand(D, std=0.1),
            p + "ln_1.bias": rand(D, std=0.1),
            p + "attn.c_attn.weight": rand(3 * D, D, std=2 * gain),
            p + "attn.c_attn.bias": rand(3 * D, std=0.1),
            p + "attn.c_proj.weight": rand(D, D, std=gain),
            p + "attn.c_proj.bias": rand(D, std=0.1),
            p + "ln_2.weight": 1 + rand(D, std=0.1),
            p + "ln_2.bias": rand(D, std=0.1),
            p + "mlp.c_fc.weight": rand(4 * D, D, std=gain),
            p + "mlp.c_fc.bias": rand(4 * D, std=0.1),
            p + "mlp.c_proj.weight": rand(D, 4 * D, std=gain / 2),
            p + "mlp.c_proj.bias": rand(D, std=0.1),
        }
    sd |= {"transformer.ln_f.weight": 1 + rand(D, std=0.1), "transformer.ln_f.bias": rand(D, std=0.1)}
    head = rand(v, D, std=gain)
    head[[tokens.index(t) for t in CELL_TYPES + COARSE]] *= type_gain
    sd["lm_head.weight"] = head
    sd["epx_head.weight"] = rand(v, D, std=4 * gain)
    return sd


def model_args(tokens: list[str]) -> dict:
    return {
        "block_size": 1000,
        "vocab_size": len(tokens),
        "n_layer": LAYERS,
        "n_head": HEADS,
        "n_embd": D,
        "dropout": 0.0,
        "bias": True,
        "train_mode": "pretrian",
        "expression_level": LEVELS,
        "ele": 1,
    }


def write_reference(directory, *, sd=None, args=None, meta=None, type_gain: float = 3.0):
    tokens = token_set()
    directory.mkdir(parents=True, exist_ok=True)
    sd = state_dict(tokens, type_gain=type_gain) if sd is None else sd
    args = model_args(tokens) if args is None else args
    torch.save(
        {"model": sd, "model_args": args, "iter_num": 10, "best_val_loss": torch.tensor(2.0)},
        directory / "ckpt_scMulan.pt",
    )
    meta = {"token_set": tokens, "gene_set": list(GENES), "cell_type": set(CELL_TYPES), "MCT": set(COARSE)} | (
        meta or {}
    )
    torch.save(meta, directory / "meta_info.pt")
    return directory


def log_cells(n_cells: int = 12, seed: int = 0) -> ad.AnnData:
    """``normalize_total(1e4)`` + ``log1p`` cells over the gene set plus two genes the model does not know."""
    rng = np.random.default_rng(seed)
    names = [*GENES, "NOTAGENE1", "NOTAGENE2"]
    counts = rng.poisson(rng.gamma(0.5, 2.0, size=len(names)), size=(n_cells, len(names))).astype(np.float64)
    counts[:, 0] += 1  # every cell expresses a known gene
    known = counts[:, : len(GENES)]
    logged = np.log1p(counts / known.sum(1, keepdims=True) * 1e4)  # the reference normalises over its gene set
    adata = ad.AnnData(sp.csr_matrix(logged.astype(np.float32)))
    adata.var_names = names
    return adata


# -- an independent float64 reference: forward pass, prompt, greedy generation (no key/value cache) -----------------
def reference_forward(sd, idx: list[int], levels: list[int]) -> torch.Tensor:
    sd = {k: v.double() for k, v in sd.items()}
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wee.weight"][levels]
    t, hd = x.shape[0], D // HEADS
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (D,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        qkv = h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, j * D : (j + 1) * D].reshape(t, HEADS, hd).transpose(0, 1) for j in range(3))
        scores = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(0, 1).reshape(t, D)
        x = x + y @ sd[p + "attn.c_proj.weight"].T + sd[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (D,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return F.layer_norm(x, (D,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5)


def reference_annotate(sd, tokens: list[str], row: np.ndarray, gene_names: list[str]):
    """Return ``(coarse, fine, embedding)`` of one cell as the public scMulan computes them."""
    values = dict(zip(gene_names, row, strict=True))
    expressed = [(g, values[g]) for g in GENES if values[g] > 0][::-1]  # gene-set order, reversed
    vals = np.array([v for _, v in expressed])
    levels = list(np.digitize(vals, np.linspace(0, vals.max(), LEVELS + 1), right=True))
    ids = [tokens.index(g) for g, _ in expressed] + [tokens.index("<PCT>")]
    levels = [int(v) for v in levels] + [0]
    prefix, hidden = len(ids), None
    while True:
        hidden = reference_forward(sd, ids, levels)
        logits = hidden[-1] @ sd["lm_head.weight"].double().T
        logits[ids[:-1]] = float("-inf")
        chosen = int(torch.argmax(logits))
        level = float(hidden[-1] @ sd["epx_head.weight"].double()[chosen])
        ids.append(chosen)
        levels.append(int(min(max(round(level), 0), 10)))
        if chosen == 0 or len(ids) >= prefix + 3:
            break
    names = [tokens[t] for t in ids[-3:-1]]
    types = set(CELL_TYPES) | set(COARSE)
    coarse, fine = (n if n in types else "Unclassified" for n in names)
    return coarse, fine, hidden[-2].numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("scmulan")
    source = write_reference(root / "reference")
    destination = root / "converted"
    assert cli_main(["convert", "scmulan", str(source), str(destination)]) == 0
    return source, destination


def test_conversion_writes_an_scfm_checkpoint(converted):
    source, destination = converted
    for name in ("config.json", "vocab.json", "model.safetensors", "model_card.md"):
        assert (destination / name).is_file()
    pretrained = load_pretrained(destination)
    config, vocab, tokens = pretrained.module.config, pretrained.vocab, token_set()
    assert pretrained.family == "scmulan" and config.layout == "reference"
    assert config.n_reference_tokens == len(tokens) and len(vocab) == len(tokens) + 3
    assert vocab["GENE5"] == tokens.index("GENE5") and vocab["<PCT>"] == config.task_token_id
    assert vocab["<meta:T cell>"] == tokens.index("T cell") and "T cell" not in vocab.genes
    assert sorted(vocab.genes) == sorted(GENES)
    assert config.gene_order == [tokens.index(g) for g in GENES]  # the gene set is not in token-id order
    assert sorted(config.metadata_terms["cell_type"]) == sorted(CELL_TYPES + COARSE)
    card = (destination / "model_card.md").read_text()
    digest = scfm.models.base._checkpoint.file_sha256
    assert digest(source / "ckpt_scMulan.pt") in card and digest(source / "meta_info.pt") in card
    sd = torch.load(source / "ckpt_scMulan.pt", weights_only=True)["model"]
    module = pretrained.module
    assert torch.equal(module.entity_head.weight, sd["lm_head.weight"])
    assert torch.equal(module.level_head.weight, sd["epx_head.weight"])
    assert torch.equal(module.entity_embedding.weight[: len(tokens)], sd["transformer.wte.weight"])
    assert not module.entity_embedding.weight[len(tokens) :].any()


def test_annotations_and_embeddings_equal_the_reference(converted):
    source, destination = converted
    sd = torch.load(source / "ckpt_scMulan.pt", weights_only=True)["model"]
    adata = log_cells()
    expected = [
        reference_annotate(sd, token_set(), adata.X[i].toarray()[0], list(adata.var_names)) for i in range(adata.n_obs)
    ]
    model = SCMulan.from_pretrained(str(destination), adata.copy(), min_genes=10)
    table = model.predict_metadata()["cell_type"].table
    assert list(table["label"]) == [fine for _, fine, _ in expected]
    assert list(table["coarse_label"]) == [coarse for coarse, _, _ in expected]
    assert len(set(table["label"])) > 1  # the comparison is not vacuous
    embedded = adata.copy()
    scfm.tl.embed(embedded, model=str(destination), min_genes=10, progress=False)
    reference = np.stack([e for _, _, e in expected])
    ours = embedded.obsm["X_scfm"]
    cos = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() > 0.99999
    # raw counts of the same cells give the same prompts (normalised over the gene set, as the reference tutorial)
    counts = adata.copy()
    counts.X = counts.X.copy()
    counts.X.data = np.expm1(counts.X.data)
    counts.X = sp.csr_matrix(np.round(counts.X.toarray() * 3))  # a library size of its own, integer counts
    again = SCMulan.from_pretrained(str(destination), counts, min_genes=10).predict_metadata()["cell_type"].table
    assert list(again["label"]) == list(table["label"])


def test_unclassified_when_generation_leaves_the_cell_types(tmp_path):
    source = write_reference(tmp_path / "reference", type_gain=0.0)  # cell-type rows of lm_head are zero
    destination = write_converted_scmulan(source, tmp_path / "converted")
    adata = log_cells(6)
    sd = torch.load(source / "ckpt_scMulan.pt", weights_only=True)["model"]
    expected = [reference_annotate(sd, token_set(), adata.X[i].toarray()[0], list(adata.var_names)) for i in range(6)]
    table = SCMulan.from_pretrained(str(destination), adata, min_genes=10).predict_metadata()["cell_type"].table
    assert list(table["label"]) == [fine for _, fine, _ in expected]
    assert "Unclassified" in set(table["label"])


def test_reference_directory_is_read_in_memory(converted):
    source, destination = converted
    adata = log_cells(4)
    direct, via = adata.copy(), adata.copy()
    scfm.tl.embed(direct, model=str(source), min_genes=10, progress=False)
    scfm.tl.embed(via, model=str(destination), min_genes=10, progress=False)
    np.testing.assert_allclose(direct.obsm["X_scfm"], via.obsm["X_scfm"], atol=1e-6)


def test_generation_is_refused_clearly(converted):
    with pytest.raises(ValueError, match="not implemented"):
        scfm.models.scmulan.generate_anndata(load_pretrained(converted[1]), 2, device=torch.device("cpu"))


# -- bad inputs ------------------------------------------------------------------------------------------------------
def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_scmulan_checkpoint(tmp_path / "nothing.pt")
    source = write_reference(tmp_path / "ref")
    (source / "meta_info.pt").unlink()
    with pytest.raises(CheckpointError, match=r"meta_info\.pt is missing"):
        convert_scmulan_checkpoint(source / "ckpt_scMulan.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="must hold the scMulan checkpoint"):
        convert_scmulan_checkpoint(empty)


def test_extra_and_missing_tensors(tmp_path):
    tokens = token_set()
    sd = state_dict(tokens) | {"transformer.wpe.weight": torch.zeros(10, D)}
    with pytest.raises(CheckpointError, match=r"no counterpart.*transformer\.wpe\.weight"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "extra", sd=sd))
    sd = state_dict(tokens)
    del sd["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "missing", sd=sd))
    sd = state_dict(tokens)
    del sd["epx_head.weight"]
    with pytest.raises(CheckpointError, match=r"epx_head\.weight is None"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "no_head", sd=sd))


def test_wrong_shapes(tmp_path):
    tokens = token_set()
    sd = state_dict(tokens)
    sd["lm_head.weight"] = sd["lm_head.weight"][:-1]
    with pytest.raises(CheckpointError, match=r"lm_head.weight is \(\d+, 32\)"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "head", sd=sd))
    sd = state_dict(tokens)
    sd["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(3 * D, D)
    with pytest.raises(CheckpointError, match=r"linear1\.weight"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "mlp", sd=sd))
    args = model_args(tokens) | {"n_layer": 3}
    with pytest.raises(CheckpointError, match="n_layer=3"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "layers", args=args))


def test_foreign_architecture(tmp_path):
    gpt2 = {"transformer.wte.weight": torch.zeros(10, D), "transformer.h.0.attn.c_attn.weight": torch.zeros(D, 3 * D)}
    gpt2 |= {"transformer.h.0.attn.masked_bias": torch.zeros(()), "lm_head.weight": torch.zeros(10, D)}
    with pytest.raises(CheckpointError, match="another architecture"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "gpt2", sd=gpt2))
    source = tmp_path / "plain"
    source.mkdir()
    torch.save({"encoder.weight": torch.zeros(3)}, source / "ckpt_scMulan.pt")
    torch.save({"token_set": token_set(), "gene_set": GENES, "cell_type": set(CELL_TYPES)}, source / "meta_info.pt")
    with pytest.raises(CheckpointError, match="not an scMulan checkpoint"):
        convert_scmulan_checkpoint(source)
    with pytest.raises(CheckpointError, match="ele=0"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "ele", args=model_args(token_set()) | {"ele": 0}))
    del_args = model_args(token_set())
    del del_args["n_embd"]
    with pytest.raises(CheckpointError, match=r"lacks \['n_embd'\]"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "args", args=del_args))


def test_vocabulary_mismatch(tmp_path):
    tokens = token_set()
    with pytest.raises(CheckpointError, match="different models"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "short", meta={"token_set": tokens[:-1]}))
    with pytest.raises(CheckpointError, match="gene_set entries are not in token_set"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "genes", meta={"gene_set": [*GENES, "ZZZ"]}))
    with pytest.raises(CheckpointError, match="cell_type/MCT entries are not in token_set"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "types", meta={"MCT": {"alien"}}))
    no_task = [t if t != "<PCT>" else "<OTHER>" for t in tokens]
    with pytest.raises(CheckpointError, match="<PCT>"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "task", meta={"token_set": no_task}))
    twice = [*tokens[:-1], tokens[1]]
    with pytest.raises(CheckpointError, match="lists tokens twice"):
        convert_scmulan_checkpoint(write_reference(tmp_path / "twice", meta={"token_set": twice}))


class NotPlainData:
    pass


def test_pickled_objects_are_refused(tmp_path):
    source = write_reference(tmp_path / "ref")
    torch.save({"token_set": token_set(), "gene_set": GENES, "cell_type": NotPlainData()}, source / "meta_info.pt")
    with pytest.raises(CheckpointError, match=r"meta_info.pt contains pickled Python objects.*weights_only"):
        convert_scmulan_checkpoint(source)
    with open(source / "ckpt_scMulan.pt", "wb") as handle:
        pickle.dump({"model": NotPlainData()}, handle)
    with pytest.raises(CheckpointError, match=r"ckpt_scMulan\.pt"):
        convert_scmulan_checkpoint(source)


def test_generation_stopping_at_token_zero(tmp_path):
    """With ``ln_f.weight`` zero every hidden state is ``ln_f.bias``; a head row along it makes token 0 win at once."""
    tokens = token_set()
    sd = state_dict(tokens)
    sd["transformer.ln_f.weight"] = torch.zeros(D)
    sd["lm_head.weight"][0] = 100 * sd["transformer.ln_f.bias"]
    source = write_reference(tmp_path / "reference", sd=sd)
    adata = log_cells(3)
    expected = [reference_annotate(sd, tokens, adata.X[i].toarray()[0], list(adata.var_names)) for i in range(3)]
    assert all(fine == coarse == "Unclassified" for coarse, fine, _ in expected)
    destination = write_converted_scmulan(source, tmp_path / "converted")
    table = SCMulan.from_pretrained(str(destination), adata.copy(), min_genes=10).predict_metadata()["cell_type"].table
    assert list(table["label"]) == ["Unclassified"] * 3 and list(table["coarse_label"]) == ["Unclassified"] * 3
    assert (table["probability"] == 1).all()  # no fine step happened: "Unclassified" for sure


def test_annotate_tool_and_candidates(converted):
    adata = log_cells(6)
    scfm.tl.annotate(adata, model=str(converted[1]), method="generate", min_genes=10, progress=False)
    model = SCMulan.from_pretrained(str(converted[1]), log_cells(6), min_genes=10)
    table = model.predict_metadata()["cell_type"].table
    assert list(adata.obs["scfm_cell_type"].astype(str)) == list(table["label"])
    assert "Unclassified" in set(table["label"])  # the label the reference gives when no cell type is generated
    restricted = log_cells(6)
    with pytest.warns(UserWarning, match="not a type"):
        scfm.tl.annotate(
            restricted,
            model=str(converted[1]),
            method="generate",
            candidates=["B cell", "NK cell", "not a type"],
            min_genes=10,
            progress=False,
        )
    assert set(restricted.obs["scfm_cell_type"].astype(str)) <= {"B cell", "NK cell"}
    with pytest.raises(KeyError, match="cell_type"):
        model.predict_metadata(keys=["tissue"])

"""Gene identifiers: Ensembl ids, symbols in any case, aliases and previous symbols resolve via the shipped table."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import scfm
from scfm.genes import GeneVocab, align_genes, human_gene_table, vocabulary_genes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TP53 = "ENSG00000141510"
ACTB = "ENSG00000075624"
TENT5C = "ENSG00000183508"  # official TENT5C, previous symbol FAM46C
DEFB105 = "ENSG00000186599"  # one Ensembl id of two genes: DEFB105A and DEFB105B
FILLER = [f"FILLER{i}" for i in range(20)]


@pytest.fixture(scope="module")
def table():
    return human_gene_table()


@pytest.fixture(scope="module")
def vocab():
    return GeneVocab(["TP53", "ACTB", "GAPDH", "FAM46C", "CD3E", "FMC1", "DEFB105A", *FILLER])


def _var(names, **columns) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(list(names), dtype=object))


def _kinds(aln) -> list[str]:
    return aln.report()["match"].astype(str).tolist()


# --- the shipped table ------------------------------------------------------------------------------------------------


def test_shipped_table_is_in_the_package_and_documented(table):
    folder = resources.files("scfm.genes") / "data"
    assert (folder / "human_genes.tsv.gz").is_file()
    meta = json.loads((folder / "human_genes.json").read_text())
    assert meta["source_data_date"] == "2022-09-12" and "org.Hs.eg.db 3.16.0" in meta["source"]
    assert meta["n_symbols"] == len(table.official) == 77_510
    # the known traps of the source, counted by the build script
    assert meta["n_ensembl_ids_several_symbols"] == 350
    assert meta["n_aliases_several_symbols"] == 3433
    assert meta["n_aliases_equal_to_official_symbol"] == 1567
    assert table.symbols_for_ensembl(TP53) == ("TP53",)
    assert table.symbols_for_alias("p53") == ("TP53",)


# --- match kinds ------------------------------------------------------------------------------------------------------


def test_ensembl_ids_with_and_without_version(vocab):
    names = [TP53, f"{ACTB}.17", f"{TENT5C}.5", "ENSG00000999999"]
    aln = align_genes(_var(names), vocab, min_genes=1)
    assert aln.column_token_ids().tolist() == [vocab["TP53"], vocab["ACTB"], vocab["FAM46C"], -1]
    assert _kinds(aln) == ["ensembl", "ensembl", "ensembl", "unmatched"]
    report = aln.report()
    assert report.loc[f"{TENT5C}.5", "via"] == "TENT5C"  # newer official symbol, vocabulary has the previous one
    assert aln.id_type == "ensembl" and aln.counts()["ensembl"] == 3
    assert "3 via Ensembl ids" in aln.summary()


def test_symbols_in_any_case(vocab):
    aln = align_genes(_var(["tp53", "Actb", "GAPDH", "cD3e"]), vocab, min_genes=1)
    assert aln.n_matched == 4 and _kinds(aln) == ["case", "case", "direct", "case"]
    assert aln.n_casefold == 3


def test_aliases_and_previous_symbols_are_opt_in(vocab):
    names = ["P53", "TENT5C", "GAPDH"]  # an alias of TP53; the official symbol of FAM46C's gene
    off = align_genes(_var(names), vocab, min_genes=1)
    assert _kinds(off) == ["unmatched", "unmatched", "direct"]
    on = align_genes(_var(names), vocab, min_genes=1, aliases=True)
    assert on.column_token_ids().tolist() == [vocab["TP53"], vocab["FAM46C"], vocab["GAPDH"]]
    assert _kinds(on) == ["alias", "alias", "direct"]
    assert on.report()["via"].tolist() == ["TP53", "TENT5C", ""]
    assert "2 by alias or previous symbol" in on.summary()


def test_aliases_only_fill_genes_that_match_no_other_way(vocab):
    # "TP53" matches directly, so its alias "P53" must not take the token; the alias column is reported
    aln = align_genes(_var(["P53", "TP53"]), vocab, min_genes=1, aliases=True)
    assert aln.var_index.tolist() == [1]
    assert _kinds(aln) == ["duplicate", "direct"]


def test_ambiguous_alias_and_ensembl_id_are_reported_not_guessed(vocab):
    # C7orf55 is an alias of FMC1 and of FMC1-LUC7L2; the vocabulary knows only FMC1, still no guess
    aln = align_genes(_var(["C7orf55", DEFB105, "TP53"]), vocab, min_genes=1, aliases=True)
    assert aln.var_index.tolist() == [2]
    assert _kinds(aln) == ["ambiguous", "ambiguous", "direct"]
    assert aln.ambiguous() == {"C7orf55": ["FMC1", "FMC1-LUC7L2"], DEFB105: ["DEFB105A", "DEFB105B"]}
    record = aln.to_dict()
    assert record["n_ambiguous"] == 2 and "C7orf55 -> FMC1|FMC1-LUC7L2" in record["ambiguous_examples"]


def test_alias_equal_to_another_official_symbol_is_not_guessed(table):
    # TPP1 is an alias of ACD and the official symbol of another gene: it means that gene, never ACD
    assert table.official_symbol("TPP1") == "TPP1" and "ACD" in table.symbols_for_alias("TPP1")
    vocab = GeneVocab(["ACD", *FILLER])
    aln = align_genes(_var(["TPP1", *FILLER]), vocab, min_genes=1, aliases=True)
    assert _kinds(aln)[0] == "unmatched"
    # and a vocabulary token that is another gene's official symbol is not used as a previous symbol:
    # A1CF was once called ACF, but ACF is now the official symbol of another gene
    a1cf = table.ensembl_ids()["A1CF"][0]
    assert table.official_symbol("ACF") == "ACF"
    acf_vocab = GeneVocab(["ACF", *FILLER])
    assert _kinds(align_genes(_var([a1cf, *FILLER]), acf_vocab, min_genes=1))[0] == "unmatched"


def test_two_inputs_for_one_token_direct_wins_and_is_reported(vocab):
    names = [TP53, "TP53", f"{ACTB}.1", "actb", *FILLER]
    aln = align_genes(_var(names), vocab, min_genes=1)  # on_duplicate="error": different names, no error
    assert aln.var_index.tolist() == [1, 3, *range(4, 24)]
    assert _kinds(aln)[:4] == ["duplicate", "direct", "duplicate", "case"]
    report = aln.report()
    assert report.loc[TP53, "token"] == "TP53" and not report.loc[TP53, "kept"]
    assert aln.counts()["duplicate"] == 2 and "2 dropped as duplicates" in aln.summary()


def test_two_ensembl_ids_for_one_symbol_first_wins(vocab):
    names = [f"{TP53}.16", f"{TP53}.17", "GAPDH"]  # the same id in two versions is the same name given twice
    with pytest.raises(ValueError, match="1 gene names occur more than once"):
        align_genes(_var(names), vocab, min_genes=1)
    aln = align_genes(_var(names), vocab, min_genes=1, on_duplicate="first")
    assert aln.var_index.tolist() == [0, 2]


def test_mixed_column_of_symbols_and_ensembl_ids(vocab):
    names = ["TP53", ACTB, "gapdh", f"{TENT5C}.2", "NOT_A_GENE", *FILLER]
    var = _var([f"g{i}" for i in range(len(names))], feature=pd.Categorical(names))
    aln = align_genes(var, vocab, gene_key="feature", min_genes=1)
    assert aln.n_matched == 24 and aln.source == "var['feature']"
    assert _kinds(aln)[:5] == ["direct", "ensembl", "case", "ensembl", "unmatched"]
    assert aln.counts() == {
        "direct": 21,
        "case": 1,
        "ensembl": 2,
        "alias": 0,
        "unmatched": 1,
        "ambiguous": 0,
        "duplicate": 0,
    }


def test_ensembl_column_is_found_when_var_names_do_not_match(vocab):
    var = _var([f"probe{i}" for i in range(4)], gene_ids=[TP53, ACTB, f"{TENT5C}.1", "ENSG00000999999"])
    aln = align_genes(var, vocab, min_genes=1)
    assert aln.source == "var['gene_ids']" and aln.n_matched == 3


def test_gene_id_type_restricts_the_resolution(vocab):
    var = _var([TP53, ACTB, "ENSG00000999999"], symbols=["TP53", "ACTB", "NOT_A_GENE"])
    assert align_genes(var, vocab, min_genes=1, gene_id_type="symbol").source == "var['symbols']"
    assert align_genes(var, vocab, min_genes=1, gene_id_type="ensembl").n_matched == 2
    with pytest.raises(ValueError, match="gene_id_type='ensembl' but var_names look like gene symbols"):
        align_genes(_var(["tp53", "actb"]), vocab, min_genes=1, gene_id_type="ensembl")
    with pytest.raises(ValueError, match="like Ensembl gene ids but gene_id_type='symbol'; pass gene_id_type='auto'"):
        align_genes(_var([TP53, ACTB]), vocab, min_genes=1, gene_id_type="symbol")
    with pytest.raises(ValueError, match="gene_id_type must be one of"):
        align_genes(var, vocab, gene_id_type="entrez")


def test_mouse_symbols(vocab):
    names = ["Actb", "Gapdh", "Cd3e", "Tent5c", "Trp53"]  # Trp53 is also a human alias of TP53
    human = align_genes(_var(names), vocab, min_genes=1, aliases=True)
    assert _kinds(human) == ["case", "case", "case", "alias", "alias"]
    mouse = align_genes(_var(names), vocab, min_genes=1, species="mouse", aliases=True)
    assert _kinds(mouse) == ["case", "case", "case", "unmatched", "unmatched"]  # no human alias table
    assert align_genes(_var(names), vocab, min_genes=1, species="mouse").column_token_ids().tolist()[:3] == [
        vocab["ACTB"],
        vocab["GAPDH"],
        vocab["CD3E"],
    ]
    assert mouse.species == "mouse" and mouse.to_dict()["species"] == "mouse"
    with pytest.raises(ValueError, match=r"non-human .*Ensembl gene ids.*species='mouse'"):
        align_genes(_var([f"ENSMUSG{i:011d}.1" for i in range(5)]), vocab, min_genes=1)
    with pytest.raises(ValueError, match="species must be one of"):
        align_genes(_var(names), vocab, species="rat")


def test_vocabulary_from_ensembl_names_uses_symbols(vocab):
    var = _var([TP53, f"{ACTB}.3", DEFB105, "ENSG00000999999", "CD3E"])
    genes = vocabulary_genes(var)
    assert genes == ["TP53", "ACTB", DEFB105, "ENSG00000999999", "CD3E"]
    own = GeneVocab(genes)
    aln = align_genes(var, own, min_genes=1)
    assert aln.n_matched == 5  # the same data meets the vocabulary built from it
    assert align_genes(_var(["TP53", "ACTB"]), own, min_genes=1).n_matched == 2


# --- tools ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pbmc_ensembl():
    """pbmc68k_reduced raw counts (first 60 cells), genes named by symbol and by their one Ensembl id."""
    raw = sc.datasets.pbmc68k_reduced().raw.to_adata()[:60]
    table = human_gene_table()
    ids = table.ensembl_ids()
    symbols = [s for s in raw.var_names if len(ids.get(s, ())) == 1 and table.symbols_for_ensembl(ids[s][0]) == (s,)]
    by_symbol = raw[:, symbols].copy()
    by_symbol.X = sp.csr_matrix(np.expm1(by_symbol.X.toarray()) if sp.issparse(by_symbol.X) else by_symbol.X)
    by_ensembl = by_symbol.copy()
    by_ensembl.var_names = [f"{ids[s][0]}.{i % 20 + 1}" for i, s in enumerate(symbols)]
    return by_symbol, by_ensembl


def test_embedding_by_symbols_and_by_ensembl_ids_agree(pbmc_ensembl):
    by_symbol, by_ensembl = (adata.copy() for adata in pbmc_ensembl)
    scfm.tl.embed(by_symbol, progress=False)
    scfm.tl.embed(by_ensembl, progress=False)
    a, b = by_symbol.uns["scfm"]["X_scfm"], by_ensembl.uns["scfm"]["X_scfm"]
    assert a["genes_matched"] == b["genes_matched"] > 600
    assert b["genes_ensembl"] == b["genes_matched"] and a["genes_direct"] == a["genes_matched"]
    assert b["gene_rules"] == {"gene_id_type": "auto", "species": "human", "aliases": False}
    np.testing.assert_allclose(by_symbol.obsm["X_scfm"], by_ensembl.obsm["X_scfm"], atol=1e-6, rtol=0)


def test_gene_overlap_reports_every_gene(pbmc_ensembl):
    _, by_ensembl = pbmc_ensembl
    adata = by_ensembl.copy()
    adata.var_names = [*adata.var_names[:-3], "ENSG00000999999", DEFB105, "p53"]
    overlap = scfm.pp.gene_overlap(adata)
    report = overlap.report()
    assert report.index.equals(adata.var_names)
    assert report["match"].astype(str).tolist()[-3:] == ["unmatched", "ambiguous", "unmatched"]
    assert overlap.counts()["ensembl"] == overlap.n_matched
    with_aliases = scfm.pp.gene_overlap(adata, aliases=True)
    assert with_aliases.report().loc["p53", "token"] == "TP53"
    assert "scfm" not in adata.uns  # nothing written


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [("gene_id_type", "entrez", ValueError), ("species", "rat", ValueError), ("aliases", "yes", TypeError)],
)
def test_bad_rules_name_the_argument_and_leave_adata_unchanged(pbmc_ensembl, argument, value, error):
    adata = pbmc_ensembl[1][:5].copy()
    before = adata.copy()
    with pytest.raises(error, match=argument):
        scfm.tl.embed(adata, progress=False, **{argument: value})
    with pytest.raises(error, match=argument):
        scfm.pp.gene_overlap(adata, **{argument: value})
    assert adata.uns.keys() == before.uns.keys() and adata.obsm.keys() == before.obsm.keys()


@pytest.mark.shared_data
@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")
def test_visium_ensembl_ids_match_as_many_genes_as_symbols():
    adata = ad.read_h5ad(DATA / "spatial" / "visium_dlpfc_maynard2021_151673_500genes.h5ad")
    by_symbol = scfm.pp.gene_overlap(adata, "scgpt", gene_id_type="symbol")
    by_id = scfm.pp.gene_overlap(adata, "scgpt", gene_key="gene_ids")
    assert by_id.counts()["ensembl"] == by_id.n_matched >= by_symbol.n_matched > 150


def test_pretraining_vocabulary_from_ensembl_and_symbol_shards(vocab):
    from types import SimpleNamespace

    from scfm.train import union_vocab

    ensembl_shard = SimpleNamespace(name="a", var=_var([f"{TP53}.3", ACTB, DEFB105]))
    symbol_shard = SimpleNamespace(name="b", var=_var(["TP53", "GAPDH"]))
    union = union_vocab([ensembl_shard, symbol_shard], None)
    assert union.genes == ["TP53", "ACTB", DEFB105, "GAPDH"]
    for shard, n in ((ensembl_shard, 3), (symbol_shard, 2)):
        assert align_genes(shard.var, union, min_genes=1).n_matched == n


def test_model_classes_take_the_same_rules(pbmc_ensembl):
    by_symbol, by_ensembl = (adata[:40].copy() for adata in pbmc_ensembl)
    direct = scfm.models.SCGPT.from_pretrained(None, by_symbol, min_genes=20)
    resolved = scfm.models.SCGPT.from_pretrained(None, by_ensembl, min_genes=20, gene_id_type="ensembl")
    assert resolved.alignment.n_matched == direct.alignment.n_matched
    np.testing.assert_allclose(
        resolved.get_latent_representation(), direct.get_latent_representation(), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="only 0 of"):
        scfm.models.SCGPT.from_pretrained(None, pbmc_ensembl[1][:40].copy(), min_genes=20, gene_id_type="symbol")
    with pytest.raises(ValueError, match="species"):
        scfm.models.TGPT.from_pretrained("tgpt", pbmc_ensembl[0][:40].copy(), species="rat")


# --- the same rules in every tool that aligns genes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ensembl_counts(pbmc_ensembl):
    """40 Ensembl-named cells of integer counts, with two labels and two batches, and a 20-cell reference."""
    adata = pbmc_ensembl[1].copy()
    adata.X.data = np.rint(adata.X.data)
    adata.X.eliminate_zeros()
    adata.obs["label"] = np.where(np.arange(adata.n_obs) % 2, "A", "B")
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) < adata.n_obs / 2, "b0", "b1")
    return adata[:40].copy(), adata[40:].copy()


def _run_tool(tool: str, adata, reference, **rules) -> str:
    """Run ``tool`` quickly on ``adata`` with the gene rules ``rules``; return its provenance key."""
    quiet = {"progress": False, "device": "cpu"}
    if tool == "annotate_scmulan":  # zero-shot, by generation
        scfm.tl.annotate(adata, model="scmulan", **quiet, **rules)
    elif tool.startswith("annotate_"):  # kNN from the reference: scGPT's training copies, CellPLM's alignments
        model = {"annotate_scgpt": None, "annotate_cellplm": "cellplm"}[tool]
        scfm.tl.annotate(adata, reference, "label", model=model, method="knn", n_neighbors=5, **quiet, **rules)
    elif tool == "integrate":
        scfm.tl.integrate(adata, "batch", method="finetune", max_epochs=1, n_top_genes=50, max_len=32, **quiet, **rules)
        return "X_scfm_integrated"
    elif tool == "denoise":
        scfm.tl.denoise(adata, **quiet, **rules)
        return "scfm_denoised"
    elif tool == "impute":
        scfm.tl.impute(adata, ["CD3E"], **quiet, **rules)
        return "scfm_imputed"
    else:
        scfm.tl.bulk_features(adata, **quiet, **rules)
        return "X_scfm_bulk"
    return "scfm_cell_type"


@pytest.mark.parametrize(
    "tool",
    ["annotate_scgpt", "annotate_cellplm", "annotate_scmulan", "integrate", "denoise", "impute", "bulk_features"],
)
def test_every_tool_takes_the_gene_rules_and_records_them(ensembl_counts, tool):
    adata, reference = (a.copy() for a in ensembl_counts)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"only 0 of .*gene_id_type='symbol'"):
        _run_tool(tool, adata, reference, gene_id_type="symbol")
    with pytest.raises(ValueError, match=r"only 0 of .*species='mouse'"):
        _run_tool(tool, adata, reference, species="mouse")
    assert "scfm" not in adata.uns and adata.obs.columns.equals(before.obs.columns)
    assert adata.obsm.keys() == before.obsm.keys() and adata.layers.keys() == before.layers.keys()
    key = _run_tool(tool, adata, reference)
    record = adata.uns["scfm"][key]
    assert record["gene_rules"] == {"gene_id_type": "auto", "species": "human", "aliases": False}
    assert record["genes_ensembl"] == record["genes_matched"] > 300 and record["gene_id_type"] == "ensembl"
    if tool in ("annotate_scgpt", "annotate_cellplm"):
        assert record["reference_genes_ensembl"] == record["reference_genes_matched"] == record["genes_matched"]

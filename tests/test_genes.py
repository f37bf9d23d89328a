import json
import time

import numpy as np
import pandas as pd
import pytest

from scfm.genes import SPECIAL_TOKENS, GeneAlignment, GeneVocab, align_genes

GENES = [f"GENE{i}" for i in range(100)]


@pytest.fixture
def vocab() -> GeneVocab:
    return GeneVocab(GENES)


def _var(names, **columns) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(names, dtype=object))


# --- GeneVocab -------------------------------------------------------------------------------------------------------


def test_ids_specials_first_then_genes():
    vocab = GeneVocab(["ACTB", "GAPDH", "CD3E"])
    assert vocab.tokens == ["<pad>", "<cls>", "<eoc>", "<mask>", "ACTB", "GAPDH", "CD3E"]
    assert len(vocab) == 7
    assert (vocab.pad_id, vocab.cls_id, vocab.eoc_id, vocab.mask_id) == (0, 1, 2, 3)
    assert vocab["GAPDH"] == 5
    assert vocab.token(6) == "CD3E"
    assert vocab.genes == ["ACTB", "GAPDH", "CD3E"]
    assert "ACTB" in vocab and "<cls>" in vocab and "actb" not in vocab and 3 not in vocab
    assert SPECIAL_TOKENS == ("<pad>", "<cls>", "<eoc>", "<mask>")


def test_custom_specials():
    vocab = GeneVocab(["A", "B"], specials=("<pad>", "<cls>"))
    assert vocab.tokens == ["<pad>", "<cls>", "A", "B"]
    assert vocab.eoc_id is None and vocab.mask_id is None


@pytest.mark.parametrize(
    ("genes", "match"),
    [
        (["A", "B", "A"], "'A'"),
        (["A", "<cls>"], "'<cls>'"),
        (["A", ""], "non-empty"),
        (["A", float("nan")], "non-empty"),
        (["A", None], "non-empty"),
    ],
)
def test_bad_genes(genes, match):
    with pytest.raises(ValueError, match=match):
        GeneVocab(genes)


def test_missing_required_special():
    with pytest.raises(ValueError, match="<cls>"):
        GeneVocab(["A"], specials=("<pad>",))


def test_getitem_and_token_errors(vocab):
    with pytest.raises(KeyError, match="'NOPE' is not in the vocabulary"):
        vocab["NOPE"]
    with pytest.raises(KeyError, match="did you mean 'GENE1'"):
        vocab["gene1"]
    with pytest.raises(IndexError):
        vocab.token(len(vocab))


def test_from_dict_scgpt_like():
    mapping = {"TP53": 0, "<pad>": 3, "ACTB": 1, "<cls>": 4, "<eoc>": 2, "CD4": 5}
    vocab = GeneVocab.from_dict(mapping)
    assert vocab.tokens == ["TP53", "ACTB", "<eoc>", "<pad>", "<cls>", "CD4"]
    assert vocab.genes == ["TP53", "ACTB", "CD4"]
    assert (vocab.pad_id, vocab.cls_id, vocab.eoc_id, vocab.mask_id) == (3, 4, 2, None)
    assert vocab.to_dict() == mapping
    assert list(vocab.to_dict().values()) == [0, 1, 2, 3, 4, 5]
    assert vocab.lookup(["<pad>", "CD4", "<eoc>"]).tolist() == [-1, 5, -1]


def test_from_dict_other_bracket_tokens_are_special():
    vocab = GeneVocab.from_dict({"<pad>": 0, "<cls>": 1, "<unk>": 2, "A": 3})
    assert vocab.genes == ["A"]
    assert vocab.lookup(["<unk>"]).tolist() == [-1]


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"<pad>": 0, "<cls>": 1, "A": 3}, "0..2"),
        ({"<pad>": 0, "<cls>": 1, "A": 1}, "both"),
        ({"<pad>": 0, "<cls>": 1, "A": -1}, "0..2"),
        ({"<pad>": 0, "A": 1}, "<cls>"),
        ({"<pad>": 0, "<cls>": 1, "A": "2"}, "integers"),
        ({"<pad>": 0, "<cls>": 1, "A": True}, "integers"),
        ({}, "<pad>"),
    ],
)
def test_from_dict_invalid(mapping, match):
    with pytest.raises(ValueError, match=match):
        GeneVocab.from_dict(mapping)


def test_save_load_round_trip(tmp_path, vocab):
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text()) == vocab.to_dict()
    loaded = GeneVocab.load(path)
    assert loaded == vocab
    assert loaded.tokens == vocab.tokens
    assert GeneVocab.load(tmp_path) == vocab  # a directory resolves to <dir>/vocab.json
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left behind


def test_save_load_scgpt_order(tmp_path):
    vocab = GeneVocab.from_dict({"B": 0, "<pad>": 1, "<cls>": 2, "A": 3})
    vocab.save(tmp_path / "v.json")
    assert GeneVocab.load(tmp_path / "v.json").tokens == ["B", "<pad>", "<cls>", "A"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        GeneVocab.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        GeneVocab.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        GeneVocab.load(bad)
    bad.write_text('{"<pad>": 0, "<cls>": 2}')
    with pytest.raises(ValueError, match="invalid vocabulary file"):
        GeneVocab.load(bad)


def test_fingerprint_and_equality():
    a = GeneVocab(["A", "B"])
    b = GeneVocab.from_dict(a.to_dict())
    c = GeneVocab(["B", "A"])
    fp = a.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == b.fingerprint() == GeneVocab(["A", "B"]).fingerprint()
    assert fp != c.fingerprint()
    assert a == b and a != c and hash(a) == hash(b)
    assert a != "not a vocab"


def test_lookup_exact(vocab):
    ids = vocab.lookup(["GENE0", "gene0", "NOPE", float("nan"), None, "", "GENE99", "<pad>"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [4, -1, -1, -1, -1, -1, 103, -1]


def test_lookup_casefold():
    vocab = GeneVocab(["ACTB", "Abc", "ABC", "Xyz"])
    ids = vocab.lookup_casefold(["actb", "Actb", "ACTB", "abc", "ABC", "XYZ", float("nan"), "none"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [4, 4, 4, -1, -1, 7, -1, -1]


# --- align_genes -----------------------------------------------------------------------------------------------------


def test_align_exact(vocab):
    names = ["GENE3", "UNKNOWN", "GENE1", "GENE2", float("nan")]
    var = _var(names)
    aln = align_genes(var, vocab, min_genes=1)
    assert isinstance(aln, GeneAlignment)
    assert aln.var_index.tolist() == [0, 2, 3]
    assert aln.token_ids.tolist() == [7, 5, 6]
    assert aln.var_index.dtype == np.int64 and aln.token_ids.dtype == np.int64
    assert (aln.n_vars, aln.n_matched, aln.n_casefold) == (5, 3, 0)
    assert aln.fraction_matched == pytest.approx(0.6)
    assert aln.source == "var_names" and aln.id_type == "symbol"
    assert aln.unmatched_examples == ("UNKNOWN",)
    assert aln.column_token_ids().tolist() == [7, -1, 5, 6, -1]


def test_align_casefold_and_no_reuse():
    vocab = GeneVocab(["ACTB", "GAPDH", "CD3E", "Cd4"])
    # "Actb" (mouse style) folds to ACTB; "gapdh" would fold to GAPDH but GAPDH is taken by an exact match
    var = _var(["Actb", "GAPDH", "gapdh", "cd3e", "CD4"])
    aln = align_genes(var, vocab, min_genes=1)
    assert aln.column_token_ids().tolist() == [4, 5, -1, 6, 7]
    assert aln.n_casefold == 3
    assert aln.unmatched_examples == ("gapdh",)
    assert "3 by case-insensitive match" in aln.summary()


def test_column_token_ids_round_trip(vocab):
    rng = np.random.default_rng(0)
    names = np.array([*GENES[:60], *[f"X{i}" for i in range(40)]], dtype=object)
    rng.shuffle(names)
    aln = align_genes(_var(names), vocab)
    cols = aln.column_token_ids()
    assert np.all(np.diff(aln.var_index) > 0)
    assert np.array_equal(np.flatnonzero(cols >= 0), aln.var_index)
    assert [vocab.token(i) for i in cols[cols >= 0]] == list(names[aln.var_index])
    assert len(np.unique(aln.token_ids)) == aln.n_matched == 60


def test_ensembl_var_names_with_symbol_column(vocab):
    ids = [f"ENSG{i:011d}" for i in range(80)]
    symbols = [*GENES[:70], *[f"NOVEL{i}" for i in range(10)]]
    var = _var(ids, gene_symbols=pd.Categorical(symbols), n_cells=np.arange(80))
    before = var.copy(deep=True)
    aln = align_genes(var, vocab)
    assert aln.source == "var['gene_symbols']"
    assert aln.id_type == "symbol"
    assert aln.n_matched == 70
    assert aln.token_ids.tolist() == [vocab[g] for g in GENES[:70]]
    pd.testing.assert_frame_equal(var, before)


def test_symbol_column_not_tried_when_var_names_match(vocab):
    var = _var(GENES[:60], feature_name=[f"OTHER{i}" for i in range(60)])
    assert align_genes(var, vocab).source == "var_names"


def test_explicit_gene_key(vocab):
    var = _var([f"ENSMUSG{i:011d}.2" for i in range(60)], my_symbols=[g.title() for g in GENES[:60]])
    aln = align_genes(var, vocab, gene_key="my_symbols")
    assert aln.source == "var['my_symbols']"
    assert aln.n_matched == 60 and aln.n_casefold == 60
    assert aln.token_ids.tolist() == list(range(4, 64))


def test_missing_gene_key_lists_columns(vocab):
    var = _var(GENES[:60], feature_name=GENES[:60], highly_variable=[True] * 60)
    with pytest.raises(KeyError) as exc_info:
        align_genes(var, vocab, gene_key="symbol")
    message = str(exc_info.value)
    assert "'symbol'" in message and "feature_name" in message and "highly_variable" in message
    assert isinstance(exc_info.value, ValueError)


def test_ensembl_without_symbols_hint(vocab):
    var = _var([f"ENSG{i:011d}" for i in range(60)], gene_ids=[f"ENSG{i:011d}" for i in range(60)], n=range(60))
    with pytest.raises(ValueError) as exc_info:
        align_genes(var, vocab)
    message = str(exc_info.value)
    assert message.startswith("only 0 of 60 genes match the vocabulary")
    assert "'ENSG00000000000'" in message
    assert "var_names look like Ensembl gene ids; 2 of 60 are in scfm's human gene table" in message
    assert "gene_key='<column with symbols>'" in message
    assert "['gene_ids']" in message  # the string-typed column is listed, the numeric one is not


def test_too_few_genes(vocab):
    var = _var([*GENES[:12], *[f"FOO{i}" for i in range(1988)]])
    with pytest.raises(ValueError) as exc_info:
        align_genes(var, vocab)
    message = str(exc_info.value)
    assert "only 12 of 2000 genes match the vocabulary" in message
    assert "'FOO0'" in message
    assert "check that var_names (or gene_key) hold human gene symbols" in message
    assert align_genes(var, vocab, min_genes=12).n_matched == 12


def test_no_match_even_with_min_genes_zero(vocab):
    with pytest.raises(ValueError, match="only 0 of 3 genes"):
        align_genes(_var(["a1", "b2", "c3"]), vocab, min_genes=0)


def test_empty_var(vocab):
    with pytest.raises(ValueError, match=r"no genes \(n_vars == 0\)"):
        align_genes(_var([]), vocab)


def test_duplicates_error_and_first(vocab):
    names = [*GENES[:60], "GENE5", "GENE7", "GENE5", "NOPE", "NOPE"]
    var = _var(names)
    with pytest.raises(ValueError) as exc_info:
        align_genes(var, vocab)
    message = str(exc_info.value)
    assert "2 gene names occur more than once in var_names" in message
    assert "'GENE5', 'GENE7'" in message
    assert "var_names_make_unique" in message and "on_duplicate='first'" in message
    aln = align_genes(var, vocab, on_duplicate="first")
    assert aln.var_index.tolist() == list(range(60))
    assert aln.n_matched == 60


def test_casefold_duplicates(vocab):
    names = [*GENES[1:60], "gene0", "Gene0"]
    with pytest.raises(ValueError, match=r"1 gene names occur more than once.*case-insensitive"):
        align_genes(_var(names), vocab)
    aln = align_genes(_var(names), vocab, on_duplicate="first")
    assert aln.column_token_ids()[-2:].tolist() == [4, -1]
    assert aln.n_casefold == 1


def test_invalid_on_duplicate(vocab):
    with pytest.raises(ValueError, match="on_duplicate"):
        align_genes(_var(GENES), vocab, on_duplicate="last")


def test_var_not_mutated(vocab):
    var = _var([*GENES[:60], "gene61"], gene_symbols=[*GENES[:60], "x"])
    before = var.copy(deep=True)
    align_genes(var, vocab)
    pd.testing.assert_frame_equal(var, before)


def test_summary_and_to_dict(vocab):
    names = [*GENES[:57], "gene57", "gene58", "gene59", *[f"X{i}" for i in range(5)]]
    aln = align_genes(_var(names), vocab)
    assert aln.summary() == (
        "60 of 65 genes (92.3%) match the vocabulary via var_names (symbols; 3 by case-insensitive match)"
    )
    record = aln.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert record["n_vars"] == 65 and record["n_matched"] == 60 and record["n_casefold"] == 3
    assert record["fraction_matched"] == pytest.approx(60 / 65)
    assert record["source"] == "var_names" and record["id_type"] == "symbol"
    exact = align_genes(_var(GENES[:60]), vocab)
    assert exact.summary() == "60 of 60 genes (100.0%) match the vocabulary via var_names (symbols)"


def test_alignment_arrays_read_only(vocab):
    aln = align_genes(_var(GENES[:60]), vocab)
    with pytest.raises(ValueError):
        aln.var_index[0] = 5


def test_align_fast():
    vocab = GeneVocab([f"G{i}" for i in range(60_000)])
    names = np.array([f"G{i}" if i % 2 else f"g{i}" for i in range(100_000)], dtype=object)
    var = _var(names, gene_symbols=names)
    start = time.perf_counter()
    aln = align_genes(var, vocab)
    elapsed = time.perf_counter() - start
    assert aln.n_matched == 60_000 and aln.n_casefold == 30_000
    assert elapsed < 1.0


def test_pbmc68k_reduced():
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    vocab = GeneVocab(sorted(adata.var_names[: adata.n_vars // 2]))
    aln = align_genes(adata.var, vocab)
    assert aln.n_vars == adata.n_vars
    assert aln.n_matched == adata.n_vars // 2
    assert np.array_equal(adata.var_names[aln.var_index], [vocab.token(i) for i in aln.token_ids])

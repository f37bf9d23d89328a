"""The ``scfm`` command line."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scfm.cli import main


@pytest.fixture
def h5ad(counts_adata, tmp_path):
    path = tmp_path / "in.h5ad"
    counts_adata.write_h5ad(path)
    return path


def test_embed_writes_output(h5ad, tmp_path, tiny_checkpoint, counts_adata, capsys):
    out = tmp_path / "out.h5ad"
    code = main(["embed", str(h5ad), str(out), "--model", str(tiny_checkpoint), "--quiet", "--key-added", "X_cli"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    assert result.shape == counts_adata.shape
    assert result.obsm["X_cli"].shape == (counts_adata.n_obs, 32)
    np.testing.assert_allclose(np.linalg.norm(result.obsm["X_cli"], axis=1), 1.0, atol=1e-5)
    assert result.uns["scfm"]["X_cli"]["model"] == tiny_checkpoint.name
    np.testing.assert_array_equal(result.X.toarray(), counts_adata.X.toarray())


def test_embed_backed_matches_in_memory(h5ad, tmp_path, tiny_checkpoint, counts_adata):
    out_mem, out_backed = tmp_path / "mem.h5ad", tmp_path / "backed.h5ad"
    assert main(["embed", str(h5ad), str(out_mem), "--model", str(tiny_checkpoint), "--quiet"]) == 0
    assert main(["embed", str(h5ad), str(out_backed), "--model", str(tiny_checkpoint), "--quiet", "--backed"]) == 0
    mem, backed = ad.read_h5ad(out_mem), ad.read_h5ad(out_backed)
    assert backed.n_obs == counts_adata.n_obs
    assert backed.X is None  # backed output holds obs, the gene names and the embedding, no expression matrix
    assert list(backed.var_names) == list(counts_adata.var_names)
    assert list(backed.obs_names) == list(counts_adata.obs_names)
    np.testing.assert_array_equal(backed.obsm["X_scfm"], mem.obsm["X_scfm"])
    assert backed.uns["scfm"]["X_scfm"]["checkpoint_sha256"] == mem.uns["scfm"]["X_scfm"]["checkpoint_sha256"]


def test_embed_bad_input_exit_code_2(counts_adata, tmp_path, tiny_checkpoint, capsys):
    counts_adata.X.data[0] = -1.0
    path, out = tmp_path / "neg.h5ad", tmp_path / "out.h5ad"
    counts_adata.write_h5ad(path)
    code = main(["embed", str(path), str(out), "--model", str(tiny_checkpoint), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("scfm embed: error:")
    assert "negative values" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_embed_missing_layer_exit_code_2(h5ad, tmp_path, tiny_checkpoint, capsys):
    code = main(["embed", str(h5ad), str(tmp_path / "o.h5ad"), "--model", str(tiny_checkpoint), "--layer", "counts"])
    assert code == 2
    err = capsys.readouterr().err
    # a KeyError message is printed without the repr quotes of KeyError.__str__
    assert "scfm embed: error: layer 'counts' not found in adata.layers" in err


def test_embed_missing_model_exit_code_2(h5ad, tmp_path, capsys):
    code = main(["embed", str(h5ad), str(tmp_path / "o.h5ad"), "--model", str(tmp_path / "nope"), "--quiet"])
    assert code == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_missing_subcommand_exits():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2

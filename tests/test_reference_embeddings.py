"""Embeddings of every bundled family on pbmc68k_reduced are identical to those recorded before the family redesign.

The values in ``data/reference_embeddings.json`` were written by ``python tests/test_reference_embeddings.py`` on the
code before the move to one family contract (``models/base`` + one folder per family). Rows and column sums of the
full matrix are compared, so any change of tokenisation, batching or pooling shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scanpy as sc

RECORD = Path(__file__).parent / "data" / "reference_embeddings.json"
FAMILIES = ("scgpt", "tgpt", "cellplm", "scmulan")
ROWS = (0, 1, 233, 467, 699)


def embeddings_of(family: str) -> np.ndarray:
    import scfm

    adata = sc.datasets.pbmc68k_reduced()
    scfm.tl.embed(adata, model=family, use_raw=True, progress=False)
    return np.asarray(adata.obsm["X_scfm"], dtype=np.float64)


def digest(embeddings: np.ndarray) -> dict[str, list]:
    return {
        "shape": list(embeddings.shape),
        "rows": [embeddings[i].round(7).tolist() for i in ROWS],
        "column_sums": embeddings.sum(0).round(5).tolist(),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_bundled_family_embeddings_are_unchanged(family):
    recorded = json.loads(RECORD.read_text())[family]
    current = embeddings_of(family)
    assert list(current.shape) == recorded["shape"]
    np.testing.assert_allclose(current[list(ROWS)], np.asarray(recorded["rows"]), atol=2e-6, rtol=0)
    np.testing.assert_allclose(current.sum(0), np.asarray(recorded["column_sums"]), atol=1e-4, rtol=0)


if __name__ == "__main__":  # re-record (only when a change of the embeddings is intended and documented)
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps({family: digest(embeddings_of(family)) for family in FAMILIES}) + "\n")
    sys.exit(0)

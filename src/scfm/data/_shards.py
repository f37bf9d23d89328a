"""Row sources for streaming pretraining: ``.h5ad`` shards read by row ranges, never whole.

A row source tells the planner how many cells it holds and how many values each stores (cheap: the CSR
``indptr``), and reads a range of rows as CSR on request. Files are opened lazily in the process that reads
them, so sources can be pickled into DataLoader workers and DDP ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

MEASURED_PREFIX = "measured_in:"


class RowSource(Protocol):
    """What :class:`~scfm.data.StreamingCellDataset` needs from a collection of cells."""

    name: str

    @property
    def n_obs(self) -> int: ...

    @property
    def var(self) -> pd.DataFrame: ...

    def row_nnz(self, start: int, stop: int) -> np.ndarray:
        """Count the stored values per row of ``start:stop`` (the planner's length estimate)."""

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as float32 CSR over all columns of :attr:`var`."""

    def dataset_names(self) -> list[str]:
        """Names of the datasets the source's cells belong to."""

    def datasets(self, start: int, stop: int) -> np.ndarray:
        """Dataset name of each row of ``start:stop`` (``measured_in:<dataset>`` masks apply per dataset)."""


@dataclass
class H5adShard:
    """One ``.h5ad`` file whose matrix is stored as CSR, read by row ranges with ``h5py``.

    Parameters
    ----------
    path
        The file.
    layer
        ``None`` reads ``X``; otherwise ``layers/<layer>``.
    dataset_key
        Column of ``obs`` naming each cell's dataset. ``None`` or a missing column: the whole shard is one
        dataset named after the file.
    """

    path: str
    layer: str | None = None
    dataset_key: str | None = "dataset"
    name: str = ""
    _file: object = field(default=None, init=False, repr=False, compare=False)
    _pid: int = field(default=-1, init=False, repr=False, compare=False)
    _var: pd.DataFrame | None = field(default=None, init=False, repr=False, compare=False)
    _dataset_categories: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = str(Path(self.path).expanduser())
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"shard {self.path!r} does not exist")
        self.name = self.name or Path(self.path).stem
        matrix = self._matrix()
        encoding = matrix.attrs.get("encoding-type", "array")
        if encoding != "csr_matrix":
            where = "X" if self.layer is None else f"layers[{self.layer!r}]"
            raise ValueError(
                f"{where} of shard {self.path!r} is stored as {encoding!r}; streaming reads row ranges of CSR "
                "matrices. Rewrite the shard with adata.X = scipy.sparse.csr_matrix(adata.X); adata.write_h5ad(...)"
            )
        self._n_obs = int(matrix.attrs["shape"][0])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state

    def _h5(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _matrix(self):
        handle = self._h5()
        key = "X" if self.layer is None else f"layers/{self.layer}"
        if key not in handle:
            raise KeyError(f"shard {self.path!r} has no {key!r}")
        return handle[key]

    @property
    def n_obs(self) -> int:
        return self._n_obs

    @property
    def var(self) -> pd.DataFrame:
        if self._var is None:
            from anndata.io import read_elem

            self._var = read_elem(self._h5()["var"])
        return self._var

    def row_nnz(self, start: int, stop: int) -> np.ndarray:
        return np.diff(self._matrix()["indptr"][start : stop + 1]).astype(np.int64)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        matrix = self._matrix()
        indptr = matrix["indptr"][start : stop + 1].astype(np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        data = matrix["data"][lo:hi].astype(np.float32, copy=False)
        indices = matrix["indices"][lo:hi]
        shape = (stop - start, int(matrix.attrs["shape"][1]))
        return sp.csr_matrix((data, indices, indptr - lo), shape=shape)

    def _dataset_column(self):
        obs = self._h5()["obs"]
        if self.dataset_key is None or self.dataset_key not in obs:
            return None
        return obs[self.dataset_key]

    def _categories(self) -> np.ndarray | None:
        """Category names of a categorical dataset column (read once), ``None`` for other columns."""
        if self._dataset_categories is None:
            column = self._dataset_column()
            if column is None or "categories" not in getattr(column, "keys", lambda: [])():
                return None
            self._dataset_categories = np.asarray(_as_str(column["categories"][:]), dtype=object)
        return self._dataset_categories

    def dataset_names(self) -> list[str]:
        column = self._dataset_column()
        if column is None:
            return [self.name]
        categories = self._categories()
        return list(categories) if categories is not None else sorted(set(_as_str(column[:])))

    def datasets(self, start: int, stop: int) -> np.ndarray:
        column = self._dataset_column()
        if column is None:
            return np.full(stop - start, self.name, dtype=object)
        categories = self._categories()
        if categories is None:
            return np.asarray(_as_str(column[start:stop]), dtype=object)
        codes = column["codes"][start:stop]
        if (codes < 0).any():
            raise ValueError(f"obs[{self.dataset_key!r}] of {self.path!r} has missing values")
        return categories[codes]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


def _as_str(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def measured_masks(var: pd.DataFrame, datasets: list[str]) -> dict[str, np.ndarray] | None:
    """Boolean column masks ``var['measured_in:<dataset>']`` per dataset, or ``None`` when the table has none.

    Raises
    ------
    KeyError
        Some ``measured_in:`` columns exist but not one for every dataset named in ``obs``.
    """
    columns = [c for c in var.columns if str(c).startswith(MEASURED_PREFIX)]
    if not columns:
        return None
    missing = [name for name in datasets if f"{MEASURED_PREFIX}{name}" not in var]
    if missing:
        raise KeyError(
            f"var has measured_in: gene masks but none for datasets {missing[:5]}; add a boolean column "
            f"var['measured_in:<dataset>'] for every dataset (True where the gene was measured)"
        )
    return {name: var[f"{MEASURED_PREFIX}{name}"].to_numpy(dtype=bool) for name in datasets}


def expand_shard_paths(patterns: list[str | os.PathLike]) -> list[str]:
    """Files named by ``patterns`` (paths or globs), in the order given, globs sorted; an error if one matches none."""
    import glob

    paths: list[str] = []
    for pattern in patterns:
        pattern = str(Path(pattern).expanduser())
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        if not matches or not all(Path(p).is_file() for p in matches):
            raise FileNotFoundError(f"no shard file matches {pattern!r}")
        paths.extend(matches)
    if len(set(paths)) != len(paths):
        raise ValueError("the same shard is listed twice; each file must appear once")
    return paths

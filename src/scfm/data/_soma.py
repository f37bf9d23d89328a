"""Row source over a TileDB-SOMA experiment (e.g. CELLxGENE Census) for streaming pretraining.

The cells selected by an ``obs`` value filter become rows ``0..n_obs-1`` in ascending ``soma_joinid`` order; a range
of rows is read from the X layer on request, never the whole matrix. Only the selection (joinids, dataset of each
cell, stored values per cell) is kept in memory, run-length encoded where that is smaller (Census cells of one
dataset have consecutive joinids).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._shards import MEASURED_PREFIX

PRESENCE_MATRIX = "feature_dataset_presence_matrix"
_COUNT_ROWS = 16_384
# Handles inherited through fork are kept alive, never freed: freeing one would shut down the parent's TileDB thread
# pool, whose threads do not exist in the child, and hang.
_INHERITED: list[Any] = []


def _tiledbsoma() -> Any:
    try:
        import tiledbsoma
    except ImportError as err:
        raise ImportError(
            "SomaExperimentSource needs the tiledbsoma package; install it with pip install 'scfm-models[soma]'"
        ) from err
    return tiledbsoma


def _compact(values: np.ndarray) -> np.ndarray:
    """Non-negative integers in the smallest unsigned dtype that holds them."""
    values = np.asarray(values, dtype=np.int64)
    top = int(values.max()) if values.size else 0
    return values.astype(np.min_scalar_type(top))


class _Runs:
    """Non-negative integers stored as runs on which ``value - step * position`` is constant.

    ``step=1`` compresses ranges of consecutive joinids, ``step=0`` repeated codes. When runs would not save memory
    the values are kept as a plain array in the smallest dtype.
    """

    def __init__(self, values: np.ndarray, step: int) -> None:
        values = np.asarray(values, dtype=np.int64)
        self.size, self.step = len(values), step
        offsets = values - step * np.arange(len(values), dtype=np.int64)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(offsets)) + 1]).astype(np.int64)
        if 2 * len(starts) < len(values):
            self.starts, self.offsets, self.values = starts, offsets[starts], None
        else:
            self.starts = self.offsets = None
            self.values = _compact(values)

    def take(self, start: int, stop: int) -> np.ndarray:
        """Values at positions ``start:stop`` as int64."""
        if self.values is not None:
            return self.values[start:stop].astype(np.int64)
        positions = np.arange(start, stop, dtype=np.int64)
        runs = np.searchsorted(self.starts, positions, side="right") - 1
        return self.offsets[runs] + self.step * positions


def _census_datasets_uri(experiment_uri: str) -> str:
    """Where CELLxGENE Census keeps its dataset table for an experiment ``<census>/census_data/<organism>``."""
    root = experiment_uri.rstrip("/").rsplit("/", 2)[0]
    return f"{root}/census_info/datasets"


class SomaExperimentSource:
    """Cells of a TileDB-SOMA experiment as a :class:`~scfm.data.RowSource` (e.g. CELLxGENE Census).

    The experiment is opened lazily in the process that reads, with a TileDB context of its own, always at the
    timestamp of the first opening, so DataLoader workers and DDP ranks read the same snapshot. Pickling drops the
    handles; a forked worker opens new ones and leaves those it inherited alone (freeing them would hang on the
    parent's TileDB threads), so both ``fork`` and ``spawn`` workers work.

    Stored values per cell (:meth:`row_nnz`, the planner's length estimate) come from the integer ``obs`` column
    ``nnz_key`` when present (Census has ``nnz``); otherwise the constructor counts them with one streaming pass over
    the selected rows of X, ``16384`` rows per read.

    Gene masks (which genes each dataset measured; :class:`~scfm.data.SCGPTCellEncoder` draws zero targets only
    among them) become boolean ``var['measured_in:<dataset>']`` columns, taken from

    1. Census's ``feature_dataset_presence_matrix`` when the measurement holds one (a sparse array indexed by the
       ``soma_joinid`` of the Census dataset table and the ``soma_joinid`` of ``var``); the dataset table is read
       from ``datasets_uri``, by default ``<census>/census_info/datasets`` derived from an experiment URI
       ``<census>/census_data/<organism>``, and matched on its column named ``dataset_key``. Replaces ``measured_in:``
       columns of ``var`` (tested on a local tree laid out as Census documents it, not on the Census itself);
    2. otherwise ``measured_in:<dataset>`` columns already in ``var`` (as scfm's own corpora have), kept as they are;
    3. otherwise none: every gene counts as measured.

    Parameters
    ----------
    uri
        URI of the experiment (a local path, ``s3://...``). For Census: ``<census>/census_data/homo_sapiens``.
    measurement
        Measurement (``ms``) holding the matrix.
    layer
        Layer of ``X`` (a sparse array of cells x genes, indexed by ``soma_joinid``).
    obs_value_filter
        TileDB-SOMA value filter selecting the cells, e.g. ``"is_primary_data == True"``; ``None`` selects all.
    var_gene_column
        Column of ``var`` whose values become the :attr:`var` index (gene symbols; Census: ``feature_name``).
    dataset_key
        Column of ``obs`` naming each cell's dataset. Missing: every cell belongs to one dataset named ``name``.
    name
        Name of the source (default: last component of ``uri``).
    nnz_key
        Integer ``obs`` column with the stored values per cell; ``None`` or missing: counted from X.
    datasets_uri
        Dataset table for the presence matrix (default: derived from ``uri`` as described above).
    tiledb_config
        TileDB configuration, e.g. ``{"vfs.s3.region": "us-west-2", "vfs.s3.no_sign_request": "true"}`` for the
        public Census bucket.

    Raises
    ------
    ImportError
        tiledbsoma is not installed.
    FileNotFoundError
        Nothing at ``uri`` (or at the dataset table of a presence matrix).
    ValueError
        ``uri`` is not a SOMA experiment, the filter is invalid or selects no cells, or ``obs[dataset_key]`` has
        missing values.
    KeyError
        Unknown measurement, layer or ``var_gene_column``, or a dataset missing from the presence matrix's table.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        *,
        measurement: str = "RNA",
        layer: str = "raw",
        obs_value_filter: str | None = None,
        var_gene_column: str = "feature_name",
        dataset_key: str | None = "dataset_id",
        name: str | None = None,
        nnz_key: str | None = "nnz",
        datasets_uri: str | None = None,
        tiledb_config: dict[str, str] | None = None,
    ) -> None:
        _tiledbsoma()
        uri = str(uri)
        self.uri = uri if "://" in uri else str(Path(uri).expanduser())
        self.measurement, self.layer = measurement, layer
        self.obs_value_filter = obs_value_filter
        self.var_gene_column, self.dataset_key, self.nnz_key = var_gene_column, dataset_key, nnz_key
        self.datasets_uri = datasets_uri
        self.tiledb_config = dict(tiledb_config or {})
        self.name = name or Path(self.uri.rstrip("/")).name or self.uri
        self._experiment: Any = None
        self._matrix: Any = None
        self._pid = -1
        self._timestamp_ms: int | None = None

        experiment, _ = self._open()
        self._timestamp_ms = int(experiment.tiledb_timestamp_ms)
        self._read_obs(experiment)
        self._read_var(experiment.ms[measurement])
        if self._nnz is None:
            self._nnz = self._count_nnz()

    # -- handles ------------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_experiment"], state["_matrix"], state["_pid"] = None, None, -1
        return state

    def __repr__(self) -> str:
        where = "" if self.obs_value_filter is None else f", obs_value_filter={self.obs_value_filter!r}"
        return (
            f"SomaExperimentSource({self.uri!r}, measurement={self.measurement!r}, layer={self.layer!r}{where}; "
            f"{self.n_obs} cells x {self._n_vars} genes)"
        )

    def _context(self) -> Any:
        # A fresh context per process: a forked worker must not use the parent's TileDB thread pools.
        return _tiledbsoma().SOMATileDBContext(tiledb_config=dict(self.tiledb_config))

    def _open(self) -> tuple[Any, Any]:
        """Return the experiment and its X layer, opened in this process."""
        if self._experiment is not None and self._pid == os.getpid():
            return self._experiment, self._matrix
        if self._experiment is not None:
            _INHERITED.append((self._experiment, self._matrix))
            self._experiment = self._matrix = None
        soma = _tiledbsoma()
        try:
            handle = soma.open(self.uri, "r", context=self._context(), tiledb_timestamp=self._timestamp_ms)
        except soma.DoesNotExistError as err:
            raise FileNotFoundError(f"no TileDB-SOMA experiment at {self.uri!r}: {err}") from err
        except soma.SOMAError as err:
            raise ValueError(f"{self.uri!r} is not a TileDB-SOMA object: {err}") from err
        if not isinstance(handle, soma.Experiment):
            kind = handle.soma_type
            census = isinstance(handle, soma.Collection) and "census_data" in handle
            handle.close()
            hint = " (a Census root: pass <census>/census_data/homo_sapiens or another organism)" if census else ""
            raise ValueError(f"{self.uri!r} is a {kind}, not a SOMA Experiment{hint}")
        try:
            matrix = self._layer(handle)
        except Exception:
            handle.close()
            raise
        self._experiment, self._matrix, self._pid = handle, matrix, os.getpid()
        return handle, matrix

    def _layer(self, experiment: Any) -> Any:
        soma = _tiledbsoma()
        available = sorted(experiment.ms.keys())
        if self.measurement not in available:
            raise KeyError(
                f"experiment {self.uri!r} has no measurement {self.measurement!r}; available: {available}. "
                "Pass measurement=<one of them>"
            )
        ms = experiment.ms[self.measurement]
        layers = sorted(ms.X.keys()) if "X" in ms else []
        if self.layer not in layers:
            raise KeyError(
                f"measurement {self.measurement!r} of {self.uri!r} has no X layer {self.layer!r}; available: "
                f"{layers}. Pass layer=<one of them>"
            )
        matrix = ms.X[self.layer]
        if not isinstance(matrix, soma.SparseNDArray):
            raise ValueError(
                f"X layer {self.layer!r} of {self.uri!r} is a {matrix.soma_type}; streaming reads sparse layers "
                "(SOMASparseNDArray)"
            )
        return matrix

    def close(self) -> None:
        """Close the experiment if this process opened it (it is reopened on the next read)."""
        if self._experiment is not None and self._pid == os.getpid():
            self._experiment.close()
        elif self._experiment is not None:
            _INHERITED.append((self._experiment, self._matrix))
        self._experiment, self._matrix, self._pid = None, None, -1

    # -- obs and var ----------------------------------------------------------------------------------------------

    def _read_obs(self, experiment: Any) -> None:
        soma = _tiledbsoma()
        import pyarrow as pa

        schema = experiment.obs.schema
        names = list(schema.names)
        dataset_key = self.dataset_key if self.dataset_key in names else None
        nnz_key = (
            self.nnz_key if self.nnz_key in names and pa.types.is_integer(schema.field(self.nnz_key).type) else None
        )
        columns = ["soma_joinid", *[c for c in (dataset_key, nnz_key) if c is not None]]
        joinids, codes, counts = [], [], []
        lookup: dict[str, int] = {}
        try:
            for table in experiment.obs.read(column_names=columns, value_filter=self.obs_value_filter):
                joinids.append(table.column("soma_joinid").to_numpy())
                if dataset_key is not None:
                    column = table.column(dataset_key)
                    if column.null_count:
                        raise ValueError(
                            f"obs[{dataset_key!r}] of {self.uri!r} has missing values; every selected cell needs a "
                            "dataset (filter them out, or pass dataset_key=None)"
                        )
                    local, uniques = pd.factorize(column.to_pandas())
                    remap = np.asarray([lookup.setdefault(str(u), len(lookup)) for u in uniques], dtype=np.int64)
                    codes.append(remap[local])
                if nnz_key is not None:
                    column = table.column(nnz_key)
                    if column.null_count:
                        nnz_key = None
                        counts = []
                    else:
                        counts.append(column.to_numpy())
        except soma.SOMAError as err:
            if self.obs_value_filter is None:
                raise
            raise ValueError(
                f"reading obs of {self.uri!r} with obs_value_filter={self.obs_value_filter!r} failed ({err}); the "
                f"filter must be a TileDB-SOMA value filter over obs columns {names}, e.g. \"dataset_id == 'abc'\""
            ) from err

        joinid = np.concatenate(joinids) if joinids else np.zeros(0, dtype=np.int64)
        if joinid.size == 0 and self.obs_value_filter is None:
            raise ValueError(f"experiment {self.uri!r} has no cells")
        if joinid.size == 0:
            raise ValueError(
                f"obs_value_filter={self.obs_value_filter!r} selects no cells of {self.uri!r}; check the values it "
                f"compares against those in obs (columns: {names})"
            )
        order = None if bool(np.all(joinid[1:] > joinid[:-1])) else np.argsort(joinid, kind="stable")
        if order is not None:
            joinid = joinid[order]
        self._rows = _Runs(joinid, step=1)

        self._codes: _Runs | None = None
        self._dataset_names = [self.name]
        if dataset_key is not None:
            code = np.concatenate(codes)
            sorted_names = sorted(lookup)
            rank = {label: i for i, label in enumerate(sorted_names)}
            code = np.asarray([rank[label] for label in lookup], dtype=np.int64)[code]
            self._codes = _Runs(code if order is None else code[order], step=0)
            self._dataset_names = sorted_names
        self._has_datasets = dataset_key is not None

        self._nnz: np.ndarray | None = None
        if nnz_key is not None:
            count = np.concatenate(counts)
            self._nnz = _compact(np.maximum(count if order is None else count[order], 0))

    def _read_var(self, ms: Any) -> None:
        var = ms.var.read().concat().to_pandas()
        if self.var_gene_column not in var.columns:
            raise KeyError(
                f"var of measurement {self.measurement!r} of {self.uri!r} has no column {self.var_gene_column!r}; "
                f"available columns: {list(var.columns)}. Pass var_gene_column=<the column with gene symbols>"
            )
        var = var.sort_values("soma_joinid", kind="stable").reset_index(drop=True)
        joinids = var["soma_joinid"].to_numpy(dtype=np.int64)
        self._var_joinids = None if np.array_equal(joinids, np.arange(len(joinids))) else joinids
        self._n_vars = len(var)
        symbols = var[self.var_gene_column]
        symbols = symbols.astype(object).where(symbols.notna(), "").astype(str)
        var.index = pd.Index(symbols.to_numpy(dtype=object), dtype=object)

        if self._has_datasets and PRESENCE_MATRIX in ms:
            masks = self._presence_masks(ms[PRESENCE_MATRIX])
            var = var.drop(columns=[c for c in var.columns if str(c).startswith(MEASURED_PREFIX)])
            var = pd.concat([var, pd.DataFrame(masks, index=var.index)], axis=1)
        self._var = var

    def _presence_masks(self, presence: Any) -> dict[str, np.ndarray]:
        soma = _tiledbsoma()
        uri = self.datasets_uri or _census_datasets_uri(self.uri)
        try:
            with soma.DataFrame.open(uri, "r", context=self._context(), tiledb_timestamp=self._timestamp_ms) as table:
                if self.dataset_key not in table.schema.names:
                    raise KeyError(
                        f"the presence matrix's dataset table {uri!r} has no column {self.dataset_key!r} "
                        f"(columns: {list(table.schema.names)}); its rows are datasets, so use "
                        "dataset_key='dataset_id'"
                    )
                frame = table.read(column_names=["soma_joinid", self.dataset_key]).concat().to_pandas()
        except soma.DoesNotExistError as err:
            raise FileNotFoundError(
                f"measurement {self.measurement!r} of {self.uri!r} has a {PRESENCE_MATRIX} but its dataset table "
                f"was not found at {uri!r}; pass datasets_uri=<census>/census_info/datasets"
            ) from err
        ids = dict(zip(frame[self.dataset_key].astype(str), frame["soma_joinid"].astype(np.int64), strict=True))
        missing = [label for label in self._dataset_names if label not in ids]
        if missing:
            raise KeyError(f"datasets {missing[:5]} of obs[{self.dataset_key!r}] are not in the dataset table {uri!r}")
        rows = np.asarray([ids[label] for label in self._dataset_names], dtype=np.int64)
        order = np.argsort(rows)
        masks = np.zeros((len(rows), self._n_vars), dtype=bool)
        for table in presence.read(coords=(rows[order],)).tables():
            present = table.column("soma_data").to_numpy() != 0
            dataset = order[np.searchsorted(rows[order], table.column("soma_dim_0").to_numpy()[present])]
            masks[dataset, self._columns(table.column("soma_dim_1").to_numpy()[present])] = True
        return {f"{MEASURED_PREFIX}{label}": masks[i] for i, label in enumerate(self._dataset_names)}

    def _columns(self, var_joinids: np.ndarray) -> np.ndarray:
        if self._var_joinids is None:
            return var_joinids.astype(np.int64, copy=False)
        return np.searchsorted(self._var_joinids, var_joinids)

    # -- RowSource -------------------------------------------------------------------------------------------------

    @property
    def n_obs(self) -> int:
        return self._rows.size

    @property
    def var(self) -> pd.DataFrame:
        return self._var

    def _check(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_obs:
            raise IndexError(f"rows {start}:{stop} outside the {self.n_obs} rows of {self.name!r}")

    def _read(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Arrow tables of X for rows ``start:stop``, each with the local row of its values."""
        _, matrix = self._open()
        joinids = self._rows.take(start, stop)
        first, last = int(joinids[0]), int(joinids[-1])
        contiguous = last - first == len(joinids) - 1
        coords = slice(first, last) if contiguous else joinids
        for table in matrix.read(coords=(coords,)).tables():
            dim0 = table.column("soma_dim_0").to_numpy()
            yield (dim0 - first if contiguous else np.searchsorted(joinids, dim0)), table

    def _count_nnz(self) -> np.ndarray:
        counts = np.zeros(self.n_obs, dtype=np.int64)
        for start in range(0, self.n_obs, _COUNT_ROWS):
            stop = min(start + _COUNT_ROWS, self.n_obs)
            for rows, _ in self._read(start, stop):
                counts[start:stop] += np.bincount(rows, minlength=stop - start)
        return _compact(counts)

    def row_nnz(self, start: int, stop: int) -> np.ndarray:
        """Count the stored values per row of ``start:stop`` (int64)."""
        self._check(start, stop)
        return self._nnz[start:stop].astype(np.int64)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as float32 CSR over all columns of :attr:`var`, reading only those rows."""
        self._check(start, stop)
        shape = (stop - start, self._n_vars)
        if stop == start:
            return sp.csr_matrix(shape, dtype=np.float32)
        rows, columns, values = [], [], []
        for local, table in self._read(start, stop):
            rows.append(local)
            columns.append(self._columns(table.column("soma_dim_1").to_numpy()))
            values.append(table.column("soma_data").to_numpy().astype(np.float32, copy=False))
        if not rows:
            return sp.csr_matrix(shape, dtype=np.float32)
        matrix = sp.coo_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=shape
        ).tocsr()
        matrix.sort_indices()
        return matrix

    def dataset_names(self) -> list[str]:
        """Datasets of the selected cells, sorted (``[name]`` without a dataset column)."""
        return list(self._dataset_names)

    def datasets(self, start: int, stop: int) -> np.ndarray:
        """Dataset name of each row of ``start:stop`` (object array)."""
        self._check(start, stop)
        if self._codes is None:
            return np.full(stop - start, self.name, dtype=object)
        return np.asarray(self._dataset_names, dtype=object)[self._codes.take(start, stop)]

"""Where the data files live: an explicit path, then ``$SCFM_DATA_DIR``, then ``../shared/data`` beside the checkout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "SCFM_DATA_DIR"
# src/scfm/datasets/_paths.py -> parents[3] is the repository root of a source checkout (editable install)
_REPOSITORY = Path(__file__).resolve().parents[3]
SHARED_DATA = _REPOSITORY.parent / "shared" / "data"


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A data file a loader needs is not on this machine.

    The message names the file, the public source to get it from and the two ways to point scfm at it (the
    ``path`` argument or the ``SCFM_DATA_DIR`` environment variable). It is a ``FileNotFoundError`` and a
    ``ValueError``, so either ``except`` clause catches it, like scfm's other errors (``docs/errors.md``).
    """


@dataclass(frozen=True)
class DataFile:
    """One data file: where it sits under the data folder and where it came from.

    Attributes
    ----------
    relpath
        Path under the data folder, e.g. ``"integration/pancreas_3batches_cepo_small.h5ad"``.
    source
        The public place the file was taken from (repository, commit and file, or package).
    licence
        The licence it was distributed under.
    citation
        The paper(s) to cite for the underlying data.
    """

    relpath: str
    source: str
    licence: str
    citation: str

    @property
    def name(self) -> str:
        """The file name (last part of ``relpath``)."""
        return Path(self.relpath).name


def data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """Return the data folder scfm reads from, or ``None`` when none is set and none is found.

    Parameters
    ----------
    path
        A folder laid out like the project's data folder (``integration/``, ``annotation/``, ...). When given it
        wins; otherwise ``$SCFM_DATA_DIR`` is used when set, otherwise ``../shared/data`` next to a source
        checkout of scfm when that folder exists.

    Returns
    -------
    The folder (not checked to exist when given explicitly or through the environment), or ``None``.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    return None


def locate(file: DataFile, path: str | os.PathLike | None = None) -> Path:
    """Return the path of ``file`` on this machine, or raise :class:`DatasetNotFoundError` saying how to get it.

    Parameters
    ----------
    file
        The file to find.
    path
        Either the file itself, or a data folder that holds it at ``file.relpath`` or directly by its name.
        ``None`` looks in :func:`data_dir`.

    Raises
    ------
    DatasetNotFoundError
        When the file is in none of the places looked at.
    """
    tried: list[Path] = []
    if path is not None and Path(path).expanduser().is_file():
        return Path(path).expanduser()
    root = data_dir(path)
    if root is not None:
        for candidate in (root / file.relpath, root / file.name):
            if candidate.is_file():
                return candidate
            tried.append(candidate)
    where = (
        "looked at " + ", ".join(str(p) for p in dict.fromkeys(tried))
        if tried
        else f"no data folder is set: neither a path argument nor ${ENV_VAR}, and {SHARED_DATA} does not exist"
    )
    raise DatasetNotFoundError(
        f"data file {file.relpath!r} not found ({where}). It is a conversion of {file.source} "
        f"(licence: {file.licence}; the loader's docstring says more). Copy it to this machine, "
        f"then either pass its path (or the folder holding it) as `path=`, or set the environment variable "
        f"{ENV_VAR} to a folder that holds it as {file.relpath}. scfm never downloads data."
    )

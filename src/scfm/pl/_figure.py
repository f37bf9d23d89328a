"""What every scfm plot does last: lay out, save and show as scanpy does, return what scanpy returns."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

FIGURE_EXTENSIONS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps")

#: The ``save`` argument of scfm's plotting functions (see :func:`finish`).
SaveArg = bool | str | os.PathLike | None


def figure_path(writekey: str, save: SaveArg) -> Path | None:
    """Where ``save`` writes the figure of the plot named ``writekey`` (``None``: not saved).

    As in scanpy: ``True`` writes ``sc.settings.figdir / f"{writekey}.{sc.settings.file_format_figs}"``; a string is
    a suffix (``"_pbmc.pdf"`` writes ``figdir/<writekey>_pbmc.pdf``, the format from its extension or
    ``file_format_figs``); ``None`` follows ``sc.settings.autosave``. A :class:`pathlib.Path` (or any
    ``os.PathLike``) is the file itself.
    """
    import scanpy as sc

    if save is None:
        save = bool(sc.settings.autosave)
    if save is False:
        return None
    if isinstance(save, os.PathLike):
        return Path(save)
    if save is True:
        save = ""
    if not isinstance(save, str):
        raise TypeError(f"save must be True, False, a file-name suffix or a pathlib.Path, got {type(save).__name__}")
    name = f"{writekey}{save}"
    if not name.lower().endswith(FIGURE_EXTENSIONS):
        name = f"{name}.{sc.settings.file_format_figs}"
    return Path(sc.settings.figdir) / name


def finish(
    fig, returned: Any, *, writekey: str, save: SaveArg, show: bool | None, owns_figure: bool = True, dpi: int = 120
):
    """Lay out ``fig``, save it (:func:`figure_path`), show it; return ``returned`` unless it was shown.

    ``show=None`` follows ``sc.settings.autoshow``. As in scanpy, a shown figure returns ``None``, and a figure
    that the plot created (``owns_figure``: no ``ax`` was given), saved and not shown is closed (its Axes stay
    usable for further drawing and ``savefig``). A figure around the caller's ``ax`` is never laid out or closed.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if owns_figure:
        fig.tight_layout()
    path = figure_path(writekey, save)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    show = bool(sc.settings.autoshow) if show is None else show
    if show:
        plt.show()
        return None
    if path is not None and owns_figure:
        plt.close(fig)
    return returned


def legacy_path(save: SaveArg, path: str | os.PathLike | None, function: str) -> SaveArg:
    """``save`` from the former ``path=`` argument (deprecated: it is ``save=pathlib.Path(path)``)."""
    if path is None:
        return save
    warnings.warn(
        f"{function}(path=...) is deprecated; pass save=pathlib.Path(...) (or scanpy's save=True / '_suffix.png')",
        FutureWarning,
        stacklevel=3,
    )
    if save not in (None, False):
        raise ValueError(f"{function}: give save or path, not both")
    return Path(path)


def finish_figure(fig, path: str | os.PathLike | None, show: bool):
    """Tight layout, save to ``path`` (120 dpi) when given, ``plt.show()`` when ``show``; returns ``fig``.

    The former helper, kept for plots not yet on :func:`finish`.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    if show:
        plt.show()
    return fig

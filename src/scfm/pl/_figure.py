"""What every scfm plot does last: lay out, optionally save, optionally show, return the figure."""

from __future__ import annotations

import os


def finish_figure(fig, path: str | os.PathLike | None, show: bool):
    """Tight layout, save to ``path`` (120 dpi) when given, ``plt.show()`` when ``show``; returns ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    if show:
        plt.show()
    return fig

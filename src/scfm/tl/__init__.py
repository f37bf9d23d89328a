"""Tools: scanpy-style functions that resolve a model and call it."""

from ._embed import embed

__all__ = ["embed"]

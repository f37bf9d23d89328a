"""JSON round trips of a family's configuration dataclass (a checkpoint's ``config.json``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Literal


class ConfigDict:
    """``to_dict``/``from_dict`` for a config dataclass stored as a checkpoint's ``config.json``.

    A family lists in ``added_later`` the fields it gained after its first checkpoints were written; their defaults
    reproduce what those older checkpoints compute, so they may be absent from a ``config.json``. Every other field
    must be present (see :meth:`from_checkpoint_dict`).
    """

    added_later: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build the configuration from a dict of some of its fields (the others take their defaults).

        Unknown fields are an error.
        """
        cls._refuse_unknown(data)
        return cls(**data)

    @classmethod
    def _refuse_unknown(cls, data: dict[str, Any]) -> None:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config.json has unknown fields {unknown}; is this a checkpoint of another model family?")

    @classmethod
    def from_checkpoint_dict(cls, data: dict[str, Any]):
        """Build the configuration of a checkpoint: every field present (but ``added_later``) and of its type.

        Raises
        ------
        ValueError
            A field is unknown, missing, of the wrong type, or a non-finite number; the message names it.
        """
        cls._refuse_unknown(data)
        hints = typing.get_type_hints(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.name not in cls.added_later]
        if missing:
            raise ValueError(
                f"config.json lacks the field(s) {missing}; a checkpoint's config names every setting (a default "
                "would silently change what the model computes): restore them or re-save the model with scfm"
            )
        wrong = [
            f"{name}={value!r} (expected {_describe(hints[name])})"
            for name, value in data.items()
            if name in hints and not _conforms(value, hints[name])
        ]
        if wrong:
            raise ValueError(f"config.json has fields of the wrong type or value: {'; '.join(wrong)}")
        return cls.from_dict(data)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type hint (``int`` excludes ``bool``; floats must be finite)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, option) for option in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_conforms(entry, item) for entry in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(hint))
    if hint is float:
        return "a finite number"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")

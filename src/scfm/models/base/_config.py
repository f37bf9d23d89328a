"""JSON round trips of a family's configuration dataclass (a checkpoint's ``config.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigDict:
    """``to_dict``/``from_dict`` for a config dataclass stored as a checkpoint's ``config.json``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build the configuration from ``config.json``'s dict; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.json has unknown fields {unknown}; is this a checkpoint of another model family?")
        return cls(**data)

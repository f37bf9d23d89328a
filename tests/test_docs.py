"""The API reference lists every public name (the Sphinx build cannot tell when one is missing).

``docs/api/*.md`` name functions and classes in ``autosummary`` blocks and constants in ``.. data::`` directives;
every name in the ``__all__`` of the documented modules must be reachable from one of them, and a documented
constant's ``:value:`` must be the value the package holds.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
from scfm_docs import api_modules  # noqa: E402

MODULE_DIRECTIVE = re.compile(r"^\.\. (?:current)?module:: (\S+)")
DATA_DIRECTIVE = re.compile(r"^\.\. data:: (\S+)")


def _resolve(dotted: str):
    """Import the longest module prefix of ``dotted`` and get the rest as attributes (``None`` if that fails)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                value = getattr(value, name)
        except AttributeError:
            return None
        return value
    return None


def documented() -> tuple[list[tuple[str, object]], dict[str, str | None]]:
    """Return the ``(name, object)`` of every autosummary entry and the ``:value:`` of every ``.. data::``."""
    entries: list[tuple[str, object]] = []
    constants: dict[str, str | None] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        module = "scfm"
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if match := MODULE_DIRECTIVE.match(line):
                module = match.group(1)
            elif match := DATA_DIRECTIVE.match(line):
                value = next(
                    (ln.split(":value:", 1)[1].strip() for ln in lines[i + 1 : i + 4] if ":value:" in ln), None
                )
                constants[f"{module}.{match.group(1)}"] = value
            elif line.strip() == ".. autosummary::":
                for entry in lines[i + 1 :]:
                    if entry.strip() and not entry.startswith(" "):
                        break
                    name = entry.strip().lstrip("~")
                    if name and not name.startswith(":"):
                        full = f"{module}.{name}"
                        entries.append((full, _resolve(full)))
    return entries, constants


def test_autosummary_entries_resolve():
    entries, _ = documented()
    assert len(entries) > 100
    assert [name for name, value in entries if value is None] == []


@pytest.mark.parametrize("module", api_modules(), ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(module):
    entries, constants = documented()
    objects = {id(value) for _, value in entries}
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isroutine(value) or callable(value):
            # documented under any name (scfm.models re-exports scfm.models.base and scfm.errors)
            if id(value) not in objects:
                missing.append(name)
        elif f"{module.__name__}.{name}" not in constants:
            missing.append(name)
    assert missing == [], f"add {missing} of {module.__name__} to a page in docs/api/"


def test_documented_constants_hold_the_package_values():
    _, constants = documented()
    assert constants, "no .. data:: directive found"
    for dotted, written in constants.items():
        if written is None:  # an object described in words (scfm.settings), not a constant
            continue
        held = repr(_resolve(dotted))
        assert written == held, f"{dotted}: docs/api says {written}, the package holds {held}"

"""Helpers for the Sphinx build of the scfm docs: class members for the autosummary template, the CLI parser."""

from __future__ import annotations

import argparse
import importlib
import inspect

#: The modules whose ``__all__`` the API reference documents (``scfm.datasets`` when it exists).
API_MODULES = ("pp", "tl", "pl", "models", "models.base", "bench", "data", "genes", "errors", "datasets")


def api_modules() -> list:
    """Import the documented modules of scfm (those that exist)."""
    modules = []
    for name in API_MODULES:
        try:
            modules.append(importlib.import_module(f"scfm.{name}"))
        except ModuleNotFoundError as error:
            if error.name != f"scfm.{name}":
                raise
    return modules


def own_members(cls: type) -> dict[str, list[str]]:
    """Public methods and properties of ``cls`` that scfm defines (its own or inherited from an scfm base class).

    Members that come from torch, scvi-tools, Lightning or the standard library are left to those projects' docs.
    """
    members: dict[str, list[str]] = {"methods": [], "properties": []}
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((klass for klass in inspect.getmro(cls) if name in vars(klass)), None)
        if owner is None or not owner.__module__.startswith("scfm"):
            continue
        value = vars(owner)[name]
        if _doc_owner(cls, name) is not None and not _doc_owner(cls, name).__module__.startswith("scfm"):
            continue  # an override of a framework hook (e.g. Lightning's train_dataloader) documented only there
        if isinstance(value, property):
            members["properties"].append(name)
        elif isinstance(value, classmethod | staticmethod) or inspect.isfunction(value):
            members["methods"].append(name)
    return members


def _doc_owner(cls: type, name: str) -> type | None:
    """Return the first class along the MRO of ``cls`` whose ``name`` has a docstring (what autodoc shows)."""
    for klass in inspect.getmro(cls):
        value = vars(klass).get(name)
        if value is None:
            continue
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if getattr(function, "__doc__", None):
            return klass
    return None


def class_members() -> dict[str, dict[str, list[str]]]:
    """:func:`own_members` of every class the API modules export, by full name (for the class template)."""
    table = {}
    for module in api_modules():
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if inspect.isclass(value):
                table[f"{module.__name__}.{name}"] = own_members(value)
    return table


_RST_SPECIAL = ("\\", "*", "`", "|")


def _escape_rst(text: str | None) -> str | None:
    if text is None or text is argparse.SUPPRESS:
        return text
    for char in _RST_SPECIAL:
        text = text.replace(char, "\\" + char)
    return text


def _escape_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = _escape_rst(parser.description)
    parser.epilog = _escape_rst(parser.epilog)
    for action in parser._actions:
        action.help = _escape_rst(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = _escape_rst(choice.help)
            for subparser in action.choices.values():
                _escape_parser(subparser)


def cli_parser() -> argparse.ArgumentParser:
    """Return ``scfm.cli.build_parser()`` with its help texts escaped for reStructuredText.

    sphinx-argparse reads help texts as reStructuredText, where ``step-*.ckpt`` would start an emphasis; the
    command line itself prints them unchanged.
    """
    from scfm.cli import build_parser

    parser = build_parser()
    _escape_parser(parser)
    return parser

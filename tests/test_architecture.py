"""The layering and the family contract hold: checked on the source (imports) and on the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scfm
from scfm.models import CheckpointError, FoundationModel, Pretrained, families, load_pretrained, resolve_model
from scfm.models.base import Family, families_with

PACKAGE = Path(scfm.__file__).parent
FAMILY_FOLDERS = ("scgpt", "tgpt", "cellplm", "scmulan")
LAYERS = ("genes", "tokenize", "data", "nn", "train", "models", "bench", "tl", "pp", "pl")


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (top level and inside functions, relative resolved)."""
    package = ".".join(("scfm", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = package.rsplit(".", 1)[0] if path.name != "__init__.py" else package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def layer_imports() -> dict[str, set[str]]:
    graph = {}
    for layer in LAYERS:
        used = set()
        for path in modules_under(layer):
            for name in imports_of(path):
                parts = name.split(".")
                if parts[0] == "scfm" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != layer:
                    used.add(parts[1])
        graph[layer] = used
    return graph


def test_no_import_cycle_between_layers():
    graph = layer_imports()
    visiting, done = set(), set()

    def visit(layer: str, path: list[str]) -> None:
        if layer in done:
            return
        assert layer not in visiting, f"import cycle: {' -> '.join([*path, layer])}"
        visiting.add(layer)
        for used in sorted(graph[layer]):
            visit(used, [*path, layer])
        visiting.discard(layer)
        done.add(layer)

    for layer in LAYERS:
        visit(layer, [])


@pytest.mark.parametrize("layer", ["genes", "tokenize", "data", "nn", "train"])
def test_lower_layers_hold_no_family_code(layer):
    for path in modules_under(layer):
        assert not any(name.startswith("scfm.models") for name in imports_of(path)), f"{path} imports scfm.models"
        defined = [
            node.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef | ast.FunctionDef)
        ]
        family_named = [n for n in defined if any(f in n.lower() for f in FAMILY_FOLDERS)]
        assert not family_named, f"{path} defines family code: {family_named}"


@pytest.mark.parametrize("layer", ["tl", "pp", "pl", "models"])
def test_production_code_does_not_import_the_evaluation_extra(layer):
    for path in modules_under(layer):
        assert not any(name.startswith("scfm.bench") for name in imports_of(path)), f"{path} imports scfm.bench"


def test_tools_dispatch_on_capabilities_not_families():
    for folder in ("tl", "pp"):
        for path in modules_under(folder):
            names = imports_of(path)
            family_imports = [n for n in names if any(n.startswith(f"scfm.models.{f}") for f in FAMILY_FOLDERS)]
            assert not family_imports, f"{path} imports a family folder: {family_imports}"
            assert "torch" not in names, f"{path} imports torch (tools never build tensors)"


def test_family_folders_do_not_import_each_other():
    for family in FAMILY_FOLDERS:
        for path in modules_under(f"models/{family}"):
            others = [n for n in imports_of(path) for f in FAMILY_FOLDERS if f != family and f"models.{f}" in n]
            assert not others, f"{path} imports another family: {others}"


@pytest.mark.parametrize("family", families(), ids=lambda f: f.name)
def test_every_family_fulfils_the_contract(family: Family):
    assert issubclass(family.model_cls, FoundationModel) and family.model_cls.family_name == family.name
    assert family.config_cls().family == family.name if _has_defaults(family) else True
    assert family.capabilities and "embed" in family.capabilities
    pretrained = load_pretrained(family.bundled)
    assert isinstance(pretrained, Pretrained) and pretrained.family == family.name and not pretrained.module.training
    assert pretrained.provenance()["family"] == family.name


def _has_defaults(family: Family) -> bool:
    try:
        family.config_cls()
    except TypeError:
        return False
    return True


def test_resolve_model_names_the_families_that_have_a_capability():
    with pytest.raises(
        CheckpointError, match=r"cannot generate cells; models that can: scMulan \(bundled: 'scmulan'\)"
    ):
        resolve_model("tgpt", capability="generate")
    assert resolve_model(None, capability="generate").family == "scmulan"
    assert resolve_model(None, capability="embed").family == "tgpt"  # the package default
    assert resolve_model(None, capability="integrate").family == "scgpt"  # what tGPT lacks falls back to scGPT
    assert resolve_model(None, capability="annotate_reference").family == "scgpt"
    assert load_pretrained("default", family="scgpt").family == "scgpt"
    assert resolve_model(None, capability="predict_counts").family == "cellplm"
    assert resolve_model(None, capability="bulk_features").family == "tgpt"
    assert resolve_model(None, capability="annotate_zero_shot").family == "scmulan"
    assert {f.name for f in families_with("annotate_reference")} == {"scgpt", "cellplm"}


def test_load_pretrained_refuses_another_family():
    with pytest.raises(CheckpointError, match="holds a 'tgpt' model, not an scGPT one"):
        load_pretrained("tgpt", family="scgpt")

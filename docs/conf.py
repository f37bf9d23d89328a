"""Sphinx configuration of the scfm documentation.

Build it (warnings are errors, notebooks are rendered from their committed outputs and never executed)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # a fresh clone builds without an install of scfm being current
sys.path.insert(0, str(HERE / "_ext"))

from scfm_docs import class_members  # noqa: E402

import scfm  # noqa: E402

# -- Tutorials ----------------------------------------------------------------------------------------------------
# The notebooks live in ../tutorials (executed, with outputs). Sphinx only reads files under docs/, so each build
# mirrors them into docs/tutorials/notebooks/ (git-ignored): a notebook added to tutorials/ appears in the site
# without any change here, and one removed from tutorials/ disappears from it. They are listed in the order of
# tutorials/README.md's table.
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = HERE / "tutorials" / "notebooks"


def _mirror_notebooks(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    wanted = {path.name: path for path in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name, path in wanted.items():
        copy = target / name
        if not copy.exists() or not filecmp.cmp(path, copy, shallow=False):
            shutil.copy2(path, copy)  # keeps the mtime, so an unchanged notebook is not re-read


def _write_toctree(readme: Path, target: Path) -> None:
    """List the mirrored notebooks in the order of tutorials/README.md's links, then any others by name."""
    names = sorted(path.stem for path in target.glob("*.ipynb"))
    linked = re.findall(r"\]\(([\w-]+)\.ipynb\)", readme.read_text()) if readme.is_file() else []
    ordered = [name for name in dict.fromkeys(linked) if name in names]
    ordered += [name for name in names if name not in ordered]
    entries = "".join(f"notebooks/{name}\n" for name in ordered)
    text = f"```{{toctree}}\n:maxdepth: 1\n\n{entries}```\n"
    toctree = target / "_toctree.txt"  # included by docs/tutorials/index.md
    if not toctree.exists() or toctree.read_text() != text:
        toctree.write_text(text)


_mirror_notebooks(TUTORIALS, NOTEBOOKS)
_write_toctree(TUTORIALS / "README.md", NOTEBOOKS)

# -- Project ------------------------------------------------------------------------------------------------------
project = "scfm"
author = "scfm developers"
copyright = f"{date.today():%Y}, {author}"
version = release = scfm.__version__

extensions = [
    "myst_nb",  # Markdown pages and notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpy docstrings
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "sphinxarg.ext",  # the `scfm` command line, from scfm.cli.build_parser
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
# pages that only point to docs/checkpoints.md for readers of the repository; the site has checkpoints.md itself
exclude_patterns += ["scgpt_checkpoints.md", "cellplm_checkpoints.md"]
# .rst first: autosummary writes its generated pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
smartquotes_action = "qe"  # quotes and ellipses only: "--backed" stays two hyphens
pygments_style = "default"
suppress_warnings = [
    # annotations that name classes imported only under TYPE_CHECKING are shown as written
    "sphinx_autodoc_typehints.forward_reference",
]

# -- Notebooks: render the committed outputs, never execute -------------------------------------------------------
nb_execution_mode = "off"
nb_merge_streams = True
nb_output_stderr = "remove"  # progress bars and library warnings on stderr are noise in a rendered page
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath", "html_image", "html_admonition"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links

# -- API reference ------------------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autosummary_context = {"scfm_members": class_members()}  # used by _templates/autosummary/class.rst
autodoc_member_order = "groupwise"
autodoc_default_options = {"show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]
typehints_defaults = "braces"
always_document_param_types = False
typehints_use_signature = False
typehints_use_signature_return = False

# Cross-links to the libraries scfm builds on need their inventories from the internet; they are fetched on Read the
# Docs (or with SCFM_DOCS_INTERSPHINX=1) and left out otherwise, so that an offline build has no network warning.
intersphinx_mapping = {}
if os.environ.get("READTHEDOCS") or os.environ.get("SCFM_DOCS_INTERSPHINX"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
    }

# -- HTML ---------------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "scfm"
html_static_path = ["_static"]
html_css_files = ["css/custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "max_navbar_depth": 2,  # the sidebar lists the API pages of each module, not every function (a faster build)
}

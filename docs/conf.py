"""Sphinx configuration of the linoverfit documentation site.

Build it from the repository root (the README's command)::

    pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html

The API reference (``docs/api/``, git-ignored) is written by :func:`write_api_pages` from the
code at the start of every build: one page per public module, every public function and class
with its full signature and its docstring (Google style, read by napoleon; math in ``:math:`` roles). The tutorial
(``docs/tutorial.md``, a MyST text notebook) is executed by myst-nb. MathJax is served from the
site itself (copied from the ``sphinx-mathjax-offline`` package), so the pages need no network.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# document, and run the tutorial against, the checkout being built, installed or not
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import linoverfit  # noqa: E402
from linoverfit import _public  # noqa: E402

project = "linoverfit"
author = "linoverfit developers"
copyright = "linoverfit developers"
release = getattr(linoverfit, "__version__", "")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "sphinx-mathjax-offline",  # vendors MathJax 3 and points mathjax_path at _static/mathjax
]

# ----------------------------------------------------------------------------- sources

exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "conf.py"]
templates_path = ["_templates"]
root_doc = "index"
suppress_warnings = ["mystnb.unknown_mime_type"]  # the ipywidgets panel: shown only in a live kernel

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # `theory.md#15-incremental-learning` links work as on GitHub
myst_dmath_double_inline = True

# ----------------------------------------------------------------------------- notebooks (myst-nb)

nb_execution_mode = "force"  # the tutorial is executed at every build: its figures are the code's
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_execution_in_temp = True  # nothing the notebook writes lands in docs/
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN: the pages must work offline

# ----------------------------------------------------------------------------- API (autodoc)

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # defaults as written (`key=jax.random.key(0)`), not their repr
autodoc_typehints = "signature"
# array-like and dtype-like parameters print as their alias, not as JAX's/numpy's full union of types
autodoc_type_aliases = {"ArrayLike": "ArrayLike", "DTypeLike": "DTypeLike"}
autodoc_default_options = {"members": True, "show-inheritance": True}
autosummary_generate = False  # the pages are written below; autosummary only draws the tables
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" as a field list, not duplicate attribute entries
napoleon_use_rtype = False

# modules with no reference page: argument checking (plumbing) and the figure scripts (reached
# through `linoverfit figures`, documented in the CLI page)
API_EXCLUDE = ("linoverfit.validation", "linoverfit.experiments")
API_DIR = HERE / "api"


def public_modules() -> list[str]:
    """Every public module of the package (:func:`linoverfit._public.public_modules`), minus :data:`API_EXCLUDE`."""
    return _public.public_modules(exclude=API_EXCLUDE)


module_members = _public.module_members  # the rule tests/test_docs.py checks


def canonical_pages(modules: list[str]) -> dict[int, str]:
    """id(object) -> the module page that documents it: where it is defined when that module has
    a page, else the first public module that exports it."""
    home: dict[int, str] = {}
    exported: dict[int, str] = {}
    for name in modules:
        mod = importlib.import_module(name)
        for _, obj in module_members(mod):
            exported.setdefault(id(obj), name)
            if getattr(obj, "__module__", None) == name:
                home[id(obj)] = name
    return {**exported, **home}


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def write_api_pages() -> None:
    """Write ``docs/api/<module>.rst`` for every public module and ``docs/api/index.rst``."""
    modules = public_modules()
    for name in modules:
        importlib.import_module(name)
    pages = canonical_pages(modules)
    API_DIR.mkdir(exist_ok=True)
    for old in API_DIR.glob("*.rst"):
        old.unlink()
    for name in modules:
        mod = importlib.import_module(name)
        members = module_members(mod)
        short = name.replace("linoverfit", "lo", 1)
        lines = [_title(f"``{short}``"), f".. automodule:: {name}\n   :no-members:\n"]
        if members:
            # the table names every object by its full path: no current module while it is read
            lines.append(".. rubric:: Summary\n")
            lines.append(".. py:currentmodule:: None\n")
            lines.append(".. autosummary::\n   :nosignatures:\n")
            for n, obj in members:
                lines.append(f"   ~{pages[id(obj)]}.{n}")
            lines.append("")
        own = [(n, obj) for n, obj in members if pages[id(obj)] == name]
        if own:
            lines.append(".. rubric:: Reference\n")
        for n, obj in own:
            if inspect.isclass(obj):
                lines.append(f".. autoclass:: {name}.{n}\n   :members:\n   :show-inheritance:\n")
            else:
                lines.append(f".. autofunction:: {name}.{n}\n")
        (API_DIR / f"{name}.rst").write_text("\n".join(lines) + "\n")
    index = [
        _title("API reference"),
        "Generated from the code at every build: one page per public module, every public function",
        "and class with its full signature and docstring (the math it computes, shapes, assumptions).",
        "Conventions shared by simulation and theory are on the :doc:`home page <../index>` and in",
        ":doc:`the theory notes <../theory>`.\n",
        ".. code-block:: python\n\n   import linoverfit as lo\n",
        ".. autosummary::\n",
        *[f"   {name}" for name in modules],
        "",
        ".. toctree::\n   :hidden:\n",
        *[f"   {name}" for name in modules],
        "",
    ]
    (API_DIR / "index.rst").write_text("\n".join(index) + "\n")


def include_public_methods(app, what, name, obj, skip, options):
    """Every public method of a documented class is listed with its signature, docstring or not
    (undocumented data attributes stay out: the class docstring describes the fields)."""
    if what == "class" and not name.startswith("_") and inspect.isroutine(obj):
        return False
    return None


# files outside docs/ that the site shows as a page of its own
INCLUDED_AS_PAGE = {"benchmarks/README.md": "benchmarks.md", "README.md": "index.md"}
_LOCAL_LINK = re.compile(r"(\]\()(?![a-z][a-z0-9+.-]*:|#|/)([^)\s#]+)(#[^)\s]*)?(\))")


def relink_included(app, relative_path, parent_docname, content):
    """Markdown pulled in from outside docs/ (the README's intro and figures, benchmarks/README.md)
    links relative to its own folder; rewrite those links and images relative to docs/ so the
    same text works on GitHub and on the site."""
    source = (Path(app.srcdir) / relative_path).resolve()
    if HERE in source.parents:
        return

    def fix(m):
        target = (source.parent / m.group(2)).resolve()
        rel = target.relative_to(ROOT).as_posix() if ROOT in target.parents else None
        if rel in INCLUDED_AS_PAGE:
            new = INCLUDED_AS_PAGE[rel]
        else:
            new = os.path.relpath(target, HERE).replace(os.sep, "/")
        return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

    content[0] = _LOCAL_LINK.sub(fix, content[0])


def setup(app):
    app.connect("autodoc-skip-member", include_public_methods)
    app.connect("include-read", relink_included)
    # before the sources are collected, so the pages written here are read in the same build
    app.connect("builder-inited", lambda app: write_api_pages())
    return {"parallel_read_safe": True}

# ----------------------------------------------------------------------------- HTML

html_theme = "furo"
html_title = f"linoverfit {release}"
html_static_path = ["_static"]
html_css_files = ["linoverfit.css"]  # code boxes and long signatures wrap instead of overflowing
html_show_sourcelink = False
html_copy_source = False

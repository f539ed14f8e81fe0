"""API docs: docstring examples run and every public name has a docstring with its math or shapes.
That every public name appears in the generated API reference with its full signature is checked
by tests/test_site.py, which builds the site."""

import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import linoverfit as lo
from linoverfit import _public

ROOT = Path(__file__).resolve().parents[1]

# math (reST roles, formulas) or shapes (``(n, d)``, "shape", named dimensions) in a docstring
_MATH_OR_SHAPES = re.compile(
    r":math:|\.\. math::|shape|``\(|\(C|\bd_in\b|\bd_out\b|[=^]|\bsigma|\bgamma|\blr\b|\bsteps\b"
)


# not checked name by name (docstring style; no API reference page): argument checking (plumbing) and the
# figure scripts (reached through the `linoverfit figures` command, documented on the lo.cli page)
_NOT_IN_REFERENCE = ("linoverfit.validation", "linoverfit.experiments")


# modules whose functions draw or place things rather than compute: a docstring, no math required
_STYLE_ONLY = ("linoverfit.plotting", "linoverfit.parallel", "linoverfit.cli", "linoverfit.files", "linoverfit.deprecation", "linoverfit.summary",
               "linoverfit.progress")  # no math to state


def _public_modules():
    """Every importable, non-underscore module of the package (theory subpackage included)."""
    return _public.public_modules()


def _module_api(mod):
    """(qualified name, name, object) for the callables a module exports (the API reference's rule)."""
    return [(f"{mod.__name__}.{n}", n, obj) for n, obj in _public.module_members(mod)]


# ----------------------------------------------------------------------------- doctests

_DOCTEST_SCRIPT = r"""
import doctest, importlib, json, sys, io, contextlib
results = {}
for name in sys.argv[1:]:
    mod = importlib.import_module(name)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        r = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    results[name] = {"failed": r.failed, "attempted": r.attempted, "report": buf.getvalue()[-4000:]}
print("@@RESULTS@@" + json.dumps(results))
"""


def test_docstring_examples_run(tmp_path):
    """Run every module's docstring examples the way a user sees them: a fresh process, default
    float32 (the test suite itself switches on float64 in conftest)."""
    mods = _public_modules()
    proc = subprocess.run([sys.executable, "-c", _DOCTEST_SCRIPT, *mods], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
                                                      "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])
    failed = {m: r["report"] for m, r in results.items() if r["failed"]}
    assert not failed, "\n\n".join(f"== {m}\n{rep}" for m, rep in failed.items())
    # the core modules carry examples
    for core in ("linoverfit.tasks", "linoverfit.networks", "linoverfit.checkpoints", "linoverfit.results"):
        assert results[core]["attempted"] > 0, f"{core} has no docstring examples"


# ----------------------------------------------------------------------------- docstrings


def _all_public():
    """Top-level ``lo.__all__`` callables plus every public callable of every public module."""
    seen, out = set(), []
    for n in lo.__all__:
        obj = getattr(lo, n, None)  # a missing name fails test_top_level_names_exist...
        if obj is not None and not inspect.ismodule(obj) and callable(obj):
            out.append((f"linoverfit.{n}", n, obj))
            seen.add(id(obj))
    for name in _public_modules():
        if name == "linoverfit":
            continue
        mod = importlib.import_module(name)
        for q, n, obj in _module_api(mod):
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append((q, n, obj))
    return out


def test_top_level_names_exist_and_modules_documented():
    for n in lo.__all__:
        assert hasattr(lo, n), f"lo.__all__ lists {n!r} but lo has no such attribute"
    for name in _public_modules():
        mod = importlib.import_module(name)
        assert (mod.__doc__ or "").strip(), f"module {name} has no docstring"


def test_every_public_callable_has_docstring_with_math_or_shapes():
    missing, vague = [], []
    for q, _, obj in _all_public():
        if q.startswith(_NOT_IN_REFERENCE):
            continue
        doc = inspect.getdoc(obj) or ""
        if not doc.strip():
            missing.append(q)
        elif (not q.startswith(_STYLE_ONLY) and not (isinstance(obj, type) and issubclass(obj, BaseException))
              and not _MATH_OR_SHAPES.search(doc)):
            vague.append(q)
    assert not missing, f"no docstring: {missing}"
    assert not vague, f"docstring states neither math nor shapes: {vague}"


def test_theory_functions_documented():
    theory = getattr(lo, "theory", None)
    if theory is None:
        pytest.skip("linoverfit.theory not importable yet")
    names = getattr(theory, "__all__", [n for n in dir(theory) if not n.startswith("_")])
    for n in names:
        obj = getattr(theory, n)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        assert doc.strip() and _MATH_OR_SHAPES.search(doc), f"lo.theory.{n} lacks a docstring with math/shapes"


# ----------------------------------------------------------------------------- docs pages

def test_your_network_page_runs_as_written(tmp_path):
    """docs/your_network.md's code blocks run, in page order, in a fresh (float32) process, as a
    reader pastes them (the site does not execute this page; the tutorial it builds is executed)."""
    text = (ROOT / "docs" / "your_network.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3, "the page's python blocks moved: update this test"
    script = tmp_path / "your_network.py"
    script.write_text("\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

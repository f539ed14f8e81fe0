"""Honest packaging: licence, one version source, py.typed, the command line, lazy imports."""

import importlib
import inspect
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import linoverfit as lo

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _project_value(key):
    m = re.search(rf"^{key}\s*=\s*(.+)$", PYPROJECT, re.M)
    assert m, f"{key} missing from pyproject.toml"
    return m.group(1).strip()


def test_license_file_and_spdx_expression():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert _project_value("license") == '"MIT"'
    assert 'license-files = ["LICENSE"]' in PYPROJECT
    # an SPDX expression and a License :: classifier together are rejected by PEP 639 tools
    assert "License ::" not in PYPROJECT


def test_version_has_one_source():
    version = _project_value("version").strip('"')
    # nowhere in the package is the version written as a literal
    for path in (ROOT / "linoverfit").rglob("*.py"):
        assert not re.search(r"__version__\s*=\s*['\"]\d+\.\d+", path.read_text()), path
    try:
        installed = metadata.version("linoverfit")
    except metadata.PackageNotFoundError:
        pytest.skip("linoverfit is not installed (pip install -e .): no metadata to read the version from")
    assert lo.__version__ == installed == version


def test_py_typed_is_shipped():
    assert (ROOT / "linoverfit" / "py.typed").exists()
    assert re.search(r"\[tool\.setuptools\.package-data\]\s*\nlinoverfit = \[\"py\.typed\"\]", PYPROJECT)


def _run(*args, **kw):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, **kw)


def test_version_and_help_from_the_command_line():
    proc = _run("-m", "linoverfit", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"linoverfit {lo.__version__}"
    proc = _run("-m", "linoverfit", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "figures" in proc.stdout and "--version" in proc.stdout
    proc = _run("-m", "linoverfit", "figures", "--help")
    assert proc.returncode == 0 and "--only" in proc.stdout


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output (one ``import time: self | total | name`` per line)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_version_does_not_import_jax():
    """``linoverfit --version`` answers from the package metadata without importing JAX (issue 20:
    it took 1.4 s, 8 s on a loaded machine): through ``python -m linoverfit`` and through the
    console script's entry point ``linoverfit.cli:main``."""
    proc = _run("-X", "importtime", "-m", "linoverfit", "--version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"linoverfit {lo.__version__}"
    modules = _imported(proc.stderr)
    assert "linoverfit.cli" in modules, "the parser did not read -X importtime's output"
    assert not {m for m in modules if m == "jax" or m.startswith(("jax.", "jaxlib", "numpy", "scipy"))}
    entry = re.search(r'^linoverfit = "([\w.]+):(\w+)"', PYPROJECT, re.M)
    assert entry, "no linoverfit console script in pyproject.toml"
    code = ("import sys, importlib\n"
            f"main = getattr(importlib.import_module({entry.group(1)!r}), {entry.group(2)!r})\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'scipy')))\n")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [f"linoverfit {lo.__version__}", "[]"]


def test_public_names_load_on_first_access():
    """``import linoverfit`` imports no JAX; every public name is there on first access, and
    ``from linoverfit import *`` binds them all."""
    code = ("import sys, linoverfit as lo\n"
            "print('jax' in sys.modules)\n"
            "ns = {}\nexec('from linoverfit import *', ns)\n"
            "print(sorted(n for n in lo.__all__ if n not in ns))\n"
            "print(lo.DeepLinear.__module__, lo.finetune.__module__, lo.tasks.__name__)\n")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["False", "[]", "linoverfit.networks linoverfit.finetuning linoverfit.tasks"]


def test_import_is_lazy():
    # the closed forms (scipy.integrate), the plots (matplotlib) and the explorer load on first use
    code = ("import sys, linoverfit as lo\n"
            "heavy = ['matplotlib', 'scipy.integrate', 'scipy.optimize', 'linoverfit.theory', 'linoverfit.plotting',"
            " 'ipywidgets']\n"
            "print([m for m in heavy if m in sys.modules])\n"
            "lo.theory.turning.turning_point, lo.plotting.style\n"
            "print([m for m in heavy[:5] if m not in sys.modules])\n")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.strip().splitlines()
    assert before == "[]", f"imported eagerly by `import linoverfit`: {before}"
    assert after == "[]", f"not loaded on first use: {after}"
    assert {"theory", "plotting", "explore"} <= set(dir(lo))


# every public name of the package and of these modules (their __all__, else their public names)
_TYPED_MODULES = ("theory", "tasks", "sensitivity", "optimizers", "networks", "training", "checkpoints", "results",
                  "memory", "files", "progress", "explorer", "plotting", "cli", "theory.modes", "theory.perturbation",
                  "theory.curvature", "theory.flow", "theory.forgetting", "theory.curves", "theory.turning",
                  "theory.ucurve", "theory.mirror", "theory.integrate")


def _public_signatures():
    """(qualified name, callable) of every public function and the ``__init__`` a public class defines."""
    mods = [lo] + [importlib.import_module(f"linoverfit.{m}") for m in _TYPED_MODULES]
    seen, out = set(), []
    for mod in mods:
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for n in names:
            obj = getattr(mod, n)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            if not getattr(obj, "__module__", "").startswith("linoverfit"):
                continue  # re-exported from elsewhere (numpy, jax, typing)
            seen.add(id(obj))
            if inspect.isfunction(obj):
                out.append((f"{mod.__name__}.{n}", obj))
                continue
            if getattr(obj, "_is_protocol", False):
                continue  # a typing.Protocol is not instantiated: its __init__ is typing's placeholder
            # the __init__ the class or a linoverfit base defines (dataclasses' generated ones included)
            owner = next((c for c in obj.__mro__ if "__init__" in vars(c)), object)
            if owner.__module__.startswith("linoverfit"):
                out.append((f"{mod.__name__}.{n}.__init__", owner.__init__))
    return out


def test_every_public_signature_is_annotated():
    found = _public_signatures()
    names = {q for q, _ in found}
    assert {"linoverfit.theory.turning.turning_point", "linoverfit.pretrain", "linoverfit.memory.require"} <= names
    missing = []
    for q, fn in found:
        sig = inspect.signature(fn)
        for p in sig.parameters.values():
            if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.annotation is inspect.Parameter.empty:
                missing.append(f"{q}: parameter {p.name}")
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{q}: return")
    assert not missing, "public signatures without type hints:\n" + "\n".join(missing)

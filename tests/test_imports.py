"""The package's shape: no import cycle, no oversized module, curated namespaces, and every deprecated
name working for one more release (issue 17, points 5 and 7). Static checks read the source with
``ast``; the deprecation table is exercised in a fresh process, so the once-per-process warnings do
not depend on which tests ran before."""

import ast
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import linoverfit as lo
from linoverfit import deprecation

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "linoverfit"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (private and figure modules included)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(name: str, path: Path, modules: dict[str, Path], in_functions: bool = False) -> set[str]:
    """The package modules ``name`` imports when it is executed: statements at module level (inside
    ``if``/``try`` blocks too), not in functions or classes (unless ``in_functions``) and not under
    ``if TYPE_CHECKING:``. ``from pkg import x`` counts as an import of ``pkg.x`` when that is a
    module, else of ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if in_functions:
                    visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        visit(block)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = dfs(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = dfs(v)
            if found:
                return found
    return None


def test_import_graph_has_no_cycle():
    """Module-level imports among linoverfit modules form a DAG (a submodule's implicit import of its
    parent package is not an edge: Python initialises the parent first)."""
    modules = _modules()
    graph = {name: _module_level_imports(name, path, modules) for name, path in modules.items()}
    assert any(graph.values()), "the import graph came out empty: the parser is broken"
    assert "linoverfit.tasks" in graph["linoverfit.finetuning"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # nor is one hidden in a function body (a function-local import that only breaks a cycle)
    graph = {name: _module_level_imports(name, path, modules, in_functions=True) for name, path in modules.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle through a function-local import: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_theory_imports_nothing_of_the_package_inside_functions():
    """The theory modules import the package's modules at the top, never inside a function (no
    import cycle is hidden there; optional dependencies are not involved)."""
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("linoverfit.theory"):
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("linoverfit")):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"function-local imports of linoverfit modules: {offenders}"


def test_modules_are_small_or_say_why():
    """At most 400 lines per module, unless its docstring has a line starting ``Size:`` with the reason."""
    too_big = []
    for name, path in _modules().items():
        n = len(path.read_text().splitlines())
        if n <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        reason = [line for line in doc.splitlines() if line.strip().startswith("Size:")]
        if not reason or len(reason[0].strip()) < len("Size: ") + 20:
            too_big.append(f"{path.relative_to(ROOT)} ({n} lines)")
    assert not too_big, f"over {MAX_LINES} lines without a 'Size:' reason in the docstring: {too_big}"


def _public(names):
    return [n for n in names if not n.startswith("_")]


def test_namespaces_are_curated():
    top = _public(dir(lo))
    # issue 17: "about 20": 23 with lo.springer, lo.MLP and lo.Model (issue 19); the errors live in lo.errors
    assert len(top) <= 23, top
    assert "Any" not in top
    assert sorted(lo.__all__) == sorted(top)
    th = lo.theory
    functions = [n for n in _public(dir(th)) if not isinstance(getattr(th, n), types.ModuleType)]
    assert len(functions) <= 10, functions
    assert sorted(functions) == sorted(th.__all__)
    assert {"pretrain", "finetune", "gaussian"} <= set(functions)
    # the mirror functions are the simulation's calls, predicted, not look-alikes
    from linoverfit.theory import mirror

    assert (th.pretrain, th.finetune, th.gaussian) == (mirror.pretrain, mirror.finetune, mirror.gaussian)
    # every public theory submodule is listed, and only those
    subs = {n for n in _public(dir(th)) if isinstance(getattr(th, n), types.ModuleType)}
    on_disk = {m.name for m in pkgutil.iter_modules(th.__path__) if not m.name.startswith("_")}
    assert subs == on_disk


def test_theory_does_not_hold_its_deprecated_names():
    """A deprecated name bound in the package namespace would never reach ``__getattr__`` (no warning)."""
    for module in (lo, lo.theory, lo.theory.flow, lo.theory.turning):
        prefix = module.__name__ + "."
        for old in deprecation.TABLE:
            if old.startswith(prefix) and "." not in old[len(prefix):]:
                assert old[len(prefix):] not in vars(module), f"{old} is bound in {module.__name__}"


_DEPRECATION_SCRIPT = r"""
import importlib, json, pkgutil, warnings
import linoverfit
from linoverfit import deprecation

# every module registers its own old names when imported
for info in pkgutil.walk_packages(linoverfit.__path__, prefix="linoverfit."):
    importlib.import_module(info.name)

def resolve(path):
    # the replacement's object found by plain imports and getattr (not through deprecation.replacement)
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(path)

report = {}
for old, entry in sorted(deprecation.TABLE.items()):
    module, _, name = old.rpartition(".")
    mod = importlib.import_module(module)
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        obj = getattr(mod, name)
    with warnings.catch_warnings(record=True) as second:
        warnings.simplefilter("always")
        again = getattr(mod, name)
    new = resolve(entry.new)
    report[old] = {
        "new": entry.new, "removal": entry.removal,
        "same": obj is new and again is new,
        "first": [(w.category.__name__, str(w.message), w.filename) for w in first],
        "second": [(w.category.__name__, str(w.message)) for w in second],
    }
print("@@" + json.dumps(report))
"""


def test_every_deprecated_name_warns_once_and_is_its_replacement():
    proc = subprocess.run([sys.executable, "-c", _DEPRECATION_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.rsplit("@@", 1)[1])
    assert len(report) >= 20
    assert "linoverfit.theory.mode_trajectory" in report and "linoverfit.theory.flow.predict_finetune" in report
    bad = {}
    for old, r in report.items():
        problems = []
        if not r["same"]:
            problems.append("not the replacement object")
        deps = [w for w in r["first"] if w[0] == "DeprecationWarning"]
        if len(deps) != 1 or len(r["first"]) != 1:
            problems.append(f"first access warned {r['first']}")
        else:
            _, message, filename = deps[0]
            if r["new"] not in message or r["removal"] not in message or old not in message:
                problems.append(f"message {message!r} lacks the old name, replacement or removal version")
            if filename != "<string>":  # stacklevel: the warning points at the user's line
                problems.append(f"warning attributed to {filename}")
        if r["second"]:
            problems.append(f"second access warned {r['second']}")
        if problems:
            bad[old] = problems
    assert not bad, bad


def test_sources_compile_without_warnings():
    """No invalid escape sequence (a DeprecationWarning at compile time, so ``python -W
    error::DeprecationWarning`` could not import a fresh checkout; ``\\t`` in ``\\tfrac`` is a tab)."""
    import warnings

    bad = []
    for path in _modules().values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_text(), str(path), "exec")
            except (SyntaxError, DeprecationWarning, SyntaxWarning) as err:
                bad.append(f"{path.relative_to(ROOT)}: {err}")
    assert not bad, bad

"""Every fix an error message or warning suggests exists (issue 20: "One error suggests a fix that does
not exist (``online=True`` on ``finetune``)").

The messages are read from the source: every ``raise X("...")`` and ``warnings.warn("...")`` of the
package, f-string fields standing in as ``{}``. Three kinds of suggestion are checked:

* a dotted name (``lo.tasks.shifted``, ``linoverfit.Layout``, ``lo.theory.forgetting.predict_finetune``)
  resolves to an object, and not through a deprecated alias;
* a call written out (``net.init(scheme='aligned', task=task)``, ``lo.Layout(devices=...)``,
  ``task.sample(n, key)``) names a callable that exists and takes every keyword it shows;
* a bare keyword (``pass scale='absolute'``, ``use gd_order=0``; not ``name={}``, which shows the
  value the caller passed) is a parameter of every public
  function that raises the message, itself or through the package helper it calls (a helper shared
  by ``lo.pretrain`` and ``lo.finetune`` may not suggest a keyword only one of them has), unless the
  message names the callable it belongs to.

A keyword that only describes how something was made (``pre-trained with keep_weights=False``) is a
suggestion too for this test, so such messages name the call they describe.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import linoverfit as lo
from linoverfit import deprecation

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "linoverfit"

#: What a receiver written in a message stands for (``net.init``, ``task.sample``, ``{}.sample``).
RECEIVERS = {"net": "linoverfit.networks.DeepLinear", "task": "linoverfit.tasks.Task", "{}": "linoverfit.tasks.Task",
             "data": "linoverfit.tasks.Dataset", "run": "linoverfit.result_types.PretrainResult"}
#: Bare names written as calls in messages, and where they live.
BARE = {"u_curve": "linoverfit.theory.u_curve", "SAM": "linoverfit.optimizers.SAM", "GD": "linoverfit.optimizers.GD",
        "Momentum": "linoverfit.optimizers.Momentum", "Adam": "linoverfit.optimizers.Adam"}
#: Public modules whose public functions (and public classes' methods) are entry points.
PUBLIC_MODULES = ("linoverfit", "linoverfit.tasks", "linoverfit.sensitivity", "linoverfit.springer",
                  "linoverfit.optimizers", "linoverfit.networks", "linoverfit.models", "linoverfit.checkpoints",
                  "linoverfit.results", "linoverfit.result_types", "linoverfit.sweeps", "linoverfit.parallel",
                  "linoverfit.theory", "linoverfit.theory.modes", "linoverfit.theory.perturbation",
                  "linoverfit.theory.curvature", "linoverfit.theory.flow", "linoverfit.theory.forgetting",
                  "linoverfit.theory.curves", "linoverfit.theory.turning", "linoverfit.theory.ucurve",
                  "linoverfit.theory.mirror")


def _text(node) -> str:
    """The constant text of a message expression; f-string fields and other expressions as ``{}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    if isinstance(node, ast.IfExp):
        return _text(node.body) + " | " + _text(node.orelse)
    return "{}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _scan():
    """``messages``: (where, module, enclosing function names, text) of every raise/warn; ``calls``:
    function qualname -> names it references (for who reaches a helper)."""
    messages, calls = [], {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("linoverfit.experiments"):
            continue  # figure scripts: their messages are for the figure code, not for users
        tree = ast.parse(path.read_text())

        def visit(node, stack):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack = stack + [node.name]
                if not isinstance(node, ast.ClassDef):
                    calls[f"{module}:{'.'.join(stack)}"] = {
                        n.id if isinstance(n, ast.Name) else n.attr
                        for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}
            msg = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                msg = node.exc.args[0]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn" and node.args:
                msg = node.args[0]
            elif isinstance(node, ast.Call):  # the fixes a memory-budget error lists (memory.require)
                fix = [k.value for k in node.keywords if k.arg in ("fix", "fixes")]
                if getattr(node.func, "attr", getattr(node.func, "id", None)) == "require" and len(node.args) >= 4:
                    fix.append(node.args[3])
                msg = fix[0] if fix else None
            if msg is not None:
                messages.append((f"{path.relative_to(ROOT)}:{node.lineno}", module, tuple(stack), _text(msg)))
            for child in ast.iter_child_nodes(node):
                visit(child, stack)

        visit(tree, [])
    return messages, calls


MESSAGES, CALLS = _scan()


def _resolve(path: str):
    """The object at a dotted ``path`` (``lo.`` = ``linoverfit.``), or None; a deprecated alias is None."""
    path = re.sub(r"^lo\.", "linoverfit.", path)
    if path in deprecation.TABLE:
        return None
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for j, p in enumerate(parts[i:]):
                if ".".join(parts[:i + j + 1]) in deprecation.TABLE:
                    return None
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _parameters(fn) -> set[str] | None:
    """Keyword names ``fn`` takes (a class: its ``__init__``); None when it takes ``**kwargs``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


_DOTTED = re.compile(r"\b(?:lo|linoverfit)(?:\.[A-Za-z_]\w*)+")
_CALL = re.compile(r"((?:\{\}|[A-Za-z_][\w]*)(?:\.[A-Za-z_]\w*)*)\(([^()]*)\)")
#: ``name=`` not preceded by a word, ``.``, ``-`` or a comparison (``XLA_FLAGS=--flag=N`` is no keyword)
_KEYWORD = re.compile(r"(?<![\w.=!<>-])([a-z_][a-z0-9_]*)=(?!=|\{\})")  # ``name={}`` shows a value


def _callee(name: str):
    """A callable written in a message: dotted ``lo.``/``linoverfit.`` names, ``receiver.method``
    (:data:`RECEIVERS`) or a bare name (:data:`BARE`); None when it is not the package's."""
    if name.startswith(("lo.", "linoverfit.")):
        return _resolve(name), True
    head, _, rest = name.partition(".")
    if head in RECEIVERS and rest:
        return _resolve(f"{RECEIVERS[head]}.{rest}"), True
    if name in BARE:
        return _resolve(BARE[name]), True
    return None, False


def _public_entry_points() -> dict[str, object]:
    """``module:qualname`` -> the public function or method users call."""
    out = {}
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for n in names:
            obj = getattr(mod, n, None)
            if inspect.isfunction(obj) and obj.__module__.startswith("linoverfit"):
                fn = inspect.unwrap(obj)
                out[f"{fn.__module__}:{fn.__qualname__}"] = obj
            elif inspect.isclass(obj) and obj.__module__.startswith("linoverfit"):
                for m, f in vars(obj).items():
                    if inspect.isfunction(f) and (not m.startswith("_") or m in ("__init__", "__post_init__")):
                        out[f"{obj.__module__}:{f.__qualname__}"] = f
    return out


ENTRY_POINTS = _public_entry_points()


def _raisers(module: str, stack: tuple[str, ...], depth: int = 3) -> set[str]:
    """Public entry points that raise a message written in ``module:stack``: the enclosing function
    itself when public, else the package functions that reference its name, followed up to ``depth``
    helper levels (by name: an over-approximation, so a shared helper counts for all its callers)."""
    here = f"{module}:{'.'.join(stack)}"
    found, frontier, seen = set(), {here}, {here}
    for _ in range(depth + 1):
        nxt = set()
        for q in frontier:
            if q in ENTRY_POINTS:
                found.add(q)
                continue
            name = q.rpartition(":")[2].rpartition(".")[2]
            for caller, refs in CALLS.items():
                if name in refs and caller not in seen:
                    seen.add(caller)
                    nxt.add(caller)
        frontier = nxt
    return found


def _call_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _CALL.finditer(text)]


def _problems(where: str, module: str, stack: tuple[str, ...], text: str) -> list[str]:
    problems = []
    named = []  # callables the message names (a bare keyword of one of them is fine)
    for m in _DOTTED.finditer(text):
        name = m.group(0)
        obj = _resolve(name)
        if obj is None:
            problems.append(f"{name} does not exist (or is deprecated)")
        else:
            named.append(obj)
    spans = _call_spans(text)
    for m in _CALL.finditer(text):
        callee, ours = _callee(m.group(1))
        if not ours:
            continue
        if callee is None:
            problems.append(f"{m.group(1)}() does not exist")
            continue
        named.append(callee)
        params = _parameters(callee)
        for kw in _KEYWORD.findall(m.group(2)):
            if params is not None and kw not in params:
                problems.append(f"{m.group(1)}() takes no {kw}=")
    for m in _KEYWORD.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue  # inside a written-out call: checked above
        kw = m.group(1)
        if any((_parameters(c) or set()) >= {kw} for c in named):
            continue  # the message names the callable it belongs to
        for entry in sorted(_raisers(module, stack)):
            params = _parameters(ENTRY_POINTS[entry])
            if params is not None and kw not in params:
                problems.append(f"{kw}= is suggested, but {entry.replace(':', '.')} (which raises it) takes no {kw}=")
    return [f"{where}: {p}: {text[:160]!r}" for p in problems]


def test_the_scan_finds_the_suggestions():
    """The reader works: it finds the messages with suggestions this test is about."""
    texts = [t for *_, t in MESSAGES]
    assert len(MESSAGES) > 200
    assert any(t.startswith("pass keep_weights=False") for t in texts)  # a memory budget's fixes
    assert any("scale='absolute'" in t for t in texts)
    assert any("lo.Layout(devices=" in t for t in texts)
    assert "linoverfit.finetuning:finetune" in ENTRY_POINTS and "linoverfit.networks:DeepLinear.init" in ENTRY_POINTS
    # the shared helper's callers are found: require_samples is reached from lo.pretrain and lo.finetune
    assert {"linoverfit.pretraining:pretrain", "linoverfit.finetuning:finetune"} <= _raisers(
        "linoverfit.objective", ("require_samples",))


def test_the_checks_catch_a_fix_that_does_not_exist():
    """The checks fail on the kinds of mistake they are for."""
    stack = ("require_samples",)
    assert _problems("x", "linoverfit.objective", stack, "or pre-train online (online=True with a batch_size)")
    assert _problems("x", "linoverfit.objective", stack, "use lo.tasks.shift(task)")
    assert _problems("x", "linoverfit.objective", stack, "use net.init(schema='aligned')")
    assert _problems("x", "linoverfit.theory.mirror", ("pretrain",), "use lo.theory.mode_trajectory")  # deprecated
    assert not _problems("x", "linoverfit.objective", stack, "pre-train online: lo.pretrain(..., online=True)")
    assert not _problems("x", "linoverfit.tasks", ("_additive_shift",), "pass scale='absolute'")


@pytest.mark.parametrize("where, module, stack, text", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_every_suggested_fix_exists(where, module, stack, text):
    problems = _problems(where, module, stack, text)
    assert not problems, "\n".join(problems)

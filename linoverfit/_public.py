"""What counts as linoverfit's public API: the rule the API reference (``docs/conf.py``) and the
docstring tests (``tests/test_docs.py``) share, so that what is documented is what is checked."""

from __future__ import annotations

import inspect
import pkgutil
from types import ModuleType

import linoverfit


def public_modules(exclude: tuple[str, ...] = ()) -> list[str]:
    """Every importable module of the package whose dotted name has no ``_``-prefixed part, sorted,
    minus those starting with a prefix in ``exclude``."""
    names = ["linoverfit"]
    for info in pkgutil.walk_packages(linoverfit.__path__, prefix="linoverfit."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name.startswith(exclude or ("\0",)):
            continue
        names.append(info.name)
    return sorted(names)


def module_members(mod: ModuleType) -> list[tuple[str, object]]:
    """``(name, object)`` of the callables ``mod`` exports: its ``__all__``, else the public functions
    and classes defined in it (not the ones it imports); submodules and non-callables are skipped."""
    if hasattr(mod, "__all__"):
        names = list(mod.__all__)
    else:
        names = [n for n, o in vars(mod).items()
                 if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
                 and getattr(o, "__module__", "") == mod.__name__]
    out = []
    for n in names:
        obj = getattr(mod, n, None)
        if obj is None or inspect.ismodule(obj) or not callable(obj):
            continue
        out.append((n, obj))
    return out

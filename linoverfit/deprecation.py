"""Old public names, kept for one release: each warns once and names its replacement.

The table is the one place a renamed or moved public name is recorded (the pattern of optax's
deprecation table). A module that lost a name lists it here under its own dotted path, and its
module-level ``__getattr__`` calls :func:`lookup`::

    def __getattr__(name):
        return deprecation.lookup(__name__, name)

Accessing ``linoverfit.old`` then returns the replacement object and emits one
:class:`DeprecationWarning` per name and process:
``linoverfit.old is deprecated and will be removed in 0.3.0; use linoverfit.new``.

Arguments that became keyword-only keep working positionally for one release through
:func:`keyword_only` (one warning per process for each such call form, naming the keywords to write).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
import warnings
from dataclasses import dataclass

__all__ = ["Deprecated", "TABLE", "REMOVAL", "deprecate", "lookup", "replacement", "warn_once", "keyword_only"]

#: The release in which every name of :data:`TABLE` disappears.
REMOVAL = "0.3.0"


@dataclass(frozen=True)
class Deprecated:
    """``old`` (dotted path of the name users wrote) now lives at ``new`` (dotted path, the
    last component an attribute of the module before it)."""

    old: str
    new: str
    removal: str = REMOVAL


#: Every deprecated public name, by its old dotted path.
TABLE: dict[str, Deprecated] = {}


def deprecate(old: str, new: str, removal: str = REMOVAL) -> None:
    """Record that ``old`` moved to ``new`` (both dotted paths)."""
    TABLE[old] = Deprecated(old, new, removal)


_warned: set[str] = set()
_lock = threading.Lock()


def replacement(path: str):
    """The object at dotted ``path`` (``package.module.attr`` or a module path)."""
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(path)


def warn_once(old: str, new: str, removal: str = REMOVAL, stacklevel: int = 3) -> None:
    """One :class:`DeprecationWarning` per process for a deprecated *usage* ``old`` (e.g. an
    argument), naming its replacement ``new`` and the removal release."""
    with _lock:
        first = old not in _warned
        _warned.add(old)
    if first:
        warnings.warn(f"{old} is deprecated and will be removed in {removal}; use {new}", DeprecationWarning,
                      stacklevel=stacklevel + 1)


def lookup(module: str, name: str):
    """Module-level ``__getattr__`` body: the replacement of ``module.name`` with a one-time
    :class:`DeprecationWarning`, or the usual :class:`AttributeError`."""
    entry = TABLE.get(f"{module}.{name}")
    if entry is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warn_once(entry.old, entry.new, entry.removal, stacklevel=3)
    return replacement(entry.new)


def keyword_only(public: str, positional: int, removal: str = REMOVAL):
    """Decorator for a function whose parameters after its first ``positional`` became keyword-only
    (``def f(a, b, *, c=None, d=0.0)``): until ``removal``, a call that passes them positionally, in
    their old order, still works and emits one :class:`DeprecationWarning` per process, e.g.
    ``passing input_cov, gamma positionally to linoverfit.theory.expected_perturbed_loss is deprecated
    and will be removed in 0.3.0; use keywords: expected_perturbed_loss(weights, teacher, input_cov=...,
    gamma=...)``. ``public`` is the name users call the function by. The signature shown by
    :func:`inspect.signature` (and the docs) is the new, keyword-only one."""

    def wrap(fn):
        params = list(inspect.signature(fn).parameters.values())
        first = [p.name for p in params[:positional]]
        later = [p.name for p in params[positional:] if p.kind is p.KEYWORD_ONLY]
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:positional]) and later, fn

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if len(args) > positional:
                extra = args[positional:]
                if len(extra) > len(later):
                    raise TypeError(f"{public}() takes {positional} positional arguments ({', '.join(first)}) and "
                                    f"the keywords {', '.join(later)}; got {len(args)} positional arguments")
                names = later[:len(extra)]
                twice = [n for n in names if n in kwargs]
                if twice:
                    raise TypeError(f"{public}() got multiple values for argument {twice[0]!r}")
                short = public.rpartition(".")[2]
                warn_once(f"passing {', '.join(names)} positionally to {public}",
                          f"keywords: {short}({', '.join(first)}, {', '.join(f'{n}=...' for n in names)})",
                          removal, stacklevel=2)
                kwargs.update(zip(names, extra))
                args = args[:positional]
            return fn(*args, **kwargs)

        return call

    return wrap

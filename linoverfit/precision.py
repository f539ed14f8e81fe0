"""The thread-local float64 switch, across the JAX versions linoverfit supports.

:func:`enable_x64` turns JAX's 64-bit mode on or off for the current thread only, through
``jax.enable_x64`` in recent JAX and ``jax.experimental.enable_x64`` in the older releases the
declared floor (``pyproject.toml``) admits. The theory computes in float64 inside it whatever the
session's default, and the sweeps enter the caller's setting in their worker threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

__all__ = ["enable_x64"]

try:
    _switch = jax.enable_x64  # JAX >= 0.7: a context manager (and config flag) at the top level
except AttributeError:  # pragma: no cover - exercised by .ci/floors.py on the floor versions
    from jax.experimental import enable_x64 as _switch


@contextlib.contextmanager
def enable_x64(on: bool = True) -> Iterator[None]:
    """Inside the block, in this thread only, ``jax_enable_x64 = on``: with ``on=True`` new float
    arrays default to float64 (shape and values as requested), with ``on=False`` to float32."""
    with _switch(bool(on)):
        yield

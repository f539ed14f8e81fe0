"""The thread-local float64 switch, across the JAX versions linoverfit supports.

``enable_x64(on)`` is a context manager that turns JAX's 64-bit mode on or off for the current
thread only: ``jax.enable_x64`` in recent JAX, ``jax.experimental.enable_x64`` in the older releases
the declared floor (``pyproject.toml``) admits. The theory computes in float64 inside it whatever
the session's default, and the sweeps enter the caller's setting in their worker threads.
"""

from __future__ import annotations

import jax

__all__ = ["enable_x64"]

try:
    enable_x64 = jax.enable_x64  # JAX >= 0.7: a context manager (and config flag) at the top level
except AttributeError:  # pragma: no cover - exercised by .ci/floors.py on the floor versions
    from jax.experimental import enable_x64

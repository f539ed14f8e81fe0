"""Test configuration: every closed-form and exactness check runs in float64."""

import contextlib

import jax
import jax.monitoring
import pytest

jax.config.update("jax_enable_x64", True)

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, *a, **k: _compiles.append(name) if name == _COMPILE_EVENT else None
)


@contextlib.contextmanager
def _counter():
    start = len(_compiles)
    box = {}
    try:
        yield box
    finally:
        box["n"] = len(_compiles) - start


@pytest.fixture
def count_compiles():
    """``with count_compiles() as c: ...`` then ``c["n"]`` = XLA backend compilations inside the block."""
    return _counter

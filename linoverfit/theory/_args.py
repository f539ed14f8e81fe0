"""Argument checks shared by the theory modules: one wording of each error (depth, non-negative
arrays, weight decay, a learning rate, layer widths, the perturbation scale), whichever closed form
raises it."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np

from .. import validation as _v
from ..networks import check_linear


def _depth(depth, name: str = "depth") -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {depth!r}")
    if depth < 1:
        raise ValueError(f"{name} must be >= 1, got {depth}")
    return int(depth)


def _nonneg(x, name: str) -> np.ndarray:
    """``x`` as a float64 array of finite values >= 0, or a ValueError naming ``name``."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real numbers, got {x!r}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {arr[arr < 0].ravel()[:3]}")
    return arr


def _weight_decay(weight_decay) -> float:
    arr = _nonneg(weight_decay, "weight_decay")
    if arr.ndim != 0:
        raise ValueError(f"weight_decay must be a scalar, got shape {arr.shape}")
    return float(arr)


def _lr(lr):
    if lr is None:
        return None
    arr = np.asarray(lr)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"lr must be None (gradient flow) or a real scalar > 0, got {lr!r}")
    val = float(arr)
    if not (np.isfinite(val) and val > 0):
        raise ValueError(f"lr must be > 0 (or None for gradient flow), got {lr!r}")
    return val


def _widths(widths, name: str = "widths") -> tuple[int, ...]:
    """Layer widths ``(d_in, h_1, ..., d_out)`` from a tuple or a linear network (a
    :class:`~linoverfit.DeepLinear`, an identity :class:`~linoverfit.MLP`); a nonlinear network is
    refused by name (the closed forms are of deep linear networks)."""
    if hasattr(widths, "widths") and hasattr(widths, "apply"):
        check_linear(widths, name)
    return _v.layer_widths(getattr(widths, "widths", widths), name)


def _gamma(gamma):
    """``gamma`` as an array of at least one axis (any shape, values >= 0; a scalar is one noise
    scale, shape ``(1,)``, the simulation's convention); checked unless traced."""
    if gamma is None:
        raise TypeError("gamma is required (the perturbation scale, a scalar or an array)")
    if not _v.is_traced(gamma):
        arr = np.asarray(gamma)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise TypeError(f"gamma must be real numbers, got {gamma!r}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"gamma must be finite and >= 0, got {arr.ravel()[:3]}")
    return jnp.atleast_1d(jnp.asarray(gamma))

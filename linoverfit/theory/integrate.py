r"""A jitted, vmappable Dormand–Prince 8(5,3) integrator (DOP853) for the theory's flows.

The same method, coefficients and step control as ``scipy.integrate.solve_ivp(method="DOP853")``
(Hairer, Nørsett & Wanner, *Solving ODEs I*, II.10): a 12-stage 8th-order step with FSAL, error
estimated by the blend of the embedded 5th- and 3rd-order solutions, step factor
:math:`0.9\,\text{err}^{-1/8}` clipped to :math:`[0.2, 10]`. It differs from scipy in two ways that
make the theory cheap: it is one ``jax.jit``-compiled ``lax.while_loop`` (no Python per stage),
and it integrates one system; ``jax.vmap`` over it gives every system of a batch (checkpoints x
learning rates) its own step size and its own output times. Steps land exactly on the output
times (no interpolation), so the outputs carry the integrator's full accuracy.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate._ivp import dop853_coefficients as _c

__all__ = ["dop853"]

_S = _c.N_STAGES  # 12
_A = np.asarray(_c.A[:_S, :_S])
_B = np.asarray(_c.B)
_C = np.asarray(_c.C[:_S])
_E3 = np.asarray(_c.E3)
_E5 = np.asarray(_c.E5)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR, _EXPONENT = 0.9, 0.2, 10.0, -1.0 / 8.0


def _rms(x):
    return jnp.sqrt(jnp.mean(x * x))


def _initial_step(fun, y0, f0, args, rtol, atol):
    """scipy's ``select_initial_step`` (Hairer I, II.4) for order 7 error estimates, from t = 0."""
    scale = atol + jnp.abs(y0) * rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.where(d1 > 0, d1, 1.0))
    f1 = fun(h0, y0 + h0 * f0, args)
    d2 = _rms((f1 - f0) / scale) / h0
    big = jnp.maximum(d1, d2)
    h1 = jnp.where(big <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.where(big > 0, big, 1.0)) ** (1.0 / 8.0))
    return jnp.minimum(100 * h0, h1)


@partial(jax.jit, static_argnames=("fun", "max_steps"))
def dop853(fun, y0, t_out, args, rtol, atol, max_steps: int = 100_000):
    r"""Integrate :math:`\dot y = f(t, y, \text{args})` from :math:`t = 0` and return :math:`y` at ``t_out``.

    Args:
      fun: ``f(t, y, args) -> dy`` (pure JAX, static: pass the same function object to reuse the
        compiled program).
      y0: initial state, shape ``(n,)`` (one system; ``jax.vmap`` for a batch).
      t_out: output times, shape ``(T,)``, non-decreasing, >= 0.
      args: a pytree passed to ``fun`` (per-system parameters are vmapped with ``y0``).
      rtol, atol: tolerances of scipy's error norm, RMS over the state of
        :math:`\text{err}/(\text{atol} + \text{rtol}\max(|y|, |y_{new}|))` below 1.
      max_steps: cap on attempted steps.

    Returns ``(y_out (T, n), n_steps, ok)``: ``ok`` is False if the cap was hit (then the
    outputs not reached are NaN).
    """
    A, B, C, E3, E5 = (jnp.asarray(x, y0.dtype) for x in (_A, _B, _C, _E3, _E5))
    n = y0.size
    T = t_out.shape[0]
    f0 = fun(jnp.zeros((), y0.dtype), y0, args)
    k0 = jnp.sum(t_out <= 0)  # outputs at the start itself
    out = jnp.where((jnp.arange(T) < k0)[:, None], y0[None, :], jnp.nan)
    h0 = _initial_step(fun, y0, f0, args, rtol, atol)

    def cond(state):
        _, _, _, _, k, _, steps = state
        return (k < T) & (steps < max_steps)

    def body(state):
        t, y, f, h, k, out, steps = state
        target = t_out[jnp.minimum(k, T - 1)]
        gap = target - t
        hit = h >= gap
        h_eff = jnp.where(hit, gap, h)
        K = [f]
        for s in range(1, _S):  # unrolled: sparse rows of A, no copies of the stage array
            dy = sum(K[j] * A[s, j] for j in range(s) if _A[s, j] != 0) * h_eff
            K.append(fun(t + C[s] * h_eff, y + dy, args))
        y_new = y + h_eff * sum(K[j] * B[j] for j in range(_S) if _B[j] != 0)
        f_new = fun(t + h_eff, y_new, args)
        K.append(f_new)
        scale = atol + jnp.maximum(jnp.abs(y), jnp.abs(y_new)) * rtol
        err5 = sum(K[j] * E5[j] for j in range(_S + 1) if _E5[j] != 0) / scale
        err3 = sum(K[j] * E3[j] for j in range(_S + 1) if _E3[j] != 0) / scale
        e5, e3 = jnp.sum(err5 * err5), jnp.sum(err3 * err3)
        denom = e5 + 0.01 * e3
        err = jnp.where(denom > 0, jnp.abs(h_eff) * e5 / jnp.sqrt(jnp.where(denom > 0, denom, 1.0) * n), 0.0)
        ok = jnp.isfinite(err) & (err < 1.0)
        grow = jnp.where(err == 0, _MAX_FACTOR, jnp.minimum(_MAX_FACTOR, _SAFETY * err**_EXPONENT))
        shrink = jnp.maximum(_MIN_FACTOR, _SAFETY * jnp.where(jnp.isfinite(err), err, 1e30) ** _EXPONENT)
        land = ok & hit
        t = jnp.where(ok, jnp.where(hit, target, t + h_eff), t)
        y = jnp.where(ok, y_new, y)
        f = jnp.where(ok, f_new, f)
        out = jnp.where(land & (jnp.arange(T) == k)[:, None], y_new[None, :], out)
        k = k + land.astype(k.dtype)
        # after a step clipped to an output time keep the unclipped step if it was not the limit
        h_next = jnp.where(ok, jnp.where(hit, jnp.maximum(h, h_eff * grow), h_eff * grow), h_eff * shrink)
        return t, y, f, h_next, k, out, steps + 1

    state = (jnp.zeros((), y0.dtype), y0, f0, h0, k0, out, jnp.zeros((), jnp.int32))
    _, _, _, _, k, out, steps = jax.lax.while_loop(cond, body, state)
    return out, steps, k >= T

r"""Balanced starts aligned with the teacher, and the exact per-mode GD maps they allow.

A start is balanced and aligned when :math:`W_{l+1}^\top W_{l+1} = W_lW_l^\top` and
:math:`P_0 = U\operatorname{diag}(s_0)V^\top` with the teacher's singular vectors (:func:`_aligned`, to
:math:`\sqrt\epsilon` of the weights' dtype). Gradient descent then keeps every layer on the modes,
:math:`W_l = W_l(0) + Q_l\operatorname{diag}(a - a_0)Q_{l-1}^\top`, and each mode follows a scalar map:
pre-training by the map of :func:`~linoverfit.theory.modes.mode_trajectory` (:func:`_modes_layers`),
penalised fine-tuning by :math:`a \leftarrow a + \eta(\kappa a^{L-1}(\sigma - a^L) - \rho(a))`
(:func:`_mode_map`). The ``"modes"`` method of :mod:`~linoverfit.theory.mirror` (``docs/theory.md``
section 9).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .modes import input_variance, mode_trajectory
from ..precision import enable_x64


def _aligned(Ws, A, L, dtype):
    """Per seed (``Ws``: layers ``(S, n_l, n_{l-1})``): the hidden vectors ``Q`` (list of ``L + 1`` arrays
    ``(S, n_l, r)``) and the mode values ``s0`` ``(S, r)`` when every start is balanced and aligned with
    the teacher ``A = U diag(sigma) V^T`` (to sqrt(eps) relative, eps of the weights' ``dtype``), else ``None``."""
    U, _, Vt = np.linalg.svd(A, full_matrices=False)
    tol = np.sqrt(np.finfo(dtype).eps)
    P = Ws[0]
    for w in Ws[1:]:
        P = w @ P
    scale = np.linalg.norm(P, axis=(-2, -1)) + 1e-300
    D = U.T @ P @ Vt.T  # (S, r, r)
    d = np.diagonal(D, axis1=-2, axis2=-1)
    if np.any(np.linalg.norm(P - (U * d[:, None, :]) @ Vt, axis=(-2, -1)) > tol * scale) or np.any(d < 0):
        return None
    for lo, hi in zip(Ws[:-1], Ws[1:]):
        gap = np.swapaxes(hi, -1, -2) @ hi - lo @ np.swapaxes(lo, -1, -2)
        if np.any(np.linalg.norm(gap, axis=(-2, -1)) > tol * (np.linalg.norm(lo, axis=(-2, -1)) ** 2 + 1e-300)):
            return None
    a0 = d ** (1.0 / L)
    Q = [np.broadcast_to(Vt.T, (P.shape[0],) + Vt.T.shape)]
    for w in Ws[:-1]:
        with np.errstate(divide="ignore", invalid="ignore"):
            Q.append(np.where(a0[:, None, :] > 0, (w @ Q[-1]) / a0[:, None, :], 0.0))
    Q.append(np.broadcast_to(U, (P.shape[0],) + U.shape))
    return Q, d


def _modes_layers(Ws, task, Q, s0, lr, wd, t):
    """Layers ``(S, C, n_l, n_{l-1})`` of the exact per-mode GD map (``mode_trajectory(lr=)``)."""
    L = len(Ws)
    sigma = np.linalg.svd(np.asarray(task.teacher, np.float64), compute_uv=False)
    kappa = input_variance(task)
    s = np.stack([mode_trajectory(sigma, t, s0[b], L, wd, lr=lr, input_var=kappa) for b in range(s0.shape[0])])
    da = s ** (1.0 / L) - (s0 ** (1.0 / L))[:, None, :]  # (S, C, r)
    return tuple(w[:, None] + (Q[l + 1][:, None] * da[..., None, :]) @ np.swapaxes(Q[l], -1, -2)[:, None]
                 for l, w in enumerate(Ws))


@partial(jax.jit, static_argnames=("L", "on_map"))
def _mode_map_core(a0, sigma, kappa, etas, l2, segs, *, L, on_map):
    r"""The per-mode GD map of penalised fine-tuning from balanced aligned starts, every mode value
    :math:`a` ``(B, r)`` at every rate ``etas`` ``(R,)``:
    :math:`a \leftarrow a + \eta\big(\kappa a^{L-1}(\sigma - a^L) - \rho(a)\big)` with
    :math:`\rho = \lambda(a - a_0)` (layer pull) or :math:`\rho = 2\lambda a^{L-1}(a^L - a_0^L)` (map
    penalty). Returns :math:`a` ``(B, R, K, r)`` after each segment of ``segs`` ``(K,)`` steps."""
    def one(a_init, eta):
        s_init = a_init ** L

        def step(_, a):
            aL1 = a ** (L - 1)
            rho = 2 * l2 * aL1 * (a ** L - s_init) if on_map else l2 * (a - a_init)
            return a + eta * (kappa * aL1 * (sigma - a ** L) - rho)

        def segment(a, n):
            a = jax.lax.fori_loop(jnp.zeros((), n.dtype), n, step, a)
            return a, a

        return jax.lax.scan(segment, a_init, segs)[1]

    return jax.vmap(lambda a: jax.vmap(lambda eta: one(a, eta))(etas))(a0)


def _mode_map(Ws, task, lrs, l2, on_map, record_steps, dtype):
    r"""Fine-tuning of balanced aligned starts by the per-mode map (:func:`_mode_map_core`): maps
    ``(B, R, K, m, n)`` :math:`P = P_0 + U\operatorname{diag}(a^L - a_0^L)V^\top` and penalty values
    ``(B, R, K)`` (:math:`\tfrac{\lambda}{2}L\sum_i(a_i - a_{0,i})^2` or :math:`\lambda\sum_i(a_i^L - a_{0,i}^L)^2`).
    Raises a ValueError unless every start is balanced and aligned with ``task``'s singular vectors."""
    L = len(Ws)
    A = np.asarray(task.teacher, np.float64)
    found = _aligned(Ws, A, L, dtype)
    if found is None:
        raise ValueError("method='modes' needs balanced starts whose end-to-end maps share the fine-tuning "
                         "teacher's singular vectors (Springer's setting: lo.springer.setting; a repeated singular "
                         "value of the teacher has no unique vectors and may fail this check); use method='gd' "
                         "(exact GD on the run's own layers, any start)")
    kappa = input_variance(task)  # raises unless Sigma shares the teacher's right singular vectors
    U, sigma, Vt = np.linalg.svd(A, full_matrices=False)
    s0 = found[1]
    with enable_x64(True):
        segs = jnp.asarray(np.diff(record_steps, prepend=0), jnp.int64)
        a = np.asarray(_mode_map_core(jnp.asarray(s0 ** (1.0 / L)), jnp.asarray(sigma), jnp.asarray(kappa),
                                      jnp.asarray(lrs, jnp.float64), jnp.asarray(l2, jnp.float64), segs,
                                      L=L, on_map=on_map))
    a0 = (s0 ** (1.0 / L))[:, None, None, :]
    P0 = Ws[0]
    for w in Ws[1:]:
        P0 = w @ P0
    P = P0[:, None, None] + (U * (a ** L - a0 ** L)[..., None, :]) @ Vt
    pen = l2 * np.sum((a ** L - a0 ** L) ** 2, -1) if on_map else 0.5 * l2 * L * np.sum((a - a0) ** 2, -1)
    return P, pen

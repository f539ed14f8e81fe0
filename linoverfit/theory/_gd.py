r"""Gradient descent (not the flow) on the layers: exactly, and by its modified equation.

* :func:`_iterate_gd`: exact GD, ``steps`` steps at each learning rate, on the balanced factors of a
  map or on a start's own layers, every (start, rate) one run of :func:`linoverfit.sweeps.sweep`
  (the gradient of :mod:`linoverfit.objective`, as in ``lo.finetune``).
* :func:`_integrate_gd`: the modified equation of GD,
  :math:`\dot W = -g - \tfrac\eta2 Hg - \eta^2(\tfrac13 HHg + \tfrac1{12}\nabla^3L[g,g])`, integrated with
  DOP853 (order ``gd_order``; depth 1 exactly, :math:`P_k = A + (P_0 - A)(I - \eta\Sigma)^k`).
* :func:`_gd_layers`: exact GD with weight decay on every start's layers, the layers at each
  checkpoint (``lo.theory.pretrain(method="gd")``).
* :func:`_penalised_gd`: exact GD on the fine-tuning loss plus a pull toward the start (the layer
  pull, or Springer et al.'s penalty on the end-to-end map), as ``lo.finetune(l2=, l2_on=)``
  (``lo.theory.finetune(method="gd")``).
* ``gd_order="auto"`` chooses between them (:data:`AUTO_EXACT_ABOVE`, :data:`AUTO_EXACT_STEPS`;
  ``docs/theory.md`` section 4.6).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .. import loops as _loops
from .. import objective as _obj
from .. import sweeps as _sweep
from ..finetuning import map_penalty
from ..tasks import Task
from ._layer_flow import _balanced_factors
from ..precision import enable_x64


GD_ORDERS = (0, 1, 2)


#: ``gd_order="auto"`` iterates GD exactly on the balanced factors when eta * sharpness exceeds this (the
#: modified-equation series stops converging near 1; at 0.25 its order-2 error is <= 1e-3, docs/theory.md 4.6)
AUTO_EXACT_ABOVE = 0.25


#: ... or when there are at most this many steps (exact GD then costs fewer gradient evaluations than
#: the modified-equation solve, ~10 gradients per right-hand side, hundreds of right-hand sides)
AUTO_EXACT_STEPS = 10_000


def _gd_order(order, allow=("auto", "exact")):
    if isinstance(order, str) and order in allow:
        return order
    if isinstance(order, bool) or order not in GD_ORDERS:
        raise ValueError(f"gd_order must be one of {GD_ORDERS + tuple(allow)} (0: gradient flow, 1-2: modified "
                         f"equation of GD, 'exact': GD on the balanced factors, 'auto'), got {order!r}")
    return int(order)


@dataclasses.dataclass(frozen=True)
class _GDRun:
    r"""One exact-GD run, ``run = (b, eta)``: ``steps`` steps of
    :math:`W_l \leftarrow W_l - \eta\,\partial L/\partial W_l` from start ``b`` of ``shared = (Ws, task,
    steps)``, returning the end-to-end map. The same gradient (:func:`linoverfit.objective.value_and_grad`:
    one pull-back of :math:`(P - A)\Sigma` through the product, :math:`3(L-1)` matmuls a step) and step
    loop as ``lo.finetune``, without its divergence bookkeeping and loss records."""

    identity: bool

    def __call__(self, run, shared):
        b, eta = run
        Ws, task, steps = shared

        def step(i, W):
            _, g = _obj.value_and_grad(task, W, None, i, None, self.identity)
            return tuple(w - eta * gw for w, gw in zip(W, g))

        W = _loops.fori(jnp.zeros((), steps.dtype), steps, step, tuple(w[b] for w in Ws))
        P = W[0]
        for w in W[1:]:
            P = w @ P
        return P


def _iterate_gd(P0, A, cov, L, etas, steps, weights=None):
    """Exact GD (``steps`` steps at each of ``etas`` ``(R,)``) on the balanced factors of ``P0``
    ``(B, m, n)``: for an exactly balanced start this is GD on the network itself (the extra hidden
    units stay at zero, docs section 4.6); or on ``weights`` (the start's own layers,
    ``(B, n_l, n_{l-1})`` each) when given. Every run ``b * R + r`` (start ``b``, rate ``etas[r]``)
    goes through :func:`linoverfit.sweeps.sweep` with ``lo.finetune``'s layout. Returns the maps
    ``(B, R, m, n)`` in float64."""
    W0 = _balanced_factors(P0, L) if weights is None else list(weights)
    etas = np.atleast_1d(np.asarray(etas, np.float64))
    B, R = P0.shape[0], etas.size
    identity = cov is None
    with enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        task = _obj.prepared(Task.tree_unflatten(None, (f64(A), f64(np.eye(A.shape[1]) if identity else cov), f64(0.0))))
        runs = (jnp.repeat(jnp.arange(B, dtype=jnp.int32), R), jnp.tile(f64(etas), B))
        shared = (tuple(f64(w) for w in W0), task, jnp.asarray(int(steps), jnp.int64))
        out = _sweep.sweep(_GDRun(identity=identity), runs, shared, layout=_sweep.Layout(progress=False), tick=False)
        return np.asarray(out).reshape((B, R) + A.shape)


def _layer_loss(Ws, A, cov):
    P = Ws[0]
    for w in Ws[1:]:
        P = w @ P
    D = P - A
    return 0.5 * jnp.sum(D * (D @ cov))


@partial(jax.jit, static_argnames=("shapes", "order"))
def _modified_field(y, A, cov, eta, shapes, order):
    """Modified vector field of GD on the layers, f = -g - eta/2 Hg - eta^2 (HHg/3 + T(g,g)/12), batched.

    ``y`` ``(B, n)`` flat layers; Hessian-vector products by forward-over-reverse differentiation."""
    cuts = np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1].tolist()

    def unflat(x):
        return tuple(p.reshape(sh) for p, sh in zip(jnp.split(x, cuts), shapes))

    def one(x):
        grad = jax.grad(lambda z: _layer_loss(unflat(z), A, cov))
        g = grad(x)
        hvp = lambda v: jax.jvp(grad, (x,), (v,))[1]  # noqa: E731
        Hg = hvp(g)
        F = -g - 0.5 * eta * Hg
        if order >= 2:
            HHg = hvp(Hg)
            Tgg = jax.jvp(lambda z: jax.jvp(grad, (z,), (g,))[1], (x,), (g,))[1]  # D^3 L [g, g], g held fixed
            F = F - eta**2 * (HHg / 3.0 + Tgg / 12.0)
        return F

    return jax.vmap(one)(y)


def _integrate_gd(P0, A, cov, L, times, rtol, atol, eta, order, weights=None):
    """Modified-equation layer flow of GD at learning rate ``eta`` from the balanced factors of ``P0``;
    ``(B, len(times), m, n)`` at the sorted unique ``times``."""
    B = P0.shape[0]
    if times[-1] == 0:
        return np.repeat(P0[:, None], times.size, axis=1)
    if L == 1:  # linear regression: GD is exactly P_k = A + (P_0 - A)(I - eta Sigma)^k
        w, Q = np.linalg.eigh(np.eye(A.shape[1]) if cov is None else cov)
        k = times / eta  # fractional k: the continuous interpolation of the geometric sequence
        with np.errstate(invalid="ignore"):
            M = np.einsum("ij,tj,kj->tik", Q, np.power((1.0 - eta * w)[None, :] + 0j, k[:, None]).real, Q)
        return A + np.einsum("bij,tjk->btik", P0 - A, M)
    W0 = _balanced_factors(P0, L) if weights is None else list(weights)
    shapes = tuple(tuple(w.shape[1:]) for w in W0)
    y0 = np.concatenate([w.reshape(B, -1) for w in W0], axis=1)
    cov = np.eye(A.shape[1]) if cov is None else cov
    with enable_x64(True):
        Aj, cj = jnp.asarray(A, jnp.float64), jnp.asarray(cov, jnp.float64)

        def rhs(_, y):
            return np.asarray(_modified_field(jnp.asarray(y.reshape(B, -1)), Aj, cj, eta, shapes, order)).ravel()

        sol = solve_ivp(rhs, (0.0, float(times[-1])), y0.ravel(), method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - smooth field; failure means a bad tolerance
        raise RuntimeError(f"modified GD flow failed: {sol.message}")
    cuts = np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1]
    out = np.empty((B, times.size) + A.shape)
    for k in range(times.size):
        parts = np.split(sol.y[:, k].reshape(B, -1), cuts, axis=1)
        P = parts[0].reshape((B,) + shapes[0])
        for part, sh in zip(parts[1:], shapes[1:]):
            P = part.reshape((B,) + sh) @ P
        out[:, k] = P
    out[:, times == 0] = P0[:, None]
    return out


@partial(jax.jit, static_argnames=("identity",))
def _gd_core(W0, task, eta, wd, segs, *, identity):
    """Exact GD with weight decay, ``W <- W - eta (dL/dW + wd W)``, from every start ``W0`` ``(S, ...)``;
    the layers after each segment of ``segs`` steps, ``(S, C, ...)``."""
    task = _obj.prepared(task)

    def one(W):
        def step(i, W):
            _, g = _obj.value_and_grad(task, W, None, i, None, identity)
            return tuple(w - eta * (gw + wd * w) for w, gw in zip(W, g))

        def segment(W, n):
            W = jax.lax.fori_loop(jnp.zeros((), n.dtype), n, step, W)
            return W, W

        return jax.lax.scan(segment, W, segs)[1]

    return jax.vmap(one)(W0)


def _gd_layers(Ws, task, lr, wd, steps):
    with enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        t64 = jax.tree.map(f64, task)
        identity = bool(np.array_equal(np.asarray(task.input_cov), np.eye(task.d_in)))
        segs = jnp.asarray(np.diff(steps, prepend=0), jnp.int64)
        out = _gd_core(tuple(f64(w) for w in Ws), t64, f64(lr), f64(wd), segs, identity=identity)
        return tuple(np.asarray(w) for w in out)


@partial(jax.jit, static_argnames=("identity", "on_map"))
def _penalised_gd_core(W0, task, etas, l2, segs, *, identity, on_map):
    r"""Exact GD on :math:`L_{ft} + R_\lambda` from every start ``W0`` ``(B, ...)`` at every rate ``etas``
    ``(R,)``: :math:`W \leftarrow W - \eta(\nabla L_{ft} + \nabla R_\lambda)` with the simulation's
    gradient (:func:`linoverfit.objective.value_and_grad`) and penalty (``lo.finetune``'s
    :class:`~linoverfit.finetuning.FinetuneRun`: the layer pull, or :func:`~linoverfit.finetuning.map_penalty`
    with ``on_map``). Returns the maps ``(B, R, K, m, n)`` and :math:`R_\lambda` ``(B, R, K)`` after each
    segment of ``segs`` ``(K,)`` steps."""
    task = _obj.prepared(task)

    def one(W_init, eta):
        P_init = W_init[0]
        for w in W_init[1:]:
            P_init = w @ P_init

        def penalty(W):
            if on_map:
                return map_penalty(W, P_init, l2)
            diff = tuple(w - w0 for w, w0 in zip(W, W_init))
            return 0.5 * l2 * sum(jnp.sum(d * d) for d in diff), tuple(l2 * d for d in diff)

        def step(i, W):
            _, g = _obj.value_and_grad(task, W, None, i, None, identity)
            _, gp = penalty(W)
            return tuple(w - eta * (gw + p) for w, gw, p in zip(W, g, gp))

        def segment(W, n):
            W = jax.lax.fori_loop(jnp.zeros((), n.dtype), n, step, W)
            P = W[0]
            for w in W[1:]:
                P = w @ P
            return W, (P, penalty(W)[0])

        return jax.lax.scan(segment, W_init, segs)[1]

    return jax.vmap(lambda W: jax.vmap(lambda eta: one(W, eta))(etas))(W0)


def _penalised_gd(Ws, task, lrs, l2, on_map, record_steps):
    """:func:`_penalised_gd_core` in float64 on the layers ``Ws`` ``(B, n_l, n_{l-1})``: maps ``(B, R, K, m, n)``
    and penalty values ``(B, R, K)`` as numpy."""
    with enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        identity = bool(np.array_equal(np.asarray(task.input_cov), np.eye(task.d_in)))
        segs = jnp.asarray(np.diff(record_steps, prepend=0), jnp.int64)
        P, pen = _penalised_gd_core(tuple(f64(w) for w in Ws), jax.tree.map(f64, task), f64(lrs), f64(l2), segs,
                                    identity=identity, on_map=on_map)
        return np.asarray(P), np.asarray(pen)

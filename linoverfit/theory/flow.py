r"""Function-space gradient flow of balanced deep linear networks, and fine-tuning predicted with it.

If the layers are balanced, :math:`W_{l+1}^\top W_{l+1} = W_l W_l^\top` (preserved by gradient flow),
the end-to-end map :math:`P = W_L\cdots W_1` follows a closed ODE (Arora, Cohen & Hazan 2018;
``docs/theory.md``, section 4):

.. math:: \dot P = -\sum_{j=1}^{L} (PP^\top)^{\frac{L-j}{L}}\,\nabla L(P)\,(P^\top P)^{\frac{j-1}{L}},
          \qquad \nabla L(P) = (P - A)\Sigma.

With the full SVD :math:`P = U\operatorname{diag}(s)V^\top` (zeros padded) this is
:math:`\dot P = -U\big[(U^\top \nabla L\, V)\odot K\big]V^\top`,
:math:`K_{ab} = \sum_j s_a^{2(L-j)/L} s_b^{2(j-1)/L}` (with :math:`0^0 = 1`), e.g. :math:`K_{ab} = s_a + s_b`
at depth 2. Integrating it from each checkpoint's :math:`P` predicts fine-tuning without parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dataclasses
import functools
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .. import loops as _loops
from .. import objective as _obj
from .. import sweeps as _sweep
from .. import validation as _v
from ..results import Result, result, static
from ..tasks import Task
from .integrate import dop853
from .modes import UnderivedWarning, _depth, _nonneg

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..result_types import PretrainResult
    from ..tasks import Dataset


__all__ = [
    "end_to_end_velocity",
    "end_to_end_flow",
    "predict_finetune",
    "first_order_forgetting",
    "FinetunePrediction",
]


def _task(task, name: str):
    from ..tasks import Task

    if not isinstance(task, Task):
        raise TypeError(f"{name} must be a linoverfit Task (population loss), got {type(task).__name__}")
    A = np.asarray(task.teacher, np.float64)
    cov = np.asarray(task.input_cov, np.float64)
    cov = None if np.array_equal(cov, np.eye(cov.shape[0])) else 0.5 * (cov + cov.T)
    return A, cov


def _maps(P, A, name: str) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim < 2 or P.shape[-2:] != A.shape:
        raise ValueError(f"{name} must have shape (..., {A.shape[0]}, {A.shape[1]}) to match the task, got {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{name} contains NaN or inf")
    return P


def _velocity(P, A, cov, L):
    """dP/dt for a batch ``P`` ``(B, m, n)`` (numpy, float64)."""
    G = P - A
    if cov is not None:
        G = G @ cov
    if L == 1:
        return -G
    m, n = P.shape[-2:]
    U, s, Vt = np.linalg.svd(P, full_matrices=True)
    k = s.shape[-1]
    sa = np.zeros(P.shape[:-2] + (m,))
    sb = np.zeros(P.shape[:-2] + (n,))
    sa[..., :k], sb[..., :k] = s, s
    K = np.zeros(P.shape)
    for j in range(1, L + 1):
        # (PP^T)^((L-j)/L) and (P^TP)^((j-1)/L) in the SVD basis; numpy gives 0**0 = 1
        K += np.power(sa, 2.0 * (L - j) / L)[..., :, None] * np.power(sb, 2.0 * (j - 1) / L)[..., None, :]
    Gt = np.swapaxes(U, -1, -2) @ G @ np.swapaxes(Vt, -1, -2)
    return 0.0 - U @ (Gt * K) @ Vt  # 0.0 - x: no negative zeros in the output


def end_to_end_velocity(P: ArrayLike, task: Task, depth: int) -> np.ndarray:
    r"""Right-hand side of the balanced end-to-end flow, :math:`\dot P = -\sum_{j=1}^{L}(PP^\top)^{(L-j)/L}\nabla L(P)(P^\top P)^{(j-1)/L}`.

    Args:
      P: end-to-end maps ``(..., d_out, d_in)``.
      task: the :class:`~linoverfit.Task` whose population loss drives the flow,
        :math:`\nabla L(P) = (P - A)\Sigma`.
      depth: :math:`L \ge 1` (depth 1 is plain gradient flow, :math:`\dot P = -\nabla L`).

    Returns :math:`\dot P`, same shape as ``P`` (numpy float64). Fractional powers via the SVD of ``P``.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> task = lo.Task(teacher=np.eye(2))
      >>> V = lo.theory.end_to_end_velocity(0.5 * np.eye(2), task, depth=2)   # -(s + s)(s - 1) = 0.5
      >>> print(V.round(12))
      [[0.5 0. ]
       [0.  0.5]]
    """
    L = _depth(depth)
    A, cov = _task(task, "task")
    P = _maps(P, A, "P")
    lead = P.shape[:-2]
    return _velocity(P.reshape((-1,) + A.shape), A, cov, L).reshape(lead + A.shape)


METHODS = ("auto", "layers", "function", "closed")


def _balanced_factors(P0, L):
    """A balanced factorisation of ``P0`` ``(B, m, n)`` through width k = min(m, n): W_1 = diag(a) V^T,
    W_l = diag(a), W_L = U diag(a), a = s^(1/L) (so W_{l+1}^T W_{l+1} = W_l W_l^T = diag(s^(2/L)))."""
    if L == 1:
        return [P0]
    U, s, Vt = np.linalg.svd(P0, full_matrices=False)
    a = s ** (1.0 / L)
    eye = np.eye(a.shape[-1])
    return [a[..., :, None] * Vt] + [a[..., :, None] * eye for _ in range(L - 2)] + [U * a[..., None, :]]


def _integrate(P0, A, cov, L, times, rtol, atol, method="layers", weights=None):
    """``P0`` ``(B, m, n)``; returns ``(B, len(times), m, n)`` at the sorted unique ``times``.

    ``method="layers"`` integrates the layer flow from ``weights`` (a list of ``(B, n_l, n_{l-1})``
    arrays, the start's own layers) or, when ``weights`` is None, from the balanced factorisation
    of ``P0``; ``method="function"`` the function-space ODE (balanced starts only)."""
    shape = P0.shape
    if times[-1] == 0:
        return np.repeat(P0[:, None], times.size, axis=1)
    if method == "auto":
        method = "closed" if (L == 2 and cov is None and weights is None) else "layers"
    if method == "closed":
        if L != 2 or cov is not None:
            raise ValueError("method='closed' needs depth 2 and a fine-tuning task with identity input covariance")
        out = _riccati_depth2(P0, A, times, weights)
        out[:, times == 0] = P0[:, None]
        return out
    if method == "layers":
        W0 = _balanced_factors(P0, L) if weights is None else list(weights)
        out = _integrate_layers(W0, A, cov, times, rtol, atol)
        if weights is None:
            out[:, times == 0] = P0[:, None]  # the start itself, not its round-off through the factors
        return out
    y0 = P0.ravel()

    def rhs(_, y):
        return _velocity(y.reshape(shape), A, cov, L).ravel()

    sol = solve_ivp(rhs, (0.0, float(times[-1])), y0, method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - the flow is smooth; failure means a bad tolerance
        raise RuntimeError(f"end-to-end flow failed: {sol.message}")
    out = np.moveaxis(sol.y.reshape(shape + (times.size,)), -1, 1)
    out[:, times == 0] = P0[:, None]
    return out


#: ``method="closed"`` from a run's own layers warns above this tau * ||C - lambda I|| / 2 (docs/theory.md 4.8)
CLOSED_IMBALANCE = 0.05


def _riccati_depth2(P0, A, times, weights=None):
    r"""Depth-2 flow with :math:`\Sigma = I` in closed form (Fukumizu 1998; Braun et al. 2022).

    With :math:`Z = [W_1^\top; W_2]` (input rows, then output rows; one column per hidden unit),
    :math:`M = ZZ^\top` and the imbalance :math:`C = W_2^\top W_2 - W_1 W_1^\top` (conserved by the
    flow), the layer flow is :math:`\dot Z = F_0 Z - \tfrac12 ZZ^\top Z - \tfrac12 JZC`,
    :math:`F_0 = [[0, A^\top], [A, 0]]`, :math:`J = \operatorname{diag}(I, -I)`. For
    :math:`\lambda`-balanced layers, :math:`C = \lambda I`, it is
    :math:`\dot Z = F_\lambda Z - \tfrac12 ZZ^\top Z` with :math:`F_\lambda = F_0 - \tfrac\lambda2 J`, so
    :math:`\dot M = F_\lambda M + MF_\lambda - M^2`, whose flow map is
    :math:`M(t + \Delta) = e^{F\Delta}M(t)\,(I + K_\Delta M(t))^{-1}e^{F\Delta}`,
    :math:`K_\Delta = \int_0^\Delta e^{2Fs}\,\mathrm ds`; :math:`P` is the lower-left block of :math:`M`.
    In the eigenbasis of :math:`F` (in closed form from the SVD of :math:`A`; for
    :math:`\lambda = 0` eigenvalues :math:`\pm\sigma_i` on :math:`[v_i; \pm u_i]/\sqrt2`, 0 elsewhere) :math:`e^{F\Delta}` and
    :math:`K_\Delta` are diagonal. One map step multiplies by up to :math:`e^{2\lambda_{max}\Delta}`,
    so steps are cut to :math:`\lambda_{max}\Delta \le 6` (conditioning below :math:`e^{12}`,
    round-off ~1e-11).

    ``weights=None``: from the balanced factors of ``P0`` ``(B, m, n)`` (:math:`\lambda = 0`, exact for
    balanced starts). ``weights=(W_1, W_2)`` ``(B, h, n)``, ``(B, m, h)``: from those layers with
    :math:`\lambda_b = \operatorname{tr} C_b / h` per start, exact when :math:`C_b = \lambda_b I` and
    otherwise dropping :math:`-\tfrac12 JZ(C - \lambda I)` (docs/theory.md, section 4.8).
    ``times`` sorted; returns ``(B, T, m, n)``."""
    B, m, n = P0.shape
    if weights is None:
        lb = np.zeros(1)
        # balanced factors: Z0 = [V diag(sqrt s); U diag(sqrt s)], M0 = Z0 Z0^T
        U, s, Vt = np.linalg.svd(P0, full_matrices=False)
        a = np.sqrt(s)
        Z = np.concatenate([np.swapaxes(Vt, -1, -2) * a[:, None, :], U * a[:, None, :]], axis=1)
    else:
        W1, W2 = (np.asarray(w, np.float64) for w in weights)
        C = np.swapaxes(W2, -1, -2) @ W2 - W1 @ np.swapaxes(W1, -1, -2)
        lb = np.trace(C, axis1=-2, axis2=-1) / C.shape[-1]  # (B,): the nearest lambda I to C
        Z = np.concatenate([np.swapaxes(W1, -1, -2), W2], axis=1)
        # the dropped drift -1/2 J Z (C - lambda I) acts at rate ||C - lambda I|| / 2 for the time tau
        dev = np.linalg.norm(C - lb[:, None, None] * np.eye(C.shape[-1]), ord=2, axis=(-2, -1))
        rho = float(times[-1] * np.max(dev, initial=0.0) / 2.0)
        if rho > CLOSED_IMBALANCE:
            warnings.warn(
                f"method='closed' from these layers drops their imbalance: tau * ||C - lambda I|| / 2 = {rho:.3g} "
                f"> {CLOSED_IMBALANCE} (C = W2^T W2 - W1 W1^T; measured errors in the loss after up to about "
                "that fraction, docs/theory.md section 4.8); method='layers' integrates the exact flow",
                UnderivedWarning, stacklevel=4)
    lam, Q = _f_eigenbasis(A, lb)
    if weights is None:  # one basis for every start
        lam, Q = lam[0], Q[0]
    dt_max = 6.0 / max(float(np.abs(lam).max(initial=0.0)), 1e-300)
    out = np.empty((B, times.size, m, n))
    now = 0.0
    with jax.enable_x64(True):
        Qj = jnp.asarray(Q)
        Z = _rotate(Qj, jnp.asarray(Z))
        for k, target in enumerate(times):
            while now < target:
                # the flow map on the factor: Z <- E Z C^{-T}, C C^T = I + Z^T K Z, so that Z Z^T = E M (I + K M)^{-1} E
                d = min(dt_max, target - now)
                e = np.exp(lam * d)
                x = 2.0 * lam * d
                K = d * np.where(x == 0, 1.0, np.expm1(x) / np.where(x == 0, 1.0, x))  # int_0^d e^{2 lam s} ds > 0
                G = np.asarray(_gram(Z, jnp.asarray(K)))
                Ci = np.linalg.inv(np.linalg.cholesky(G))  # numpy: small batched decompositions are fast there
                Z = _advance(Z, jnp.asarray(Ci), jnp.asarray(e))
                now += d
            out[:, k] = np.asarray(_block(Qj, Z, n))
    return out


def _f_eigenbasis(A, lb):
    r"""Eigenvalues ``(B, N)`` and eigenvectors ``(B, N, N)`` (columns; :math:`N = d_{in} + d_{out}`) of
    :math:`F_\lambda = [[-\tfrac\lambda2 I, A^\top], [A, \tfrac\lambda2 I]]` for each :math:`\lambda` of ``lb`` ``(B,)``.

    From the SVD :math:`A = \sum_i\sigma_i u_iv_i^\top` (full bases): on each pair :math:`(v_i, u_i)` it is
    :math:`[[a, \sigma_i], [\sigma_i, -a]]`, :math:`a = -\lambda/2`, with eigenvalues :math:`\pm r_i`,
    :math:`r_i = \sqrt{a^2 + \sigma_i^2}`, on :math:`[\cos\phi_i v_i; \sin\phi_i u_i]` and
    :math:`[\sin\phi_i v_i; -\cos\phi_i u_i]`, :math:`\cos^2\phi_i = (r_i + a)/2r_i`;
    unpaired input directions have eigenvalue :math:`-\lambda/2`, unpaired output ones :math:`\lambda/2`.
    (:math:`\lambda = 0`: :math:`\pm\sigma_i` on :math:`[v_i; \pm u_i]/\sqrt2`.)"""
    m, n = A.shape
    Ua, sig, Vat = np.linalg.svd(A, full_matrices=True)
    Va = Vat.T
    r = sig.size
    a = -0.5 * lb[:, None]  # (B, 1)
    rad = np.sqrt(a**2 + sig[None, :] ** 2)  # (B, r)
    # cos^2 phi = (r + a) / 2r, sin^2 phi = (r - a) / 2r, the cancelling one from (r + a)(r - a) = sigma^2
    # (exactly 1/2 each at lambda = 0; a mode with sigma = lambda = 0 keeps [v; u]/sqrt 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rp = np.where(a >= 0, rad + a, sig**2 / (rad - a))
        rm = np.where(a <= 0, rad - a, sig**2 / (rad + a))
        zero = rad == 0
        c = np.sqrt(np.where(zero, 0.5, rp / (2.0 * rad)))
        s = np.sqrt(np.where(zero, 0.5, rm / (2.0 * rad)))
    B = lb.size
    Q = np.zeros((B, n + m, n + m))
    Q[:, :n, :r], Q[:, n:, :r] = c[:, None, :] * Va[:, :r], s[:, None, :] * Ua[:, :r]
    Q[:, :n, r:2 * r], Q[:, n:, r:2 * r] = s[:, None, :] * Va[:, :r], -c[:, None, :] * Ua[:, :r]
    Q[:, :n, 2 * r:n + r] = Va[:, r:]
    Q[:, n:, n + r:] = Ua[:, r:]
    lam = np.concatenate([rad, -rad, np.broadcast_to(a, (B, n - r)), np.broadcast_to(-a, (B, m - r))], axis=1)
    return lam, Q


@jax.jit
def _rotate(Q, Z):
    return jnp.swapaxes(Q, -1, -2) @ Z


@jax.jit
def _gram(Z, K):
    return jnp.eye(Z.shape[-1]) + jnp.swapaxes(Z, -1, -2) @ (K[..., :, None] * Z)


@jax.jit
def _advance(Z, Ci, e):
    return e[..., :, None] * (Z @ jnp.swapaxes(Ci, -1, -2))


@functools.partial(jax.jit, static_argnums=2)
def _block(Q, Z, n):
    X = Q @ Z  # back to [input; output] coordinates; P = W_2 W_1 is the lower-left block of X X^T
    return X[:, n:] @ jnp.swapaxes(X[:, :n], -1, -2)


@functools.lru_cache(maxsize=None)
def _layer_flow_rhs(shapes, has_cov):
    """The layer gradient flow as ``f(t, y, (A, cov))`` on one flat state (one function per layout,
    so that jax compiles it once per shape)."""
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]

    def rhs(_, y, args):
        A, cov = args
        W = [part.reshape(s) for part, s in zip(jnp.split(y, cuts), shapes)]
        pre = [W[0]]  # pre[l] = W_{l+1} ... W_1
        for w in W[1:]:
            pre.append(w @ pre[-1])
        G = pre[-1] - A
        if has_cov:
            G = G @ cov
        out = [None] * len(W)
        left = G  # (W_L ... W_{l+2})^T G as l runs down
        for l in range(len(W) - 1, -1, -1):
            out[l] = -(left if l == 0 else left @ pre[l - 1].T)
            if l > 0:
                left = W[l].T @ left
        return jnp.concatenate([g.ravel() for g in out])

    return rhs


@functools.partial(jax.jit, static_argnames=("fun", "shapes"))
def _solve_layers(fun, shapes, y0, times, A, cov, rtol, atol):
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]
    solve = jax.vmap(lambda y: dop853(fun, y, times, (A, cov), rtol, atol))
    Y, steps, ok = solve(y0)  # (B, T, n)
    W = [part.reshape(Y.shape[:2] + s) for part, s in zip(jnp.split(Y, cuts, axis=-1), shapes)]
    P = W[0]
    for w in W[1:]:
        P = w @ P
    return P, steps, ok


def _integrate_layers(W0, A, cov, times, rtol, atol):
    """Layer gradient flow of every start ``W0`` (list of ``(B, n_l, n_{l-1})``), batched through the
    jitted DOP853 (one step size per start); end-to-end maps ``(B, T, m, n)``."""
    with jax.enable_x64(True):  # the theory is float64 whatever the session's default
        shapes = tuple(tuple(w.shape[1:]) for w in W0)
        B = W0[0].shape[0]
        y0 = jnp.concatenate([jnp.asarray(w, jnp.float64).reshape(B, -1) for w in W0], axis=1)
        fun = _layer_flow_rhs(shapes, cov is not None)
        P, steps, ok = _solve_layers(fun, shapes, y0, jnp.asarray(times, jnp.float64), jnp.asarray(A, jnp.float64),
                                     None if cov is None else jnp.asarray(cov, jnp.float64), rtol, atol)
        if not bool(np.all(ok)):  # pragma: no cover - the flow is smooth; failure means a bad tolerance
            raise RuntimeError("layer flow: step cap reached (tolerance too tight for the horizon?)")
        return np.array(P)


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
    with jax.enable_x64(True):
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
    with jax.enable_x64(True):
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


def _method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def end_to_end_flow(P0: ArrayLike, task: Task, t: ArrayLike, depth: int, *, lr: float | None = None, gd_order: int = 2,
                    method: str = "auto", rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    r"""Integrate the balanced end-to-end flow :math:`\dot P = -\sum_j (PP^\top)^{(L-j)/L}(P-A)\Sigma(P^\top P)^{(j-1)/L}`.

    Exact for gradient flow on the layers from any balanced initialisation
    (:math:`W_{l+1}^\top W_{l+1} = W_l W_l^\top`, which ``net.init(scheme="balanced" | "aligned")``
    gives exactly and a small Gaussian init only roughly: for a checkpoint's own, imbalanced layers
    use :func:`predict_finetune` on the :class:`~linoverfit.PretrainResult`); gradient descent with
    learning rate :math:`\eta` follows it up to :math:`O(\eta)`. Every map of the batch in one call,
    in one of three equivalent ways (``docs/theory.md``, section 4.1):

    * ``method="closed"``: depth 2 with :math:`\Sigma = I` only, the exact Riccati solution of the
      balanced depth-2 flow (Fukumizu 1998): the flow map over a time :math:`\Delta` is
      :math:`M \mapsto e^{F\Delta}M(I + K_\Delta M)^{-1}e^{F\Delta}` for
      :math:`M = [W_1^\top; W_2][W_1^\top; W_2]^\top`, :math:`F = [[0, A^\top], [A, 0]]`,
      :math:`K_\Delta = \int_0^\Delta e^{2Fs}\,\mathrm ds`, applied in steps :math:`\sigma_1\Delta \le 6`
      (no ODE solver; round-off ~1e-11 relative).
    * ``method="layers"``: the layer gradient flow from the balanced factorisation
      :math:`W_1 = D V^\top`, :math:`W_l = D`, :math:`W_L = U D`, :math:`D = \operatorname{diag}(s^{1/L})`
      of :math:`P_0 = U\operatorname{diag}(s)V^\top`, integrated by a jitted DOP853
      (:mod:`~linoverfit.theory.integrate`, scipy's method and step control, one step size per map).
      Balancedness is conserved, so its end-to-end map solves the same ODE with matrix products only.
    * ``method="function"``: the ODE above with ``scipy.integrate.solve_ivp`` (DOP853), fractional
      powers from an SVD of :math:`P` at every evaluation (:func:`end_to_end_velocity`).
    * ``method="auto"`` (default): ``"closed"`` where it applies, else ``"layers"``.

    Args:
      P0: start maps ``(..., d_out, d_in)`` (e.g. ``run.end_to_end``, ``(C, d_out, d_in)``).
      task: the :class:`~linoverfit.Task` being trained on (e.g. the fine-tuning task).
      t: flow time(s) :math:`t = \eta\cdot\text{steps} \ge 0`, scalar or shape ``T`` (any order).
      depth: :math:`L \ge 1`.
      lr: ``None`` (gradient flow, the default here) or the GD learning rate :math:`\eta`: then the
        *modified equation* of GD on the balanced layers is integrated instead,
        :math:`\dot W = -g - \tfrac\eta2 Hg - \eta^2(\tfrac13 HHg + \tfrac1{12}\nabla^3L[g,g])`
        (:math:`g = \nabla_W L`, :math:`H = \nabla^2_W L`, Hessian-vector products by ``jax.jvp`` of
        ``jax.grad``; ``docs/theory.md`` section 4.6), which passes through the GD iterates
        :math:`W_k` at :math:`t = k\eta` up to :math:`O(\eta^{p+1})`, :math:`p` = ``gd_order``.
        Assumes exactly balanced starts (GD from them equals GD on the balanced factors).
      gd_order: 1 (first order, implicit gradient regularisation :math:`L + \tfrac\eta4\lVert\nabla L\rVert^2`)
        or 2 (default); 0 is the flow. Only with ``method="layers"`` (or ``"auto"``).
      method: ``"auto"``, ``"closed"``, ``"layers"`` or ``"function"`` (same flow, see above).
      rtol, atol: solver tolerances on the entries of the state (:math:`P`, or the layers).

    Returns ``P0.shape[:-2] + t.shape + (d_out, d_in)``.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> task = lo.Task(teacher=np.diag([1.0, 0.5]))
      >>> P = lo.theory.end_to_end_flow(1e-3 * np.eye(2), task, t=[0.0, 20.0], depth=2)
      >>> P.shape
      (2, 2, 2)
      >>> print(np.round(np.diag(P[1]), 4))        # the logistic modes of lo.theory.mode_trajectory
      [1.  0.5]
    """
    L = _depth(depth)
    method = _method(method)
    A, cov = _task(task, "task")
    P0 = _maps(P0, A, "P0")
    t = _nonneg(t, "t")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (0 < tol < 1):
            raise ValueError(f"{name} must be in (0, 1), got {tol}")
    lead = P0.shape[:-2]
    times = np.unique(t.ravel())
    if times.size == 0:
        return np.zeros(lead + t.shape + A.shape)
    eta, order = _flow_lr(lr), _gd_order(gd_order, allow=())
    if eta is not None and order > 0:
        if method not in ("auto", "layers"):
            raise ValueError(f"method={method!r} integrates gradient flow only; GD (lr=) needs method='layers'")
        out = _integrate_gd(P0.reshape((-1,) + A.shape), A, cov, L, times, rtol, atol, eta, order)
    else:
        out = _integrate(P0.reshape((-1,) + A.shape), A, cov, L, times, rtol, atol, method)
    out = out[:, np.searchsorted(times, t.ravel())]
    return out.reshape(lead + t.shape + A.shape)


# ----------------------------------------------------------------------------- fine-tuning


@result
class FinetunePrediction(Result):
    r"""Fine-tuning predicted by the end-to-end flow, laid out like :class:`~linoverfit.FinetuneResult`.

    Shapes (``C`` start maps, e.g. checkpoints, ``R`` learning rates, optional ``S`` seeds):

    * ``t`` ``(C,)`` pre-training time of each start map (``None`` when unknown).
    * ``lr`` ``(R,)``, ``ft_steps``; ``tau`` ``(R,)`` the flow time :math:`\tau = \eta\cdot\text{steps}`.
    * ``pretrain_loss_before`` / ``finetune_loss_before`` ``(C[, S])``.
    * ``pretrain_loss_after`` / ``finetune_loss_after`` ``(C, R[, S])``.
    * ``end_to_end`` ``(C, R[, S], d_out, d_in)`` fine-tuned maps, or ``None``.
    * ``gd_order``: 0 for gradient flow, 1 or 2 for the modified equation of GD, ``"exact"`` or
      ``"auto"`` (section 4.6).
    * ``past_edge`` ``(C, R[, S])`` bool: the learning rate is at or past the stability edge
      :math:`2/\lambda` at the start map or at the predicted end (:math:`\lambda` the Gauss-Newton
      sharpness :math:`L s_1^{2-2/L}\lVert\Sigma_{ft}\rVert`, exact at a minimum with
      :math:`\Sigma_{ft} = I`); such predictions warn (:class:`~linoverfit.theory.PastEdgeWarning`)
      and do not describe GD.
    """

    t: np.ndarray | None
    lr: np.ndarray
    ft_steps: int = static()
    tau: np.ndarray
    pretrain_loss_before: np.ndarray
    finetune_loss_before: np.ndarray
    pretrain_loss_after: np.ndarray
    finetune_loss_after: np.ndarray
    end_to_end: np.ndarray | None = None
    gd_order: int | str = static(0)
    past_edge: np.ndarray | None = None

    _dims = {
        **{k: ("checkpoint", "seed") for k in ("pretrain_loss_before", "finetune_loss_before")},
        **{k: ("checkpoint", "lr", "seed") for k in ("pretrain_loss_after", "finetune_loss_after")},
        "end_to_end": ("checkpoint", "lr", "seed", "d_out", "d_in"),
        "past_edge": ("checkpoint", "lr", "seed"),
    }

    def _coords(self) -> dict:
        return {"t": ("checkpoint", self.t), "lr": ("lr", self.lr), "tau": ("lr", self.tau)}

    def _seeds(self) -> int | None:
        return self.pretrain_loss_before.shape[1] if np.ndim(self.pretrain_loss_before) == 2 else None

    @property
    def forgetting(self) -> np.ndarray:
        """Pre-training loss after fine-tuning minus before, ``(C, R[, S])``."""
        return self.pretrain_loss_after - np.expand_dims(self.pretrain_loss_before, 1)

    @property
    def plasticity(self) -> np.ndarray:
        """Fine-tuning loss before minus after, ``(C, R[, S])``."""
        return np.expand_dims(self.finetune_loss_before, 1) - self.finetune_loss_after


def _flow_lr(lr):
    from .modes import _lr

    return _lr(lr)


def _resolve_start(start, depth, pretrain_task, with_weights=False):
    """(P0, depth, pretrain_task, t[, weights]) from a PretrainResult or an array of maps
    (``weights``: the run's layers as float64 arrays ``(C[, S], n_l, n_{l-1})``, None for maps)."""
    from ..result_types import PretrainResult

    if isinstance(start, PretrainResult):
        if start.weights is None:
            raise ValueError("start has no weights (it was pre-trained with keep_weights=False)")
        run_depth = len(start.weights)
        if depth is not None and _depth(depth) != run_depth:
            raise ValueError(f"depth={depth} but the run's network has depth {run_depth}")
        P0 = np.asarray(start.end_to_end, dtype=np.float64)
        out = P0, run_depth, (start.task if pretrain_task is None else pretrain_task), np.asarray(start.t)
        return out + (tuple(np.asarray(w, np.float64) for w in start.weights),) if with_weights else out
    if depth is None:
        raise TypeError("depth is required when start is an array of maps (it is read off a PretrainResult)")
    if pretrain_task is None:
        raise TypeError("pretrain_task is required when start is an array of maps")
    out = np.asarray(start, dtype=np.float64), _depth(depth), pretrain_task, None
    return out + (None,) if with_weights else out


def _loss(task, P):
    """Loss of maps ``P`` ``(..., m, n)`` under a Task or Dataset, as numpy float64."""
    from ..tasks import Dataset, Task

    if isinstance(task, Task):
        A = np.asarray(task.teacher, np.float64)
        D = P - A
        return 0.5 * np.sum(D * (D @ np.asarray(task.input_cov, np.float64)), axis=(-2, -1)) + 0.5 * float(task.noise) * A.shape[0]
    if isinstance(task, Dataset):
        r = np.einsum("...oi,bi->...bo", P, np.asarray(task.x, np.float64)) - np.asarray(task.y, np.float64)
        return 0.5 * np.mean(np.sum(r * r, axis=-1), axis=-1)
    raise TypeError(f"pretrain_task must be a linoverfit Task or Dataset, got {type(task).__name__}")


def predict_finetune(start: PretrainResult | ArrayLike, finetune_task: Task,
                     lr: float | Sequence[float] | ArrayLike = (0.01,), steps: int = 1000, *,
                     depth: int | None = None, pretrain_task: Task | Dataset | None = None,
                     return_maps: bool = False, gd_order: int | str = "auto", method: str = "auto",
                     rtol: float = 1e-10, atol: float = 1e-12) -> FinetunePrediction:
    r"""Predict fine-tuning from every start map by the end-to-end flow (no parameters simulated).

    From each :math:`P_0` the fine-tuned map is :math:`P(\tau)` of :func:`end_to_end_flow` on
    ``finetune_task`` with :math:`\tau = \eta\cdot\text{steps}` for each learning rate :math:`\eta`;
    the result carries the pre-training and fine-tuning losses before and after, hence the
    forgetting :math:`L_{pre}(P(\tau)) - L_{pre}(P_0)` and the fine-tuning U-curve over checkpoints.

    By default (``gd_order="auto"``) it predicts gradient *descent* at each :math:`\eta`, not the
    flow. For an exactly balanced start GD on the network equals GD on the balanced factors of
    :math:`P_0` (width :math:`\min(d_{in}, d_{out})`; ``docs/theory.md`` section 4.6), so
    ``"exact"`` iterates that (a compiled loop of ``steps`` steps, error round-off). ``1`` / ``2``
    integrate the modified equation of GD on the balanced layers instead (errors :math:`O(\eta^2)`,
    :math:`O(\eta^3)`; cost independent of ``steps``). ``"auto"`` iterates exactly when
    ``steps <= AUTO_EXACT_STEPS`` (10 000: then it is also the cheaper) or :math:`\eta\lambda > 1/4`
    (:math:`\lambda` the Gauss-Newton sharpness at the start maps and at the fine-tuning optimum; the
    modified-equation series stops converging near :math:`\eta\lambda = 1`), else uses order 2.
    Depth 1 is always exact, :math:`P_k = A + (P_0 - A)(I - \eta\Sigma)^k`. ``gd_order=0`` is the
    gradient flow (error :math:`O(\eta)`). Learning rates at or past the
    stability edge are marked in ``past_edge`` and warn (:class:`~linoverfit.theory.PastEdgeWarning`).

    From a :class:`~linoverfit.PretrainResult` every one of these runs on the run's own layers
    (the checkpoint's weights; no balancedness assumed: a Gaussian init leaves the layers
    imbalanced, and the unlearnt directions keep the init's random hidden vectors, which set when
    they are learnt), so ``gd_order=0`` is the exact gradient flow of the network from the
    checkpoint. From bare maps the layers are the balanced factors of the maps (the flow then has
    a closed form at depth 2 with :math:`\Sigma = I`, :func:`end_to_end_flow`).

    Assumes plain fine-tuning (no l2 pull, no weight decay), and balanced layers for bare maps.

    Args:
      start: a :class:`~linoverfit.PretrainResult` (its maps, depth and task are used), or maps
        ``(C[, S], d_out, d_in)`` (then ``depth`` and ``pretrain_task`` are required).
      finetune_task: the fine-tuning :class:`~linoverfit.Task`.
      lr: learning rate(s) :math:`\eta > 0`, shape ``(R,)``; ``steps``: fine-tuning steps >= 1.
      pretrain_task: Task or Dataset whose loss is tracked (default: the run's task).
      return_maps: also return the fine-tuned maps ``(C, R[, S], d_out, d_in)``.
      gd_order: ``"auto"`` (default), ``"exact"``, 2, 1, or 0 (gradient flow); see above.
      method, rtol, atol: as in :func:`end_to_end_flow` (``"function"`` and ``"closed"`` need
        ``gd_order=0``; from a PretrainResult ``"auto"`` and ``"layers"`` integrate the exact flow of
        its own layers, ``"closed"`` (depth 2, :math:`\Sigma = I`) is the :math:`\lambda`-balanced
        closed form on its own layers, :math:`\lambda = \operatorname{tr}C/h` for the imbalance
        :math:`C = W_2^\top W_2 - W_1W_1^\top`: exact when :math:`C = \lambda I`, otherwise it drops
        :math:`C - \lambda I` and warns (:class:`~linoverfit.theory.UnderivedWarning`) where
        :math:`\tau\lVert C - \lambda I\rVert_2/2 > 0.05` (``docs/theory.md`` section 4.8; no ODE,
        and no step loop: see ``benchmarks/theory.py``); ``"function"`` balances its maps first).

    Returns a :class:`FinetunePrediction` (shapes as in :class:`~linoverfit.FinetuneResult`).
    """
    P0, L, pre_task, t, weights = _resolve_start(start, depth, pretrain_task, with_weights=True)
    A, cov = _task(finetune_task, "finetune_task")
    P0 = _maps(P0, A, "start")
    lrs = _v.positive_vector(lr, "lr")
    steps = _v.positive_int(steps, "steps")
    tau = lrs * steps
    lead = P0.shape[:-2]
    order, method = _gd_order(gd_order), _method(method)
    flatP0 = P0.reshape((-1,) + A.shape)
    if weights is not None and method in ("auto", "layers", "closed"):
        method = "layers" if method == "auto" else method
        weights = [w.reshape((-1,) + w.shape[len(lead):]) for w in weights]
    else:
        weights = None
    if order == 0:
        times = np.unique(tau)
        flat = _integrate(flatP0, A, cov, L, times, rtol, atol, method, weights)
        flat = flat[:, np.searchsorted(times, tau)]
    else:
        if method not in ("auto", "layers"):
            raise ValueError(f"method={method!r} integrates gradient flow only; use gd_order=0 with it")
        lam0 = np.max(_gn_sharpness(flatP0, cov, L))
        lam1 = _gn_sharpness(np.asarray(A), cov, L)  # at the fine-tuning optimum
        exact = np.array([L > 1 and (order == "exact" or (order == "auto" and (
            eta * max(lam0, lam1) > AUTO_EXACT_ABOVE or steps <= AUTO_EXACT_STEPS))) for eta in lrs])
        flat = np.empty((flatP0.shape[0], lrs.size) + A.shape)
        if exact.any():  # every exactly iterated lr in one compiled sweep
            flat[:, exact] = _iterate_gd(flatP0, A, cov, L, lrs[exact], steps, weights)
        for r in np.flatnonzero(~exact):
            flat[:, r] = _integrate_gd(flatP0, A, cov, L, np.array([tau[r]]), rtol, atol, lrs[r],
                                       2 if isinstance(order, str) else order, weights)[:, 0]
    after = flat.reshape(lead + (lrs.size,) + A.shape)
    if len(lead) >= 2:  # (C, S, R, ...) -> (C, R, S, ...) as in FinetuneResult
        after = np.moveaxis(after, len(lead), 1)
    past = _past_edge(P0, after, lrs, cov, L)
    return FinetunePrediction(
        t=t,
        lr=lrs,
        ft_steps=steps,
        tau=tau,
        pretrain_loss_before=_loss(pre_task, P0),
        finetune_loss_before=_loss(finetune_task, P0),
        pretrain_loss_after=_loss(pre_task, after),
        finetune_loss_after=_loss(finetune_task, after),
        end_to_end=after if return_maps else None,
        gd_order=order,
        past_edge=past,
    )


def _gn_sharpness(P, cov, L):
    """Gauss-Newton sharpness L s_1^(2-2/L) ||Sigma|| of balanced layers with end-to-end map P ``(..., m, n)``."""
    P = np.asarray(P)
    finite = np.all(np.isfinite(P), axis=(-2, -1))  # a predicted run that diverged: infinitely sharp
    s1 = np.where(finite, np.linalg.norm(np.where(finite[..., None, None], P, 0.0), ord=2, axis=(-2, -1)), np.inf)
    c = 1.0 if cov is None else float(np.linalg.eigvalsh(cov)[-1])
    return L * s1 ** (2.0 - 2.0 / L) * c


def _past_edge(P0, after, lrs, cov, L):
    """``(C, R[, S])``: lr >= 2 / max(sharpness at the start, at the predicted end); warns where any is."""
    from .curvature import check_edge

    lead = P0.shape[:-2]
    start = _gn_sharpness(P0, cov, L)  # (C[, S])
    end = _gn_sharpness(after, cov, L)  # (C, R[, S])
    if not lead:  # one start map: losses (R,)
        lam, r = np.maximum(start, end), lrs
    else:
        lam = np.maximum(np.expand_dims(start, 1), end)
        r = lrs.reshape((1, -1) + (1,) * (len(lead) - 1))
    with np.errstate(divide="ignore"):
        edge = 2.0 / lam
    return check_edge(np.broadcast_to(r, edge.shape), edge, "predict_finetune", stacklevel=4)


def first_order_forgetting(start: PretrainResult | ArrayLike, finetune_task: Task, tau: ArrayLike, *,
                           depth: int | None = None, pretrain_task: Task | None = None) -> np.ndarray:
    r"""Forgetting along the linearised fine-tuning flow, closed form for small :math:`\tau = \eta\cdot\text{steps}`.

    With :math:`V = \dot P(0)` from :func:`end_to_end_velocity` (on ``finetune_task``) the flow is
    replaced by its tangent line :math:`P(\tau) \approx P_0 + \tau V`, on which the (quadratic)
    pre-training loss changes by exactly

    .. math:: F_{lin}(\tau) = \tau\,\langle \nabla L_{pre}(P_0), V\rangle + \tfrac{\tau^2}{2}\langle V\Sigma_{pre}, V\rangle.

    The true forgetting is :math:`F_{lin}(\tau) + \tfrac{\tau^2}{2}\langle\nabla L_{pre}(P_0), \ddot P(0)\rangle + O(\tau^3)`:
    the error is :math:`O(\tau^2)` in general and :math:`O(\tau^3)` at a stationary point of the
    pre-training loss (a fully pre-trained map, where the first term vanishes and the quadratic
    term is the leading order). ``docs/theory.md``, section 5.

    Args:
      start: a :class:`~linoverfit.PretrainResult` or maps ``(..., d_out, d_in)`` (then ``depth``
        and ``pretrain_task`` are required). ``pretrain_task`` must be a Task (population loss).
      finetune_task: the fine-tuning :class:`~linoverfit.Task`.
      tau: flow time(s) :math:`\tau \ge 0`, scalar or shape ``T``.

    Returns shape ``(...) + tau.shape``.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> pre, ft = lo.Task(teacher=np.eye(2)), lo.Task(teacher=np.diag([1.0, 0.0]))
      >>> # P0 = A: V = -(1 + 1) diag(0, 1), so F = tau^2/2 * 4
      >>> lo.theory.first_order_forgetting(np.eye(2), ft, [0.1, 0.2], depth=2, pretrain_task=pre)
      array([0.02, 0.08])
    """
    P0, L, pre_task, _ = _resolve_start(start, depth, pretrain_task)
    A_pre, cov_pre = _task(pre_task, "pretrain_task")
    A, cov = _task(finetune_task, "finetune_task")
    P0 = _maps(P0, A, "start")
    tau = _nonneg(tau, "tau")
    lead = P0.shape[:-2]
    V = _velocity(P0.reshape((-1,) + A.shape), A, cov, L)
    P0 = P0.reshape((-1,) + A.shape)
    D = P0 - A_pre
    g = D if cov_pre is None else D @ cov_pre
    VS = V if cov_pre is None else V @ cov_pre
    lin = np.sum(g * V, axis=(-2, -1)).reshape(lead + (1,) * tau.ndim)
    quad = np.sum(VS * V, axis=(-2, -1)).reshape(lead + (1,) * tau.ndim)
    return tau * lin + 0.5 * tau**2 * quad

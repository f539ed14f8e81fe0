r"""The gradient flow of a deep linear network's own layers, and the balanced factors it starts from.

* :func:`_balanced_factors`: :math:`W_1 = DV^\top`, :math:`W_l = D`, :math:`W_L = UD`,
  :math:`D = \operatorname{diag}(s^{1/L})` for :math:`P_0 = U\operatorname{diag}(s)V^\top`.
* :func:`_integrate_layers`: the layer flow :math:`\dot W_l = -\partial L/\partial W_l` of every start,
  batched through the jitted DOP853 (:mod:`~linoverfit.theory.integrate`, one step size per start).
* :func:`_flow_layers`: the same flow with weight decay, the layers at each checkpoint
  (``lo.theory.pretrain(method="flow")``).
* :func:`_riccati_depth2`: depth 2 with :math:`\Sigma = I` in closed form (Fukumizu 1998; Braun et al.
  2022), exact for (:math:`\lambda`-)balanced layers (``docs/theory.md`` sections 4.1, 4.8).

Used by :mod:`~linoverfit.theory.flow` (``end_to_end_flow``), :mod:`~linoverfit.theory.forgetting`
(``predict_finetune``) and :mod:`~linoverfit.theory.mirror`.
"""

from __future__ import annotations

import functools
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .integrate import dop853
from .modes import UnderivedWarning
from ..precision import enable_x64


def _balanced_factors(P0, L):
    """A balanced factorisation of ``P0`` ``(B, m, n)`` through width k = min(m, n): W_1 = diag(a) V^T,
    W_l = diag(a), W_L = U diag(a), a = s^(1/L) (so W_{l+1}^T W_{l+1} = W_l W_l^T = diag(s^(2/L)))."""
    if L == 1:
        return [P0]
    U, s, Vt = np.linalg.svd(P0, full_matrices=False)
    a = s ** (1.0 / L)
    eye = np.eye(a.shape[-1])
    return [a[..., :, None] * Vt] + [a[..., :, None] * eye for _ in range(L - 2)] + [U * a[..., None, :]]


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
    with enable_x64(True):
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
    with enable_x64(True):  # the theory is float64 whatever the session's default
        shapes = tuple(tuple(w.shape[1:]) for w in W0)
        B = W0[0].shape[0]
        y0 = jnp.concatenate([jnp.asarray(w, jnp.float64).reshape(B, -1) for w in W0], axis=1)
        fun = _layer_flow_rhs(shapes, cov is not None)
        P, steps, ok = _solve_layers(fun, shapes, y0, jnp.asarray(times, jnp.float64), jnp.asarray(A, jnp.float64),
                                     None if cov is None else jnp.asarray(cov, jnp.float64), rtol, atol)
        if not bool(np.all(ok)):  # pragma: no cover - the flow is smooth; failure means a bad tolerance
            raise RuntimeError("layer flow: step cap reached (tolerance too tight for the horizon?)")
        return np.array(P)


@functools.lru_cache(maxsize=None)
def _decayed_rhs(shapes, has_cov):
    """The layer gradient flow of ``L + wd/2 sum ||W_l||^2`` as ``f(t, y, (A, cov, wd))``."""
    base = _layer_flow_rhs(shapes, has_cov)
    return lambda t, y, args: base(t, y, args[:2]) - args[2] * y


@partial(jax.jit, static_argnames=("fun",))
def _flow_core(fun, y0, times, A, cov, wd, rtol, atol):
    return jax.vmap(lambda y: dop853(fun, y, times, (A, cov, wd), rtol, atol))(y0)


def _flow_layers(Ws, task, wd, times, rtol, atol):
    shapes = tuple(tuple(w.shape[1:]) for w in Ws)
    A = np.asarray(task.teacher, np.float64)
    cov = np.asarray(task.input_cov, np.float64)
    has_cov = not np.array_equal(cov, np.eye(cov.shape[0]))
    with enable_x64(True):
        y0 = jnp.concatenate([jnp.asarray(w.reshape(w.shape[0], -1)) for w in Ws], axis=1)
        Y, _, ok = _flow_core(_decayed_rhs(shapes, has_cov), y0, jnp.asarray(times), jnp.asarray(A),
                              jnp.asarray(0.5 * (cov + cov.T)) if has_cov else None, jnp.asarray(wd), rtol, atol)
        if not bool(np.all(ok)):  # pragma: no cover - smooth flow; failure means a bad tolerance
            raise RuntimeError("layer flow: step cap reached (tolerance too tight for the horizon?)")
        Y = np.asarray(Y)
    cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    return tuple(p.reshape(p.shape[:2] + s) for p, s in zip(np.split(Y, cuts, axis=-1), shapes))

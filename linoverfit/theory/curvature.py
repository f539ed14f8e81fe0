r"""Sharpness (top Hessian eigenvalue of the loss) and the stability edge of gradient descent.

For weights :math:`W = (W_1, \dots, W_L)` and the loss :math:`L(W) = \mathcal L(W_L\cdots W_1)` of a
:class:`~linoverfit.Task` or :class:`~linoverfit.Dataset`, the sharpness is
:math:`\lambda_{max} = \lambda_{max}(\nabla^2_W L)` (``docs/theory.md``, section 7). Gradient
descent with learning rate :math:`\eta` is linearly stable at a minimum only if
:math:`\eta < 2/\lambda_{max}`, the *stability edge*.

* :func:`sharpness`: exact for any given weights: Hessian-vector products
  (``jax.jvp`` of ``jax.grad``) and Lanczos with full reorthogonalisation and Rayleigh-Ritz on
  the whole Krylov basis, in float64, vmapped over checkpoints (and seeds).
* :func:`sharpness_from_spectrum`: closed form for balanced aligned networks from the learnt
  spectrum: the Hessian splits into blocks of size :math:`\le 2L`, one per pair of mode indices.
* :func:`stability_edge`: :math:`2/\lambda_{max}`.
* :class:`PastEdgeWarning`: raised (as a warning) by every prediction asked for at a learning rate
  past the edge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jax.flatten_util import ravel_pytree

from .. import objective as _obj
from .. import validation as _v
from ..networks import Network
from ..result_types import PretrainResult
from ..tasks import Dataset, Task
from ._args import _nonneg, _widths
from ..precision import enable_x64

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear


__all__ = ["sharpness", "sharpness_from_spectrum", "stability_edge", "PastEdgeWarning"]


class PastEdgeWarning(UserWarning):
    """A learning rate is at or past the stability edge :math:`2/\\lambda_{max}`: gradient descent does
    not converge there and the flow-based prediction does not describe it."""


def _objective(task):
    if not isinstance(task, (Task, Dataset)):
        raise TypeError(f"task must be a linoverfit Task or Dataset, got {type(task).__name__}")
    return task


def _as_float64(task):
    if isinstance(task, Task):
        return Task(jnp.asarray(task.teacher, jnp.float64), jnp.asarray(task.input_cov, jnp.float64), task.noise)
    return type(task)(x=jnp.asarray(task.x, jnp.float64), y=jnp.asarray(task.y, jnp.float64))


def _lanczos_top(hvp, x, key, m):
    """Largest eigenvalue of the symmetric operator ``v -> hvp(x, v)`` (size n) from an m-step Krylov basis.

    Full reorthogonalisation (twice, classical Gram-Schmidt); on breakdown (the Krylov space is
    invariant, common for the structured Hessians of aligned networks) the basis continues with a
    fresh random vector. The projected matrix Q^T H Q is formed from the stored products, so the
    Ritz values are exact Rayleigh-Ritz values of the basis even where the three-term recurrence has
    lost accuracy.
    """
    n = x.size
    dtype = x.dtype

    def orth(Q, mask, w):
        for _ in range(2):
            w = w - Q.T @ (mask * (Q @ w))
        return w

    def unit(w):
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(dtype).tiny)

    R = jax.random.normal(key, (m + 1, n), dtype)  # start vector and restart vectors, drawn once
    Q = jnp.zeros((m, n), dtype).at[0].set(unit(R[0]))
    HQ = jnp.zeros((m, n), dtype)

    def body(j, carry):
        Q, HQ, scale = carry
        w = hvp(x, Q[j])
        HQ = HQ.at[j].set(w)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        mask = (jnp.arange(m) <= j).astype(dtype)
        w = orth(Q, mask, w)
        b = jnp.linalg.norm(w)
        r = orth(Q, mask, R[j + 1])
        # breakdown: the Krylov space is invariant up to round-off; continue in its complement
        nxt = jnp.where(b <= 1e-8 * scale, unit(r), w / jnp.maximum(b, jnp.finfo(dtype).tiny))
        Q = Q.at[jnp.minimum(j + 1, m - 1)].set(jnp.where(j + 1 < m, nxt, Q[m - 1]))
        return Q, HQ, scale

    Q, HQ, _ = jax.lax.fori_loop(0, m, body, (Q, HQ, jnp.zeros((), dtype)))
    T = Q @ HQ.T
    T = 0.5 * (T + T.T)
    return jnp.linalg.eigvalsh(T)[-1]


def sharpness(weights: Sequence[ArrayLike] | PretrainResult | Any, task: Task | Dataset | None = None, *,
              net: Network | None = None, weight_decay: float = 0.0, iters: int | None = None,
              key: int | jax.Array = 0) -> float | np.ndarray:
    r"""Top eigenvalue :math:`\lambda_{max}` of the Hessian of the loss in the layer weights, for any weights.

    .. math:: \lambda_{max} = \max_{\lVert V\rVert = 1} \frac{\mathrm d^2}{\mathrm d\varepsilon^2} L(W + \varepsilon V)\Big|_0 + \lambda_{wd}

    computed exactly (no structure assumed): Hessian-vector products by forward-over-reverse
    differentiation (``jax.jvp`` of ``jax.grad``) and Lanczos with full reorthogonalisation,
    ``iters`` steps, Rayleigh-Ritz on the whole basis (``docs/theory.md``, section 7.2). Always in
    float64 (``jax.enable_x64`` inside). Every checkpoint (and seed) is one ``vmap`` lane.

    For a nonlinear ``net`` (:class:`~linoverfit.MLP`, :class:`~linoverfit.Model`) the loss is the sample
    loss :math:`L(W) = \tfrac1{2N}\sum_n\lVert f_W(x_n) - y_n\rVert^2` on a Dataset, :math:`W` every leaf
    of the params pytree (flattened), so it needs ``f`` twice differentiable where it is evaluated (for a
    ReLU network autodiff gives the Hessian of its current linear pieces; curvature concentrated at
    the kinks is not counted).

    Args:
      weights: tuple of ``L`` arrays ``(..., n_l, n_{l-1})`` with any leading batch axes
        (checkpoints, seeds), a params pytree of ``net`` with the same leading axes on every leaf, or a
        :class:`~linoverfit.PretrainResult` (its weights; its task when ``task`` is None).
      task: the :class:`~linoverfit.Task` (population loss) or :class:`~linoverfit.Dataset` (a
        Dataset for a nonlinear ``net``).
        ``sharpness(run, ft_task)`` is each checkpoint's sharpness on the fine-tuning loss (its edge
        for ``lo.finetune``); ``sharpness(finetune_result.weights, task)`` that of fine-tuned weights.
      net: the network the weights are of; needed for a nonlinear one (``None``: a linear network, whose
        loss is that of its end-to-end map).
      weight_decay: :math:`\lambda_{wd} \ge 0`; the objective :math:`L + \tfrac{\lambda_{wd}}2\lVert W\rVert^2`
        (as in ``lo.pretrain(weight_decay=)``) has sharpness :math:`\lambda_{max} + \lambda_{wd}`.
      iters: Krylov dimension (default ``min(n_params, 96)``). With ``iters >= n_params`` the
        result is exact to round-off; the top eigenvalue of the Hessians met here converges to
        :math:`10^{-12}` relative well before (``tests/test_theory_sharpness.py``).
      key: seed of the Lanczos start vectors (an int or a ``jax.random`` key).

    Returns a float64 numpy array with the leading batch shape of ``weights`` (a float for one network).

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> task = lo.Task(teacher=np.diag([1.0, 0.5]))
      >>> W = (np.diag([1.0, 0.5]) ** 0.5,) * 2          # balanced, at the minimum P = A
      >>> round(float(lo.theory.sharpness(W, task)), 10)  # L sigma_1^(2 - 2/L) = 2
      2.0
    """
    if isinstance(weights, PretrainResult):
        if weights.weights is None:
            raise ValueError("weights is a PretrainResult without weights (lo.pretrain(..., keep_weights=False))")
        task = weights.task if task is None else task
        weights = weights.weights
    if task is None:
        raise TypeError("task is required (the Task or Dataset whose loss the Hessian is of)")
    task = _objective(task)
    lam = _v.positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    if _obj.nonlinear(net):
        task = _obj.require_samples(net, task)
        params = net.check_weights(weights, "weights")
        net.check_task(task, "task")
        template = jax.eval_shape(net.init, jax.random.key(0))  # one network's leaf shapes
    else:
        net = None  # a linear network: the loss of the end-to-end map (an identity MLP's is that too)
        params = _v.weights_tuple(weights, "weights")
        template = tuple(jax.ShapeDtypeStruct(np.shape(w)[-2:], jnp.float64) for w in params)
        if template[0].shape[1] != task.d_in or template[-1].shape[0] != task.d_out:
            raise ValueError(f"weights map {template[0].shape[1]} -> {template[-1].shape[0]} but the task maps "
                             f"{task.d_in} -> {task.d_out}")
    leaves, t_leaves = jax.tree.leaves(params), jax.tree.leaves(template)
    leads = [tuple(np.shape(w)[:np.ndim(w) - len(t.shape)]) for w, t in zip(leaves, t_leaves)]
    for i, lead_i in enumerate(leads):
        if lead_i != leads[0]:
            raise ValueError(f"weights leaf {i} has leading (checkpoint, seed) axes {lead_i} but leaf 0 has {leads[0]}; "
                             "every leaf needs the same leading axes (one network per lane)")
    lead = leads[0]
    n = sum(int(np.prod(t.shape)) for t in t_leaves)
    m = min(min(n, 96) if iters is None else _v.positive_int(iters, "iters"), n)
    B = int(np.prod(lead)) if lead else 1
    with enable_x64(True):
        lanes = jax.tree.map(lambda w, t: jnp.reshape(jnp.asarray(w, jnp.float64), (B,) + tuple(t.shape)),
                             params, template)
        k = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
        top = _sharpness_core(net, _as_float64(task), lanes, k, m)
        out = np.asarray(top, dtype=np.float64).reshape(lead) + lam
    return float(out) if out.ndim == 0 else out


@partial(jax.jit, static_argnames=("net", "m"))
def _sharpness_core(net, task, lanes, key, m):
    """Top Hessian eigenvalue of :func:`linoverfit.objective.net_loss` (the end-to-end map's loss for
    ``net=None``) in every leaf of each lane's params, one ``vmap`` lane per weight set."""
    def lane(params):
        flat, unravel = ravel_pytree(params)
        grad = jax.grad(lambda x: _obj.net_loss(net, task, unravel(x)))
        return _lanczos_top(lambda x, v: jax.jvp(grad, (x,), (v,))[1], flat, key, m)

    return jax.vmap(lane)(lanes)


def stability_edge(weights: Sequence[ArrayLike] | PretrainResult, task: Task | Dataset | None = None,
                   **kwargs: Any) -> float | np.ndarray:
    r"""The stability edge :math:`\eta_{edge} = 2/\lambda_{max}` of gradient descent at the given weights.

    GD with :math:`\eta > \eta_{edge}` cannot settle at (or near) these weights: the top Hessian
    direction is multiplied by :math:`|1 - \eta\lambda_{max}| > 1` every step. Arguments as in
    :func:`sharpness`; returns the same shape.
    """
    return 2.0 / sharpness(weights, task, **kwargs)


# ----------------------------------------------------------------------------- closed form


def _input_variances(task, d_in):
    """Variances of the inputs along the teacher's right singular vectors ``(d_in,)``, or an error if
    the covariance is not diagonal in that basis."""
    if not isinstance(task, Task):
        sigma = _nonneg(task, "task")
        if sigma.ndim != 1 or sigma.size == 0:
            raise ValueError(f"task must be a Task or a 1-D array of teacher singular values, got shape {sigma.shape}")
        return np.sort(sigma)[::-1], np.ones(d_in)
    A = np.asarray(task.teacher, np.float64)
    cov = np.asarray(task.input_cov, np.float64)
    _, sig, Vt = np.linalg.svd(A, full_matrices=True)
    C = Vt @ cov @ Vt.T
    r = int(np.sum(sig > 1e-12 * max(sig.max(initial=0.0), 1e-300)))
    # the null space of A has no preferred basis: diagonalise the covariance there
    w, Q = np.linalg.eigh(C[r:, r:])
    R = np.eye(d_in)
    R[r:, r:] = Q
    C = R.T @ C @ R
    off = C - np.diag(np.diag(C))
    if np.max(np.abs(off), initial=0.0) > 1e-9 * max(np.max(np.abs(C)), 1e-300):
        raise ValueError("task.input_cov must be diagonal in the basis of the teacher's right singular vectors "
                         "for the closed-form sharpness (aligned networks); use lo.theory.sharpness(weights, task)")
    return sig, np.diag(C).copy()


def sharpness_from_spectrum(s: ArrayLike, task: Task | ArrayLike, widths: DeepLinear | Sequence[int]) -> np.ndarray:
    r"""Closed-form sharpness of a balanced, aligned network with learnt spectrum ``s``.

    With :math:`W_l = U_l\operatorname{diag}(a)U_{l-1}^\top`, :math:`a = s^{1/L}`, :math:`U_0 = V`,
    :math:`U_L = U` (the teacher's singular vectors) and an input covariance diagonal in the basis
    :math:`V`, :math:`\Sigma = V\operatorname{diag}(\lambda)V^\top`, the Hessian is block diagonal:
    one block per unordered pair :math:`\{p, q\}` of basis indices, on the entries
    :math:`x_l = (V_l)_{pq}`, :math:`y_l = (V_l)_{qp}` of all layers (``docs/theory.md``, section 7.1):

    .. math:: v^\top H v = \lambda_q\Big(\sum_l a_p^{L-l}a_q^{l-1}x_l\Big)^2 + \lambda_p\Big(\sum_l a_q^{L-l}a_p^{l-1}y_l\Big)^2
              + 2\sum_{l<m}\big(\rho_p\,a_p^{L-m+l-1}a_q^{m-l-1}x_m y_l + \rho_q\,a_q^{L-m+l-1}a_p^{m-l-1}y_m x_l\big),

    :math:`\rho_i = (s_i - \sigma_i)\lambda_i` the residual. :math:`\lambda_{max}` is the largest
    eigenvalue over all blocks (``numpy.linalg.eigvalsh`` of :math:`\le 2L\times 2L` matrices). At the
    minimum (:math:`s = \sigma`) it is the top mode's :math:`L\lambda_1\sigma_1^{2-2/L}`; away from it
    the residual terms count (near :math:`s = 0` at depth 2 it is :math:`\max_i\sigma_i\lambda_i`).

    Args:
      s: learnt spectrum ``(..., k')``, :math:`k' \le k = \min(\text{widths})`, descending as the
        teacher's; missing modes are 0.
      task: a :class:`~linoverfit.Task` whose input covariance is diagonal in the basis of the
        teacher's right singular vectors, or the teacher's singular values (then :math:`\Sigma = I`).
      widths: ``(d_in, h_1, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`.

    Returns the sharpness with the leading shape of ``s``.

    Examples:
      >>> import linoverfit as lo
      >>> float(lo.theory.curvature.sharpness_from_spectrum([1.0, 0.5], [1.0, 0.5], widths=(2, 2, 2)))  # 2 sigma_1
      2.0
    """
    widths = _widths(widths)
    L = len(widths) - 1
    d_in, d_out = widths[0], widths[-1]
    if not isinstance(task, (np.ndarray, list, tuple, float, int)):
        if isinstance(task, Task) and (task.d_in, task.d_out) != (d_in, d_out):
            raise ValueError(f"task maps {task.d_in} -> {task.d_out} but widths are {widths}")
    sigma, lam = _input_variances(task, d_in)
    k = min(widths)
    s = _nonneg(s, "s")
    if s.ndim == 0 or s.shape[-1] > k:
        raise ValueError(f"s must have a last axis of at most min(widths) = {k} modes, got shape {s.shape}")
    N = max(widths)
    lead = s.shape[:-1]
    a = np.zeros(lead + (N,))
    a[..., : s.shape[-1]] = s ** (1.0 / L)
    lam_full = np.zeros(N)
    lam_full[:d_in] = lam
    sig_full = np.zeros(N)
    nd = min(sigma.size, d_in, d_out)
    sig_full[:nd] = sigma[:nd]
    rho = np.zeros(lead + (N,))
    diag_n = min(d_in, d_out)
    rho[..., :diag_n] = ((a ** L) - sig_full)[..., :diag_n] * lam_full[:diag_n]

    p, q = np.triu_indices(N)
    ap, aq = a[..., p], a[..., q]  # (..., npairs)

    def pw(x, e):  # x**e with 0**0 = 1 (an empty product of layers is the identity)
        return np.power(x, e) if e > 0 else np.ones_like(x)

    ls = np.arange(1, L + 1)
    n = np.asarray(widths)
    # x_l = (V_l)_{pq} exists if p < n_l and q < n_{l-1}; y_l = (V_l)_{qp} if q < n_l, p < n_{l-1}, p != q
    ex = (p[:, None] < n[ls][None, :]) & (q[:, None] < n[ls - 1][None, :])
    ey = (q[:, None] < n[ls][None, :]) & (p[:, None] < n[ls - 1][None, :]) & (p != q)[:, None]
    cx = np.stack([pw(ap, L - l) * pw(aq, l - 1) for l in ls], -1)  # (..., npairs, L)
    cy = np.stack([pw(aq, L - l) * pw(ap, l - 1) for l in ls], -1)
    H = np.zeros(lead + (p.size, 2 * L, 2 * L))
    H[..., :L, :L] = lam_full[q][:, None, None] * cx[..., :, None] * cx[..., None, :]
    H[..., L:, L:] = lam_full[p][:, None, None] * cy[..., :, None] * cy[..., None, :]
    rp, rq = rho[..., p], rho[..., q]
    for m_ in range(2, L + 1):
        for l_ in range(1, m_):
            i, j = m_ - 1, l_ - 1
            c1 = rp * pw(ap, L - m_ + l_ - 1) * pw(aq, m_ - l_ - 1)  # x_m y_l
            c2 = rq * pw(aq, L - m_ + l_ - 1) * pw(ap, m_ - l_ - 1)  # y_m x_l
            diag_pair = p == q  # one variable set: x_m x_l, counted once
            H[..., i, L + j] += np.where(diag_pair, 0.0, c1)
            H[..., L + j, i] += np.where(diag_pair, 0.0, c1)
            H[..., L + i, j] += np.where(diag_pair, 0.0, c2)
            H[..., j, L + i] += np.where(diag_pair, 0.0, c2)
            H[..., i, j] += np.where(diag_pair, c1, 0.0)
            H[..., j, i] += np.where(diag_pair, c1, 0.0)
    exists = np.concatenate([ex, ey], axis=-1)  # (npairs, 2L)
    # absent entries: decouple them at a value below every real eigenvalue (Gershgorin)
    H = H * (exists[:, :, None] & exists[:, None, :])
    bound = 1.0 + np.sum(np.abs(H), axis=(-2, -1), keepdims=True)[..., 0]
    idx = np.arange(2 * L)
    H[..., idx, idx] = np.where(exists, H[..., idx, idx], -bound)
    return np.max(np.linalg.eigvalsh(H)[..., -1], axis=-1)


def check_edge(lr, edge, what: str, stacklevel: int = 3):
    """``lr >= edge`` as a boolean array; warns with :class:`PastEdgeWarning` where any is."""
    lr = np.asarray(lr, np.float64)
    past = lr >= edge
    if np.any(past):
        warnings.warn(
            f"{what}: learning rate(s) {np.unique(np.broadcast_to(lr, past.shape)[past])[:5]} at or past the "
            f"stability edge 2/lambda_max = {float(np.min(edge)):.4g}: gradient descent does not converge "
            "there and the prediction does not describe it (marked in the result's past_edge)",
            PastEdgeWarning,
            stacklevel=stacklevel,
        )
    return past

r"""Function-space gradient flow of balanced deep linear networks.

If the layers are balanced, :math:`W_{l+1}^\top W_{l+1} = W_l W_l^\top` (preserved by gradient flow),
the end-to-end map :math:`P = W_L\cdots W_1` follows a closed ODE (Arora, Cohen & Hazan 2018;
``docs/theory.md``, section 4):

.. math:: \dot P = -\sum_{j=1}^{L} (PP^\top)^{\frac{L-j}{L}}\,\nabla L(P)\,(P^\top P)^{\frac{j-1}{L}},
          \qquad \nabla L(P) = (P - A)\Sigma.

With the full SVD :math:`P = U\operatorname{diag}(s)V^\top` (zeros padded) this is
:math:`\dot P = -U\big[(U^\top \nabla L\, V)\odot K\big]V^\top`,
:math:`K_{ab} = \sum_j s_a^{2(L-j)/L} s_b^{2(j-1)/L}` (with :math:`0^0 = 1`), e.g. :math:`K_{ab} = s_a + s_b`
at depth 2. Integrating it from each checkpoint's :math:`P` predicts fine-tuning without parameters
(:mod:`~linoverfit.theory.forgetting`). The old paths ``linoverfit.theory.flow.predict_finetune``,
``first_order_forgetting`` and ``FinetunePrediction`` work until 0.3.0 with a ``DeprecationWarning``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import solve_ivp

from .. import deprecation as _deprecation
from ..tasks import Task
from ._args import _depth, _lr, _nonneg
from ._gd import _gd_order, _integrate_gd
from ._layer_flow import _balanced_factors, _integrate_layers, _riccati_depth2

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


__all__ = ["end_to_end_velocity", "end_to_end_flow"]


def _task(task, name: str):
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
      >>> V = lo.theory.flow.end_to_end_velocity(0.5 * np.eye(2), task, depth=2)   # -(s + s)(s - 1) = 0.5
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
    use :func:`~linoverfit.theory.forgetting.predict_finetune` on the :class:`~linoverfit.PretrainResult`); gradient descent with
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
      >>> P = lo.theory.flow.end_to_end_flow(1e-3 * np.eye(2), task, t=[0.0, 20.0], depth=2)
      >>> P.shape
      (2, 2, 2)
      >>> print(np.round(np.diag(P[1]), 4))        # the logistic modes of lo.theory.modes.mode_trajectory
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


def _flow_lr(lr):
    return _lr(lr)


# moved to linoverfit.theory.forgetting in 0.2.0
for _old in ("predict_finetune", "first_order_forgetting", "FinetunePrediction"):
    _deprecation.deprecate(f"{__name__}.{_old}", f"linoverfit.theory.forgetting.{_old}")


def __getattr__(name: str):
    return _deprecation.lookup(__name__, name)

r"""Singular-mode dynamics of balanced, teacher-aligned deep linear networks under gradient flow.

Setting (derived in ``docs/theory.md``, section 1): input covariance :math:`\Sigma = I`, teacher
:math:`A = U\operatorname{diag}(\sigma)V^\top`, and weights that are balanced and aligned,
:math:`W_l = U_l \operatorname{diag}(a) U_{l-1}^\top` with :math:`U_0 = V`, :math:`U_L = U`.
Gradient flow keeps this form, every mode evolves on its own, and with weight decay
:math:`\lambda` on every layer the per-layer value obeys
:math:`\dot a = a^{L-1}(\sigma - a^L) - \lambda a`, so the mode's end-to-end value
:math:`s = a^L` obeys

.. math:: \dot s = L\, s^{2-2/L}(\sigma - s) - L\lambda s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .. import validation as _v

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear


__all__ = ["mode_trajectory", "mode_velocity", "mode_asymptote", "gaussian_init_s0"]


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


def _layer_field(a, sigma, L, lam):
    """Per-layer value's field f(a) = a^(L-1)(sigma - a^L) - lam a and its derivatives f', f''."""
    aL = a**L
    f = np.power(a, L - 1) * (sigma - aL) - lam * a
    df = (L - 1) * np.power(a, L - 2) * (sigma - aL) - L * np.power(a, 2 * L - 2) - lam if L > 1 else -(1.0 + lam) + 0 * a
    if L >= 3:
        d2f = (L - 1) * (L - 2) * sigma * np.power(a, L - 3) - (2 * L - 1) * (2 * L - 2) * np.power(a, 2 * L - 3)
    elif L == 2:
        d2f = -6.0 * a
    else:
        d2f = 0.0 * a
    return f, df, d2f


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


def mode_velocity(s: ArrayLike, sigma: ArrayLike, depth: int = 2, weight_decay: float = 0.0, *,
                  lr: float | None = None) -> np.ndarray:
    r"""Right-hand side of the mode ODE, :math:`\dot s = L s^{2-2/L}(\sigma - s) - L\lambda s`.

    For depth :math:`L = 1` this reads :math:`\dot s = \sigma - s - \lambda s` (plain linear
    regression, where :math:`s^{0} = 1` even at :math:`s = 0`).

    With a learning rate :math:`\eta` it is the velocity of gradient *descent*: the modified
    equation (backward error analysis, ``docs/theory.md`` section 1.6) of the per-layer map
    :math:`a \mapsto a + \eta f(a)`, :math:`f(a) = a^{L-1}(\sigma - a^L) - \lambda a`, to second order,

    .. math:: \dot a = f - \tfrac\eta2 f'f + \eta^2\big(\tfrac13 f'^2 f + \tfrac1{12} f'' f^2\big), \qquad \dot s = L a^{L-1}\dot a,

    whose solution passes through the GD iterates up to :math:`O(\eta^3)` per unit time.

    Args:
      s: current mode values :math:`s \ge 0`, any shape.
      sigma: teacher singular values, broadcastable against ``s``.
      depth: :math:`L \ge 1`.
      weight_decay: :math:`\lambda \ge 0` on every layer.
      lr: ``None`` (gradient flow) or the GD learning rate :math:`\eta > 0`.

    Returns :math:`\dot s` with the broadcast shape of ``s`` and ``sigma``.

    Examples:
      >>> import linoverfit as lo
      >>> float(lo.theory.mode_velocity(0.5, 1.0, depth=2))   # 2 s (sigma - s)
      0.5
    """
    L = _depth(depth)
    s = _nonneg(s, "s")
    sigma = _nonneg(sigma, "sigma")
    lam = _weight_decay(weight_decay)
    eta = _lr(lr)
    if eta is None:
        return L * np.power(s, 2.0 - 2.0 / L) * (sigma - s) - L * lam * s
    a = s ** (1.0 / L)
    f, df, d2f = _layer_field(a, sigma, L, lam)
    adot = f - 0.5 * eta * df * f + eta**2 * (df * df * f / 3.0 + d2f * f * f / 12.0)
    return L * np.power(a, L - 1) * adot


def mode_asymptote(sigma: ArrayLike, s0: ArrayLike, depth: int = 2, weight_decay: float = 0.0) -> np.ndarray:
    r"""Limit :math:`s(\infty)` of each mode started at :math:`s_0 > 0` (the stable fixed point it reaches).

    * :math:`L = 1`: :math:`\sigma / (1 + \lambda)`.
    * :math:`L = 2`: :math:`\max(\sigma - \lambda, 0)`.
    * :math:`L \ge 3`: the fixed points solve :math:`s^{1-2/L}(\sigma - s) = \lambda`; the mode
      converges to the largest root if it starts above the smaller root, otherwise to 0
      (with weight decay a deep net can leave small modes unlearnt for ever).
      Without weight decay it is :math:`\sigma`.

    ``sigma`` and ``s0`` broadcast; returns their broadcast shape. ``s0 = 0`` stays at 0
    (for depth 1, where 0 is not a fixed point, the depth-1 limit is returned).
    """
    from scipy.optimize import brentq

    L = _depth(depth)
    sigma, s0 = np.broadcast_arrays(_nonneg(sigma, "sigma"), _nonneg(s0, "s0"))
    lam = _weight_decay(weight_decay)
    if L == 1:
        return sigma / (1.0 + lam)
    if L == 2:
        return np.where(s0 > 0, np.maximum(sigma - lam, 0.0), 0.0)
    if lam == 0:
        return np.where(s0 > 0, sigma, 0.0)
    out = np.zeros(sigma.shape)
    e = 1.0 - 2.0 / L
    for idx in np.ndindex(sigma.shape):
        sig, start = float(sigma[idx]), float(s0[idx])
        if sig == 0 or start == 0:
            continue
        h = lambda s: s**e * (sig - s) - lam  # noqa: E731  (growth rate per unit s, up to L)
        peak = sig * e / (1.0 + e)  # argmax of s^e (sigma - s)
        if h(peak) <= 0:
            continue  # decay beats growth everywhere: the mode dies
        low = brentq(h, 0.0, peak, xtol=1e-300, rtol=4 * np.finfo(float).eps)
        if start > low:  # above the unstable root: grows (or shrinks) to the stable one
            out[idx] = brentq(h, peak, sig, xtol=1e-300, rtol=4 * np.finfo(float).eps)
    return out


def mode_trajectory(sigma: ArrayLike, t: ArrayLike, s0: ArrayLike, depth: int = 2, weight_decay: float = 0.0, *,
                    lr: float | None = None, rtol: float = 1e-11) -> np.ndarray:
    r"""Value :math:`s_i(t)` of each teacher mode under gradient flow from a balanced aligned init.

    Solves :math:`\dot s = L s^{2-2/L}(\sigma - s) - L\lambda s`, :math:`s(0) = s_0`
    (``docs/theory.md``, section 1), exactly:

    * :math:`L = 1`: :math:`s = s_\infty + (s_0 - s_\infty)e^{-(1+\lambda)t}`, :math:`s_\infty = \sigma/(1+\lambda)`.
    * :math:`L = 2`: the logistic :math:`s = \dfrac{r}{1 + (r/s_0 - 1)e^{-2rt}}` with
      :math:`r = \sigma - \lambda` (evaluated in a form that is exact and overflow-free for
      :math:`r \le 0`, where the mode decays, :math:`r = 0` giving :math:`s_0/(1 + 2 s_0 t)`).
    * :math:`L \ge 3`: for :math:`\sigma = \lambda = 0` the closed form
      :math:`s^{-(2-2/L)} = s_0^{-(2-2/L)} + 2(L-1)t`; otherwise the ODE for :math:`\log s` is
      integrated with ``scipy.integrate.solve_ivp`` (DOP853, or LSODA over horizons long enough
      to make the relaxation of learnt modes stiff; tolerance ``rtol`` relative on :math:`s`,
      all modes at once).

    With a learning rate ``lr`` :math:`= \eta` it is gradient *descent* instead, exactly: an aligned
    balanced network stays aligned under GD, every layer of mode :math:`i` carries the same value
    :math:`a_i = s_i^{1/L}`, and one step is the scalar map

    .. math:: a \mapsto a + \eta\big(a^{L-1}(\sigma - a^L) - \lambda a\big),

    iterated ``t / lr`` times (a compiled ``lax.fori_loop``, float64; depth 1 in closed form,
    :math:`s_k = s_\infty + (s_0 - s_\infty)(1 - \eta(1+\lambda))^k`). Between steps (``t / lr`` not
    an integer) the last step is taken for its fraction. A learning rate at or past the stability
    edge :math:`2/(L\sigma_1^{2-2/L})` of the learnt minimum warns (:class:`PastEdgeWarning`).

    Args:
      sigma: teacher singular values :math:`\sigma_i \ge 0`, shape ``(M,)`` (any shape ``S``).
      t: gradient-flow times :math:`t = \eta\cdot\text{steps} \ge 0`, shape ``(T,)`` (any shape, any order).
      s0: initial mode value :math:`s_0 \ge 0` (for ``net.init(..., scheme="aligned", scale=c)``
        it is :math:`c^L`); broadcast against ``sigma``.
      depth: :math:`L \ge 1`.
      weight_decay: :math:`\lambda \ge 0`, applied to every layer (``lo.pretrain(weight_decay=)``).
      lr: ``None`` (gradient flow, the default) or the GD learning rate :math:`\eta > 0` (exact GD).
      rtol: relative accuracy of the ODE solve (depth >= 3 flow only).

    Returns an array of shape ``t.shape + broadcast(sigma, s0).shape``: row ``k`` is the learnt
    spectrum at time ``t[k]`` (the leading axis is the checkpoint axis, as in the simulation results).

    The flow (``lr=None``) differs from GD by :math:`O(\eta)` (``docs/theory.md`` eq. (1.9));
    ``lr=`` removes that gap (``tests/test_theory_modes.py``).

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> s = lo.theory.mode_trajectory([1.0, 0.5], t=[0.0, 5.0, 50.0], s0=1e-3)
      >>> s.shape
      (3, 2)
      >>> print(np.round(s, 4))
      [[0.001  0.001 ]
       [0.9566 0.1146]
       [1.     0.5   ]]
    """
    L = _depth(depth)
    sigma = _nonneg(sigma, "sigma")
    t = _nonneg(t, "t")
    s0 = _nonneg(s0, "s0")
    lam = _weight_decay(weight_decay)
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    sigma, s0 = np.broadcast_arrays(sigma, s0)
    eta = _lr(lr)
    if eta is not None:
        _warn_past_edge(eta, sigma, L, lam)
        return _gd_trajectory(sigma, t, s0, L, lam, eta)
    tt = t.reshape(t.shape + (1,) * sigma.ndim)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if L == 1:
            s_inf = sigma / (1.0 + lam)
            return s_inf + (s0 - s_inf) * np.exp(-(1.0 + lam) * tt)
        if L == 2:
            r = sigma - lam
            x = 2.0 * r * tt
            # (1 - e^{-x}) / x, equal to 1 at x = 0; overflow for r < 0 gives inf, i.e. s -> 0
            phi = np.where(x == 0, 1.0, -np.expm1(-x) / np.where(x == 0, 1.0, x))
            out = s0 / (np.exp(-x) + s0 * 2.0 * tt * phi)
            return np.where(s0 > 0, out, 0.0)
    return _deep_trajectory(sigma, t, s0, L, lam, rtol)


def _warn_past_edge(eta, sigma, L, lam):
    from .curvature import check_edge

    top = float(np.max(sigma, initial=0.0))
    if top > 0:  # sharpness at the learnt minimum of an aligned net (docs/theory.md, section 7.1)
        check_edge(eta, 2.0 / (L * top ** (2.0 - 2.0 / L) + lam), "mode_trajectory", stacklevel=4)


def _gd_trajectory(sigma, t, s0, L, lam, eta):
    """Exact GD on the per-layer values of aligned balanced modes; ``t.shape + sigma.shape``."""
    n_float = t / eta
    n = np.round(n_float)
    near = np.abs(n_float - n) <= 1e-9 * np.maximum(1.0, n_float)
    n = np.where(near, n, np.floor(n_float))
    frac = np.where(near, 0.0, n_float - n)
    tt = (n.reshape(t.shape + (1,) * sigma.ndim), frac.reshape(t.shape + (1,) * sigma.ndim))
    with np.errstate(over="ignore", invalid="ignore"):
        if L == 1:
            s_inf = sigma / (1.0 + lam)
            rate = 1.0 - eta * (1.0 + lam)
            return s_inf + (s0 - s_inf) * rate ** tt[0] * (1.0 - eta * (1.0 + lam) * tt[1])
    order, inverse = np.unique(n.ravel(), return_inverse=True)
    seg = np.diff(np.concatenate([[0], order])).astype(np.int64)
    K = 1 << max(int(np.ceil(np.log2(max(seg.size, 1)))), 0)  # pad: one compilation per power of 2
    seg = np.concatenate([seg, np.zeros(K - seg.size, np.int64)])
    a0 = s0.ravel() ** (1.0 / L)
    with jax.enable_x64(True):
        a = np.asarray(_iterate_modes(jnp.asarray(a0), jnp.asarray(sigma.ravel(), jnp.float64), float(lam), float(eta),
                                      jnp.asarray(seg), L))[: order.size]
    a = a[inverse].reshape(t.shape + sigma.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        f = np.power(a, L - 1) * (sigma - a**L) - lam * a
        a = a + tt[1] * eta * f  # the fraction of the next step
        return np.where(s0 > 0, a**L, 0.0)


@partial(jax.jit, static_argnames=("L",))
def _iterate_modes(a0, sig, lam, eta, seg, L):
    def step(_, a):
        return a + eta * (a ** (L - 1) * (sig - a**L) - lam * a)

    def segment(a, n):
        a = jax.lax.fori_loop(jnp.zeros((), n.dtype), n, step, a)
        return a, a

    return jax.lax.scan(segment, a0, seg)[1]


def _deep_trajectory(sigma, t, s0, L, lam, rtol):
    """Depth >= 3: closed form where sigma = lam = 0, the log-space ODE elsewhere."""
    out = np.zeros(t.shape + sigma.shape)
    flat_sig, flat_s0 = sigma.ravel(), s0.ravel()
    flat_out = out.reshape(t.size, flat_sig.size)
    p = 2.0 - 2.0 / L
    closed = (flat_s0 > 0) & (flat_sig == 0) & (lam == 0)
    if np.any(closed):
        tc = t.reshape(-1, 1)
        flat_out[:, closed] = (flat_s0[closed] ** -p + 2.0 * (L - 1) * tc) ** (-1.0 / p)
    ode = (flat_s0 > 0) & ~closed
    if np.any(ode) and t.size:
        sig, x0 = flat_sig[ode], np.log(flat_s0[ode])
        order = np.unique(t.ravel())  # sorted, deduplicated evaluation times

        def rhs(_, x):
            # d log s / dt = L s^{1-2/L} (sigma - s) - L lam
            s = np.exp(x)
            return L * np.exp((1.0 - 2.0 / L) * x) * (sig - s) - L * lam

        def jac(_, x):
            s, e = np.exp(x), 1.0 - 2.0 / L
            return np.diag(L * np.exp(e * x) * (e * (sig - s) - s))

        if order[-1] == 0:
            xs = np.broadcast_to(x0[:, None], (x0.size, order.size))
        else:
            # learnt modes relax at rate ~ L sigma^(2-2/L); over horizons of many relaxation times an
            # explicit scheme is stability-limited (stiff), so switch to LSODA there, with a tighter
            # tolerance to match DOP853's accuracy (both ~1e-10 relative at rtol 1e-11, measured)
            stiffness = order[-1] * L * (float(np.max(sig)) ** (2.0 - 2.0 / L) + lam)
            method, tol, kw = ("DOP853", rtol, {}) if stiffness < 2e4 else ("LSODA", max(rtol * 1e-2, 1e-14), {"jac": jac})
            # atol on log s is a relative tolerance on s
            sol = solve_ivp(rhs, (0.0, order[-1]), x0, method=method, t_eval=order, rtol=tol, atol=tol, **kw)
            if not sol.success:  # pragma: no cover - the ODE is smooth and bounded
                raise RuntimeError(f"mode ODE failed: {sol.message}")
            xs = sol.y
        pos = np.searchsorted(order, t.ravel())
        flat_out[:, ode] = np.exp(xs[:, pos].T)
    return flat_out.reshape(out.shape)


def _mode_solution(sigma, s0, L, lam, t_end, rtol=1e-11, kappa=None):
    """``s(t)`` of every mode as a function, from ONE solve up to ``t_end`` (dense output; the turning
    point evaluates it hundreds of times). ``kappa``: per-mode input variance (None: 1), which scales
    the mode's gradient: ``ds/dt = L kappa s^(2-2/L) (sigma - s) - L lam s``. Returns ``fn(t) -> (T, M)``."""
    sigma = np.asarray(sigma, np.float64)
    s0 = np.broadcast_to(np.asarray(s0, np.float64), sigma.shape)
    kappa = np.ones(sigma.shape) if kappa is None else np.broadcast_to(np.asarray(kappa, np.float64), sigma.shape)
    if L <= 2:
        def closed(t):
            tt = np.asarray(t, np.float64)[..., None]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if L == 1:  # ds/dt = kappa sigma - (kappa + lam) s
                    rate = kappa + lam
                    s_inf = np.where(rate > 0, kappa * sigma / np.where(rate > 0, rate, 1.0), s0)
                    return s_inf + (s0 - s_inf) * np.exp(-rate * tt)
                # logistic ds/dt = 2 s (r - kappa s), r = kappa sigma - lam
                x = 2.0 * (kappa * sigma - lam) * tt
                phi = np.where(x == 0, 1.0, -np.expm1(-x) / np.where(x == 0, 1.0, x))
                return np.where(s0 > 0, s0 / (np.exp(-x) + s0 * 2.0 * kappa * tt * phi), 0.0)
        return closed
    live = s0 > 0
    sig, kap, x0 = sigma[live], kappa[live], np.log(s0[live])
    e = 1.0 - 2.0 / L

    def rhs(_, x):  # d log s / dt
        return L * kap * np.exp(e * x) * (sig - np.exp(x)) - L * lam

    def jac(_, x):
        s = np.exp(x)
        return np.diag(L * kap * np.exp(e * x) * (e * (sig - s) - s))

    if x0.size == 0 or t_end <= 0:
        return lambda t: np.where(live, s0, 0.0) * np.ones(np.shape(t) + (1,))
    y0 = s0[live] / np.where(sig > 0, sig, 1.0)
    if lam == 0 and np.all(sig > 0) and np.all(kap > 0) and np.all(y0 < 1):
        return _universal_modes(sigma, s0, kappa, live, L, t_end, rtol)
    stiffness = t_end * L * (float(np.max(kap * sig ** (2.0 - 2.0 / L))) + lam)
    method, tol, kw = ("DOP853", rtol, {}) if stiffness < 2e4 else ("LSODA", max(rtol * 1e-2, 1e-14), {"jac": jac})
    sol = solve_ivp(rhs, (0.0, float(t_end)), x0, method=method, dense_output=True, rtol=tol, atol=tol, **kw)
    if not sol.success:  # pragma: no cover - the ODE is smooth and bounded
        raise RuntimeError(f"mode ODE failed: {sol.message}")

    def dense(t):
        t = np.asarray(t, np.float64)
        out = np.zeros(t.shape + sigma.shape)
        xs = sol.sol(np.clip(t.ravel(), 0.0, t_end))  # (M_live, T)
        out.reshape(t.size, -1)[:, live.ravel()] = np.exp(xs.T)
        return out

    return dense


def _universal_modes(sigma, s0, kappa, live, L, t_end, rtol):
    r"""Without weight decay every mode is one universal curve: with :math:`y = s/\sigma` and
    :math:`\tau = \kappa\sigma^{2-2/L}t`, :math:`\mathrm dy/\mathrm d\tau = L y^{2-2/L}(1 - y)` for all modes.
    Solve it once (dense, from the smallest start) and shift each mode in :math:`\tau` to its start."""
    sig, kap = sigma[live], kappa[live]
    y0 = s0[live] / sig
    rate = kap * sig ** (2.0 - 2.0 / L)  # tau per unit t
    e = 1.0 - 2.0 / L
    z0 = float(np.log(np.min(y0)))

    def rhs(_, z):  # z = log y
        return L * np.exp(e * z) * (1.0 - np.exp(z))

    def jac(_, z):
        z = float(z[0])
        y = np.exp(z)
        return np.array([[L * np.exp(e * z) * (e * (1.0 - y) - y)]])

    # time for the smallest start to pass every other start, then the longest horizon after that
    lo_ = np.log(y0)
    grow = (y0 ** (-(1.0 - 2.0 / L)) - np.min(y0) ** (-(1.0 - 2.0 / L))) / (-(L - 2.0))  # early-phase estimate
    tau_end = float(np.max(np.abs(grow)) * 2.0 + np.max(rate) * t_end + 1.0)
    sol = solve_ivp(rhs, (0.0, tau_end), [z0], method="LSODA", jac=jac, dense_output=True,
                    rtol=max(rtol * 1e-2, 1e-14), atol=max(rtol * 1e-2, 1e-14))
    if not sol.success:  # pragma: no cover - the ODE is smooth and bounded
        raise RuntimeError(f"mode ODE failed: {sol.message}")
    # each mode's shift: the tau at which the universal curve reaches its start (monotone: bisection)
    a, b = np.zeros(y0.size), np.full(y0.size, tau_end)
    for _ in range(200):
        mid = 0.5 * (a + b)
        below = sol.sol(mid)[0] < lo_
        a, b = np.where(below, mid, a), np.where(below, b, mid)
        if np.all(b - a <= 4 * np.finfo(float).eps * np.maximum(b, 1.0)):
            break
    shift = 0.5 * (a + b)
    if np.any(shift + rate * t_end > tau_end):  # pragma: no cover - the horizon estimate is generous
        raise RuntimeError("universal mode curve: horizon too short")

    def dense(t):
        t = np.asarray(t, np.float64)
        out = np.zeros(t.shape + sigma.shape)
        tau = shift[None, :] + rate[None, :] * np.clip(t.ravel(), 0.0, t_end)[:, None]
        out.reshape(t.size, -1)[:, live.ravel()] = sig * np.exp(sol.sol(tau.ravel())[0].reshape(tau.shape))
        return out

    return dense


class UnderivedWarning(UserWarning):
    """A closed form used outside the conditions it was derived under; the message quotes its measured
    relative error, e.g. :math:`T^*_{pred} / T^*_{sim} - 1`."""


def gaussian_init_s0(scale: float, widths: DeepLinear | Sequence[int], modes: int | None = None) -> np.ndarray:
    r"""Effective initial mode values of a network from a small Gaussian init (a heuristic).

    Depth 2 (derived, ``docs/theory.md`` section 1.7): with :math:`W_l` entries iid
    :math:`\mathcal N(0,\varepsilon^2)` and hidden width :math:`h`, the early, linear phase amplifies
    for mode :math:`i` the hidden vector :math:`x_i = (W_1 v_i + W_2^\top u_i)/2` by
    :math:`e^{\sigma_i t}` and the mode follows the aligned logistic with
    :math:`s_0 = \lVert x_i\rVert^2`, :math:`\mathbb E\lVert x_i\rVert^2 = \varepsilon^2 h/2`. Each
    earlier, larger mode then claims one hidden direction and damps :math:`x_i` along it, so

    .. math:: s_{0,i} \approx \tfrac12\varepsilon^2 (h - i + 1), \qquad i = 1, \dots, k.

    Only the mean is modelled: :math:`\lVert x_i\rVert^2` fluctuates by a factor
    :math:`1 \pm \sqrt{2/h}`, which moves a mode's learning time by :math:`\pm\sqrt{2/h}/(2\sigma_i)`.

    Depth :math:`L \ge 3` (NOT derived): returns the per-layer extension
    :math:`s_{0,i} = (\tfrac12\varepsilon^2 (h - i + 1))^{L/2}` (``h`` = the first hidden width) and
    emits :class:`UnderivedWarning`: the early phase is not linear there, modes can be learnt out of
    order, and the spectrum-only turning point from these values was measured 21% early to more
    than 3x late (or no turning point) against GD (section 1.7 of the theory notes). Predict a
    Gaussian-init run at depth >= 3 from its checkpoints instead (``predict_finetune(run)``,
    ``expected_perturbed_loss`` on ``run.weights``).

    Args:
      scale: :math:`\varepsilon > 0`, the init standard deviation (``net.init(scale=, scheme="gaussian")``).
      widths: ``(d_in, h, ..., d_out)`` or a :class:`~linoverfit.DeepLinear`.
      modes: number of modes :math:`k` (default ``min(widths)``).

    Returns ``(k,)`` initial values, for the ``s0`` argument of :func:`mode_trajectory` and
    :func:`~linoverfit.theory.turning_point`.

    Examples:
      >>> import linoverfit as lo
      >>> lo.theory.gaussian_init_s0(0.1, (4, 4, 4))
      array([0.02 , 0.015, 0.01 , 0.005])
    """
    import warnings

    from .perturbation import _widths

    widths = _widths(widths)
    if len(widths) < 3:
        raise ValueError(f"widths must describe a network of depth >= 2 (d_in, h, ..., d_out), got {widths}")
    eps = float(np.asarray(scale))
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"scale must be > 0, got {scale!r}")
    k = min(widths) if modes is None else _v.positive_int(modes, "modes")
    if not 1 <= k <= min(widths):
        raise ValueError(f"modes must be in [1, {min(widths)}], got {modes!r}")
    h, L = widths[1], len(widths) - 1
    per_layer = 0.5 * eps**2 * (h - np.arange(k))
    if L == 2:
        return per_layer
    warnings.warn(
        f"gaussian_init_s0 at depth {L} is not derived: turning points predicted from these values were "
        "measured 21% early to more than 3x late (or absent) against GD from a Gaussian init (depth 3 and 4, "
        "widths 16, scale 0.01, gamma 0.03-0.05, 3 seeds; docs/theory.md section 1.7). Predict a Gaussian-init "
        "run from its checkpoints instead (predict_finetune(run), expected_perturbed_loss on run.weights).",
        UnderivedWarning, stacklevel=2)
    return per_layer ** (L / 2)

r"""How :mod:`~linoverfit.theory.modes` computes the mode trajectories :math:`s_i(t)`.

Depth 1 and 2 in closed form (:func:`_closed_modes`); gradient descent as a compiled iteration of the
per-layer map :math:`a \mapsto a + \eta(\kappa a^{L-1}(\sigma - a^L) - \lambda a)` (:func:`_gd_trajectory`);
depth :math:`L \ge 3` by the ODE for :math:`\log s` (:func:`_deep_trajectory`), and as a dense solution
from one solve (:func:`_mode_solution`, one universal curve without weight decay) for the turning-point
search, which evaluates :math:`s(t)` hundreds of times. ``docs/theory.md`` sections 1.3, 1.6, 3.6.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from ..precision import enable_x64


def _closed_modes(sigma, s0, kappa, lam, L, tt):
    """Depth 1 and 2 flow in closed form at times ``tt`` (broadcast against ``sigma``, ``s0``, ``kappa``)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if L == 1:  # ds/dt = kappa sigma - (kappa + lam) s
            rate = kappa + lam
            s_inf = np.where(rate > 0, kappa * sigma / np.where(rate > 0, rate, 1.0), s0)
            return s_inf + (s0 - s_inf) * np.exp(-rate * tt)
        # logistic ds/dt = 2 s (r - kappa s), r = kappa sigma - lam
        x = 2.0 * (kappa * sigma - lam) * tt
        # (1 - e^{-x}) / x, equal to 1 at x = 0; overflow for r < 0 gives inf, i.e. s -> 0
        phi = np.where(x == 0, 1.0, -np.expm1(-x) / np.where(x == 0, 1.0, x))
        return np.where(s0 > 0, s0 / (np.exp(-x) + s0 * 2.0 * kappa * tt * phi), 0.0)


def _log_mode_ode(sig, kap, L, lam, t_end, rtol):
    r"""The ODE for :math:`x = \log s` of modes ``sig`` (input variances ``kap``) and how to solve it up to
    ``t_end``: ``(rhs, method, tol, kwargs)`` for ``solve_ivp``. Learnt modes relax at rate
    ~ L kappa sigma^(2-2/L); over horizons of many relaxation times an explicit scheme is
    stability-limited (stiff), so LSODA with the Jacobian takes over there, with a tighter tolerance
    to match DOP853's accuracy (both ~1e-10 relative at rtol 1e-11, measured; atol on log s is a
    relative tolerance on s)."""
    e = 1.0 - 2.0 / L

    def rhs(_, x):  # d log s / dt = L kappa s^{1-2/L} (sigma - s) - L lam
        return L * kap * np.exp(e * x) * (sig - np.exp(x)) - L * lam

    def jac(_, x):
        s = np.exp(x)
        return np.diag(L * kap * np.exp(e * x) * (e * (sig - s) - s))

    stiffness = t_end * L * (float(np.max(kap * sig ** (2.0 - 2.0 / L))) + lam)
    if stiffness < 2e4:
        return rhs, "DOP853", rtol, {}
    return rhs, "LSODA", max(rtol * 1e-2, 1e-14), {"jac": jac}


def _gd_trajectory(sigma, t, s0, L, lam, eta, kappa=None):
    """Exact GD on the per-layer values of aligned balanced modes; ``t.shape + sigma.shape``."""
    kappa = np.ones(sigma.shape) if kappa is None else np.broadcast_to(np.asarray(kappa, np.float64), sigma.shape)
    n_float = t / eta
    n = np.round(n_float)
    near = np.abs(n_float - n) <= 1e-9 * np.maximum(1.0, n_float)
    n = np.where(near, n, np.floor(n_float))
    frac = np.where(near, 0.0, n_float - n)
    tt = (n.reshape(t.shape + (1,) * sigma.ndim), frac.reshape(t.shape + (1,) * sigma.ndim))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if L == 1:
            rate = kappa + lam
            s_inf = np.where(rate > 0, kappa * sigma / np.where(rate > 0, rate, 1.0), s0)
            step = 1.0 - eta * rate
            return s_inf + (s0 - s_inf) * step ** tt[0] * (1.0 - eta * rate * tt[1])
    order, inverse = np.unique(n.ravel(), return_inverse=True)
    seg = np.diff(np.concatenate([[0], order])).astype(np.int64)
    K = 1 << max(int(np.ceil(np.log2(max(seg.size, 1)))), 0)  # pad: one compilation per power of 2
    seg = np.concatenate([seg, np.zeros(K - seg.size, np.int64)])
    a0 = s0.ravel() ** (1.0 / L)
    with enable_x64(True):
        a = np.asarray(_iterate_modes(jnp.asarray(a0), jnp.asarray(sigma.ravel(), jnp.float64),
                                      jnp.asarray(kappa.ravel(), jnp.float64), float(lam), float(eta),
                                      jnp.asarray(seg), L))[: order.size]
    a = a[inverse].reshape(t.shape + sigma.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        f = kappa * np.power(a, L - 1) * (sigma - a**L) - lam * a
        a = a + tt[1] * eta * f  # the fraction of the next step
        return np.where(s0 > 0, a**L, 0.0)


@partial(jax.jit, static_argnames=("L",))
def _iterate_modes(a0, sig, kap, lam, eta, seg, L):
    def step(_, a):
        return a + eta * (kap * a ** (L - 1) * (sig - a**L) - lam * a)

    def segment(a, n):
        a = jax.lax.fori_loop(jnp.zeros((), n.dtype), n, step, a)
        return a, a

    return jax.lax.scan(segment, a0, seg)[1]


def _deep_trajectory(sigma, t, s0, L, lam, rtol, kappa=None):
    """Depth >= 3: closed form where sigma = lam = 0, the log-space ODE elsewhere (``kappa``: input variance)."""
    kappa = np.ones(sigma.shape) if kappa is None else np.broadcast_to(kappa, sigma.shape)
    out = np.zeros(t.shape + sigma.shape)
    flat_sig, flat_s0, flat_kap = sigma.ravel(), s0.ravel(), kappa.ravel()
    flat_out = out.reshape(t.size, flat_sig.size)
    p = 2.0 - 2.0 / L
    closed = (flat_s0 > 0) & (flat_sig == 0) & (lam == 0)
    if np.any(closed):
        tc = t.reshape(-1, 1)
        flat_out[:, closed] = (flat_s0[closed] ** -p + 2.0 * (L - 1) * flat_kap[closed] * tc) ** (-1.0 / p)
    ode = (flat_s0 > 0) & ~closed
    if np.any(ode) and t.size:
        sig, kap, x0 = flat_sig[ode], flat_kap[ode], np.log(flat_s0[ode])
        order = np.unique(t.ravel())  # sorted, deduplicated evaluation times
        if order[-1] == 0:
            xs = np.broadcast_to(x0[:, None], (x0.size, order.size))
        else:
            rhs, method, tol, kw = _log_mode_ode(sig, kap, L, lam, order[-1], rtol)
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
        return lambda t: _closed_modes(sigma, s0, kappa, lam, L, np.asarray(t, np.float64)[..., None])
    live = s0 > 0
    sig, kap, x0 = sigma[live], kappa[live], np.log(s0[live])
    if x0.size == 0 or t_end <= 0:
        return lambda t: np.where(live, s0, 0.0) * np.ones(np.shape(t) + (1,))
    y0 = s0[live] / np.where(sig > 0, sig, 1.0)
    if lam == 0 and np.all(sig > 0) and np.all(kap > 0) and np.all(y0 < 1):
        return _universal_modes(sigma, s0, kappa, live, L, t_end, rtol)
    rhs, method, tol, kw = _log_mode_ode(sig, kap, L, lam, t_end, rtol)
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

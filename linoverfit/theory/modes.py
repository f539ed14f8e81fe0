r"""Singular-mode dynamics of balanced, teacher-aligned deep linear networks under gradient flow.

Setting (derived in ``docs/theory.md``, section 1): input covariance :math:`\Sigma = I`, teacher
:math:`A = U\operatorname{diag}(\sigma)V^\top`, and weights that are balanced and aligned,
:math:`W_l = U_l \operatorname{diag}(a) U_{l-1}^\top` with :math:`U_0 = V`, :math:`U_L = U`.
Gradient flow keeps this form, every mode evolves on its own, and with weight decay
:math:`\lambda` on every layer the per-layer value obeys
:math:`\dot a = a^{L-1}(\sigma - a^L) - \lambda a`, so the mode's end-to-end value
:math:`s = a^L` obeys

.. math:: \dot s = L\, s^{2-2/L}(\sigma - s) - L\lambda s.

Anisotropic inputs (``docs/theory.md`` section 1.8): if the input covariance shares the teacher's right
singular vectors, :math:`\Sigma v_i = \kappa_i v_i`, the ansatz still closes and mode :math:`i` learns at
its own input variance, :math:`\dot a = \kappa a^{L-1}(\sigma - a^L) - \lambda a` and
:math:`\dot s = L\kappa s^{2-2/L}(\sigma - s) - L\lambda s` (``input_var=`` :math:`\kappa`, default 1;
:func:`input_variance` reads :math:`\kappa_i` off a Task and refuses any other covariance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import warnings

import numpy as np
from scipy.optimize import brentq

from .. import validation as _v
from ..tasks import Task
from ._args import _depth, _lr, _nonneg, _weight_decay, _widths
from ._mode_solvers import _closed_modes, _deep_trajectory, _gd_trajectory
from .curvature import check_edge

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear


__all__ = ["mode_trajectory", "mode_velocity", "mode_asymptote", "input_variance", "gaussian_init_s0", "UnderivedWarning"]


def _layer_field(a, sigma, L, lam, kappa=1.0):
    """Per-layer value's field f(a) = kappa a^(L-1)(sigma - a^L) - lam a and its derivatives f', f''."""
    aL = a**L
    f = kappa * np.power(a, L - 1) * (sigma - aL) - lam * a
    if L > 1:
        df = kappa * ((L - 1) * np.power(a, L - 2) * (sigma - aL) - L * np.power(a, 2 * L - 2)) - lam
    else:
        df = -(kappa + lam) + 0 * a
    if L >= 3:
        d2f = kappa * ((L - 1) * (L - 2) * sigma * np.power(a, L - 3) - (2 * L - 1) * (2 * L - 2) * np.power(a, 2 * L - 3))
    elif L == 2:
        d2f = -6.0 * kappa * a
    else:
        d2f = 0.0 * a
    return f, df, d2f


def _input_var(input_var, sigma) -> np.ndarray:
    """Per-mode input variance kappa >= 0 broadcast to ``sigma.shape`` (1 for ``None``), or an error naming it."""
    if input_var is None:
        return np.ones(np.shape(sigma))
    kappa = _nonneg(input_var, "input_var")
    try:
        return np.broadcast_to(kappa, np.shape(sigma)).copy()
    except ValueError:
        raise ValueError(f"input_var must be a scalar or one input variance per singular value (shape "
                         f"{np.shape(sigma)} of sigma), got shape {kappa.shape}: kappa_i = v_i^T Sigma v_i belongs "
                         "to mode i (lo.theory.modes.input_variance(task) gives them in the order of task.spectrum)") from None


def mode_velocity(s: ArrayLike, sigma: ArrayLike, depth: int = 2, weight_decay: float = 0.0, *,
                  lr: float | None = None, input_var: ArrayLike | None = None) -> np.ndarray:
    r"""Right-hand side of the mode ODE, :math:`\dot s = L\kappa s^{2-2/L}(\sigma - s) - L\lambda s`.

    :math:`\kappa` is the mode's input variance (``input_var``, default 1: :math:`\Sigma = I`); it is
    exact when the input covariance shares the teacher's right singular vectors,
    :math:`\Sigma v_i = \kappa_i v_i` (``docs/theory.md`` section 1.8). For depth :math:`L = 1` this
    reads :math:`\dot s = \kappa(\sigma - s) - \lambda s` (plain linear regression, where
    :math:`s^{0} = 1` even at :math:`s = 0`).

    With a learning rate :math:`\eta` it is the velocity of gradient *descent*: the modified
    equation (backward error analysis, ``docs/theory.md`` section 1.6) of the per-layer map
    :math:`a \mapsto a + \eta f(a)`, :math:`f(a) = \kappa a^{L-1}(\sigma - a^L) - \lambda a`, to second order,

    .. math:: \dot a = f - \tfrac\eta2 f'f + \eta^2\big(\tfrac13 f'^2 f + \tfrac1{12} f'' f^2\big), \qquad \dot s = L a^{L-1}\dot a,

    whose solution passes through the GD iterates up to :math:`O(\eta^3)` per unit time.

    Args:
      s: current mode values :math:`s \ge 0`, any shape.
      sigma: teacher singular values, broadcastable against ``s``.
      depth: :math:`L \ge 1`.
      weight_decay: :math:`\lambda \ge 0` on every layer.
      lr: ``None`` (gradient flow) or the GD learning rate :math:`\eta > 0`.
      input_var: per-mode input variance :math:`\kappa_i = v_i^\top\Sigma v_i \ge 0`, a scalar or
        broadcastable to the shape of ``sigma`` (default 1; :func:`input_variance` reads it off a Task).

    Returns :math:`\dot s` with the broadcast shape of ``s`` and ``sigma``.

    Examples:
      >>> import linoverfit as lo
      >>> float(lo.theory.modes.mode_velocity(0.5, 1.0, depth=2))   # 2 s (sigma - s)
      0.5
      >>> float(lo.theory.modes.mode_velocity(0.5, 1.0, depth=2, input_var=3.0))   # 2 kappa s (sigma - s)
      1.5
    """
    L = _depth(depth)
    s = _nonneg(s, "s")
    sigma = _nonneg(sigma, "sigma")
    lam = _weight_decay(weight_decay)
    kappa = _input_var(input_var, sigma)
    eta = _lr(lr)
    if eta is None:
        return L * kappa * np.power(s, 2.0 - 2.0 / L) * (sigma - s) - L * lam * s
    a = s ** (1.0 / L)
    f, df, d2f = _layer_field(a, sigma, L, lam, kappa)
    adot = f - 0.5 * eta * df * f + eta**2 * (df * df * f / 3.0 + d2f * f * f / 12.0)
    return L * np.power(a, L - 1) * adot


def mode_asymptote(sigma: ArrayLike, s0: ArrayLike, depth: int = 2, weight_decay: float = 0.0, *,
                   input_var: ArrayLike | None = None) -> np.ndarray:
    r"""Limit :math:`s(\infty)` of each mode started at :math:`s_0 > 0` (the stable fixed point it reaches).

    * :math:`L = 1`: :math:`\kappa\sigma / (\kappa + \lambda)`.
    * :math:`L = 2`: :math:`\max(\sigma - \lambda/\kappa, 0)`.
    * :math:`L \ge 3`: the fixed points solve :math:`s^{1-2/L}(\sigma - s) = \lambda/\kappa`; the mode
      converges to the largest root if it starts above the smaller root, otherwise to 0
      (with weight decay a deep net can leave small modes unlearnt for ever).
      Without weight decay it is :math:`\sigma`.

    :math:`\kappa` = ``input_var`` (default 1), the mode's input variance (a mode with
    :math:`\kappa = 0` sees no input: it keeps :math:`s_0` without weight decay and dies with it).
    ``sigma`` and ``s0`` broadcast (``input_var`` broadcasts to ``sigma``); returns their broadcast
    shape. ``s0 = 0`` stays at 0 (for depth 1, where 0 is not a fixed point, the depth-1 limit is returned).
    """
    L = _depth(depth)
    sigma = _nonneg(sigma, "sigma")
    kappa = _input_var(input_var, sigma)
    sigma, s0, kappa = np.broadcast_arrays(sigma, _nonneg(s0, "s0"), kappa)
    lam = _weight_decay(weight_decay)
    dead = kappa == 0  # no input along the mode: only weight decay acts
    still = np.where(lam > 0, 0.0, s0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_k = np.where(dead, np.inf, lam / np.where(dead, 1.0, kappa))  # decay per unit of the mode's own time
    if L == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dead, still, sigma / (1.0 + lam_k))
    if L == 2:
        return np.where(dead, still, np.where(s0 > 0, np.maximum(sigma - lam_k, 0.0), 0.0))
    if lam == 0:
        return np.where(dead, s0, np.where(s0 > 0, sigma, 0.0))
    out = np.zeros(sigma.shape)
    e = 1.0 - 2.0 / L
    for idx in np.ndindex(sigma.shape):
        sig, start, lk = float(sigma[idx]), float(s0[idx]), float(lam_k[idx])
        if sig == 0 or start == 0 or not np.isfinite(lk):
            continue
        h = lambda s: s**e * (sig - s) - lk  # noqa: E731  (growth rate per unit s, up to L kappa)
        peak = sig * e / (1.0 + e)  # argmax of s^e (sigma - s)
        if h(peak) <= 0:
            continue  # decay beats growth everywhere: the mode dies
        low = brentq(h, 0.0, peak, xtol=1e-300, rtol=4 * np.finfo(float).eps)
        if start > low:  # above the unstable root: grows (or shrinks) to the stable one
            out[idx] = brentq(h, peak, sig, xtol=1e-300, rtol=4 * np.finfo(float).eps)
    return out


def mode_trajectory(sigma: ArrayLike, t: ArrayLike, s0: ArrayLike, depth: int = 2, weight_decay: float = 0.0, *,
                    lr: float | None = None, input_var: ArrayLike | None = None, rtol: float = 1e-11) -> np.ndarray:
    r"""Value :math:`s_i(t)` of each teacher mode under gradient flow from a balanced aligned init.

    Solves :math:`\dot s = L\kappa s^{2-2/L}(\sigma - s) - L\lambda s`, :math:`s(0) = s_0`
    (``docs/theory.md``, sections 1.3 and 1.8; :math:`\kappa` = ``input_var``, 1 for :math:`\Sigma = I`), exactly:

    * :math:`L = 1`: :math:`s = s_\infty + (s_0 - s_\infty)e^{-(\kappa+\lambda)t}`, :math:`s_\infty = \kappa\sigma/(\kappa+\lambda)`.
    * :math:`L = 2`: the logistic :math:`s = \dfrac{r}{\kappa + (r/s_0 - \kappa)e^{-2rt}}` with
      :math:`r = \kappa\sigma - \lambda` (evaluated in a form that is exact and overflow-free for
      :math:`r \le 0`, where the mode decays, :math:`r = 0` giving :math:`s_0/(1 + 2\kappa s_0 t)`).
    * :math:`L \ge 3`: for :math:`\sigma = \lambda = 0` the closed form
      :math:`s^{-(2-2/L)} = s_0^{-(2-2/L)} + 2(L-1)\kappa t`; otherwise the ODE for :math:`\log s` is
      integrated with ``scipy.integrate.solve_ivp`` (DOP853, or LSODA over horizons long enough
      to make the relaxation of learnt modes stiff; tolerance ``rtol`` relative on :math:`s`,
      all modes at once).

    With a learning rate ``lr`` :math:`= \eta` it is gradient *descent* instead, exactly: an aligned
    balanced network stays aligned under GD, every layer of mode :math:`i` carries the same value
    :math:`a_i = s_i^{1/L}`, and one step is the scalar map

    .. math:: a \mapsto a + \eta\big(\kappa a^{L-1}(\sigma - a^L) - \lambda a\big),

    iterated ``t / lr`` times (a compiled ``lax.fori_loop``, float64; depth 1 in closed form,
    :math:`s_k = s_\infty + (s_0 - s_\infty)(1 - \eta(\kappa+\lambda))^k`). Between steps (``t / lr`` not
    an integer) the last step is taken for its fraction. A learning rate at or past the stability
    edge :math:`2/(\lambda_{max} + \lambda)` of the aligned net at its learnt minimum warns
    (:class:`~linoverfit.theory.curvature.PastEdgeWarning`); :math:`\lambda_{max} = \max_{p,q}\kappa_q\sum_{l=1}^L\sigma_p^{2(L-l)/L}\sigma_q^{2(l-1)/L}`,
    :math:`L\sigma_1^{2-2/L}` for :math:`\kappa = 1`. With :math:`\kappa \ne 1` it can lie below each mode map's
    own edge :math:`2/(L\kappa_i\sigma_i^{2-2/L} + \lambda)`: the map (exact in exact arithmetic) still
    converges there, but directions that mix modes grow from round-off, so a simulation does not.

    Assumptions: a balanced, aligned init (``net.init(scheme="aligned")``) and an input covariance
    with :math:`\Sigma v_i = \kappa_i v_i` for the teacher's right singular vectors :math:`v_i`
    (:math:`\Sigma = I` by default). Any other covariance couples the modes; this function cannot
    see the covariance, so pass :math:`\kappa` from :func:`input_variance`, which checks it.

    Args:
      sigma: teacher singular values :math:`\sigma_i \ge 0`, shape ``(M,)`` (any shape ``S``).
      t: gradient-flow times :math:`t = \eta\cdot\text{steps} \ge 0`, shape ``(T,)`` (any shape, any order).
      s0: initial mode value :math:`s_0 \ge 0` (for ``net.init(..., scheme="aligned", scale=c)``
        it is :math:`c^L`); broadcast against ``sigma``.
      depth: :math:`L \ge 1`.
      weight_decay: :math:`\lambda \ge 0`, applied to every layer (``lo.pretrain(weight_decay=)``).
      lr: ``None`` (gradient flow, the default) or the GD learning rate :math:`\eta > 0` (exact GD).
      input_var: per-mode input variance :math:`\kappa_i = v_i^\top\Sigma v_i \ge 0` (default 1), a
        scalar or broadcastable to ``broadcast(sigma, s0).shape``; a mismatched length raises a
        ValueError naming ``input_var``.
      rtol: relative accuracy of the ODE solve (depth >= 3 flow only).

    Returns an array of shape ``t.shape + broadcast(sigma, s0).shape``: row ``k`` is the learnt
    spectrum at time ``t[k]`` (the leading axis is the checkpoint axis, as in the simulation results).

    The flow (``lr=None``) differs from GD by :math:`O(\eta)` (``docs/theory.md`` eq. (1.9));
    ``lr=`` removes that gap (``tests/test_theory_modes.py``, ``tests/test_theory_anisotropic.py``).

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> s = lo.theory.modes.mode_trajectory([1.0, 0.5], t=[0.0, 5.0, 50.0], s0=1e-3)
      >>> s.shape
      (3, 2)
      >>> print(np.round(s, 4))
      [[0.001  0.001 ]
       [0.9566 0.1146]
       [1.     0.5   ]]
      >>> # input variance 2 along mode 1: the same sigmoid in twice the time
      >>> bool(np.allclose(lo.theory.modes.mode_trajectory(1.0, [2.5], 1e-3, input_var=2.0), s[1, 0]))
      True
    """
    L = _depth(depth)
    sigma = _nonneg(sigma, "sigma")
    t = _nonneg(t, "t")
    s0 = _nonneg(s0, "s0")
    lam = _weight_decay(weight_decay)
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    try:
        sigma, s0 = np.broadcast_arrays(sigma, s0)
    except ValueError:
        raise ValueError(f"s0 must be a scalar or one initial value per singular value (shape {np.shape(sigma)} of "
                         f"sigma), got shape {np.shape(s0)}") from None
    kappa = _input_var(input_var, sigma)
    eta = _lr(lr)
    if eta is not None:
        _warn_past_edge(eta, sigma, L, lam, kappa)
        return _gd_trajectory(sigma, t, s0, L, lam, eta, kappa)
    if L <= 2:
        return _closed_modes(sigma, s0, kappa, lam, L, t.reshape(t.shape + (1,) * sigma.ndim))
    return _deep_trajectory(sigma, t, s0, L, lam, rtol, kappa)


def _warn_past_edge(eta, sigma, L, lam, kappa=None):
    top = _aligned_sharpness(sigma, L, kappa)
    if top + lam > 0:
        check_edge(eta, 2.0 / (top + lam), "mode_trajectory", stacklevel=4)


def _aligned_sharpness(sigma, L, kappa=None) -> float:
    r"""Top Hessian eigenvalue at the learnt minimum of an aligned net carrying these modes (``docs/theory.md``
    1.8, 7.1): :math:`\max_{p,q}\kappa_q\sum_{l=1}^L a_p^{2(L-l)}a_q^{2(l-1)}`, :math:`a = \sigma^{1/L}`. The diagonal
    :math:`p = q` is each mode map's own :math:`L\kappa\sigma^{2-2/L}`; :math:`p \ne q` mixes modes (layer ``l``
    reading input direction :math:`v_q` into mode :math:`p`), larger when a small-:math:`\kappa` mode sits above a
    large-:math:`\kappa` one. For :math:`\kappa = 1` it is :math:`L\sigma_1^{2-2/L}`."""
    sig = np.asarray(sigma, np.float64).ravel()
    if sig.size == 0 or not np.any(sig > 0):
        return 0.0
    kap = np.ones(sig.shape) if kappa is None else np.broadcast_to(np.asarray(kappa, np.float64), np.shape(sigma)).ravel()
    a = sig ** (1.0 / L)
    ls = np.arange(1, L + 1)
    # (p, q): sum_l a_p^(2(L-l)) a_q^(2(l-1)), 0^0 = 1 (an empty product of layers)
    terms = np.power(a[:, None, None], 2.0 * (L - ls)) * np.power(a[None, :, None], 2.0 * (ls - 1))
    return float(np.max(kap[None, :] * terms.sum(-1)))


def input_variance(task: Task) -> np.ndarray:
    r"""Input variance :math:`\kappa_i = v_i^\top\Sigma v_i` along each right singular vector of the teacher.

    The mode dynamics (:func:`mode_trajectory` ``input_var=``) and every prediction built on them hold
    when :math:`\Sigma` shares the teacher's right singular vectors, :math:`\Sigma v_i = \kappa_i v_i`
    for every :math:`v_i` of :math:`A = U\operatorname{diag}(\sigma)V^\top` (Saxe et al. 2014;
    ``docs/theory.md`` section 1.8). This checks that condition in float64,
    :math:`\lVert\Sigma V - V\operatorname{diag}(\kappa)\rVert_F \le \sqrt{\epsilon}\,\lVert\Sigma\rVert_F`
    with :math:`\epsilon` the machine epsilon of the task's dtype (a float32 task's singular vectors are
    only accurate to :math:`\epsilon/\text{gap}`; :math:`\sqrt\epsilon` leaves room for relative gaps down
    to :math:`\sqrt\epsilon`), and raises a ValueError naming it otherwise. Degenerate singular values
    (a zero block of a rank-deficient teacher included) have no unique :math:`v_i`: the check uses
    ``task.svd()``'s basis, the one ``net.init(scheme="aligned", task=task)`` aligns to.

    Args:
      task: a :class:`~linoverfit.Task`.

    Returns :math:`\kappa` of shape ``(min(d_in, d_out),)``, float64, in the order of ``task.spectrum``
    (descending :math:`\sigma`): pass it with those singular values as ``input_var=``.

    Examples:
      >>> import jax, linoverfit as lo
      >>> task = lo.tasks.power_law(3, 3, key=jax.random.key(0), input_var=[2.0, 1.0, 0.5])
      >>> print(lo.theory.modes.input_variance(task).round(6))
      [2.  1.  0.5]
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a linoverfit Task, got {type(task).__name__}")
    cov = np.asarray(task.input_cov, np.float64)
    _, _, Vt = np.linalg.svd(np.asarray(task.teacher, np.float64), full_matrices=False)
    kappa = np.einsum("ij,jk,ik->i", Vt, cov, Vt)
    resid = cov @ Vt.T - Vt.T * kappa[None, :]
    eps = max(np.finfo(np.asarray(task.teacher).dtype).eps, np.finfo(np.asarray(task.input_cov).dtype).eps)
    if np.linalg.norm(resid) > np.sqrt(eps) * max(np.linalg.norm(cov), 1e-300):
        raise ValueError("task.input_cov must share the teacher's right singular vectors (input_cov @ v_i = kappa_i v_i "
                         "for every right singular vector v_i of task.teacher; relative residual "
                         f"{np.linalg.norm(resid) / max(np.linalg.norm(cov), 1e-300):.3g} > {np.sqrt(eps):.3g}): only "
                         "then do the modes evolve independently. Build such a task with input_var= "
                         "(lo.tasks.from_spectrum / power_law), or use lo.theory.expected_perturbed_loss / "
                         "predict_finetune on simulated weights for any other covariance")
    return kappa


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
    :func:`~linoverfit.theory.turning.turning_point`.

    Examples:
      >>> import linoverfit as lo
      >>> lo.theory.modes.gaussian_init_s0(0.1, (4, 4, 4))
      array([0.02 , 0.015, 0.01 , 0.005])
    """
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

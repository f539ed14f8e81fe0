r"""Predicted U-curves over pre-training time: the loss after Gaussian perturbation or after fine-tuning.

Balanced aligned gradient flow (or GD, ``pretrain_lr=``) with :math:`\Sigma = I` or :math:`\Sigma v_i = \kappa_i v_i`
(``docs/theory.md``, sections 1.8, 3): the spectrum
:math:`s_i(t)` follows :func:`~linoverfit.theory.modes.mode_trajectory`, and

* under Gaussian perturbation the expected pre-training loss is
  :math:`f(t) = \tfrac12\sum_i(\sigma_i - s_i(t))^2 + S(s(t);\gamma)` (+ the unlearnable part and
  label noise), with :math:`S` from :func:`~linoverfit.theory.perturbation.sensitivity_from_spectrum`
  (:func:`perturbed_loss_curve`);
* under fine-tuning for flow time :math:`\tau = \eta\cdot\text{steps}` it is the pre-training loss of
  the end-to-end flow (:func:`~linoverfit.theory.flow.end_to_end_flow`) started at
  :math:`P(t) = U\operatorname{diag}(s(t))V^\top` (:func:`finetune_curve`).

Their minimiser over :math:`t` is the turning point (:mod:`~linoverfit.theory.turning`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tasks import Task
from ._args import _gamma, _nonneg, _weight_decay, _widths
from ._mode_solvers import _mode_solution
from .forgetting import FinetunePrediction, predict_finetune
from .modes import input_variance, mode_asymptote, mode_trajectory, mode_velocity
from .perturbation import _spectrum_sensitivity

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike
    from ..networks import DeepLinear


__all__ = ["perturbed_loss_curve", "finetune_curve"]


def _spectrum(task, widths):
    """(sigma descending, noise) from a Task or from singular values; checks widths. A Task's input
    covariance is checked by :func:`_input_variance`."""
    d_in, d_out = widths[0], widths[-1]
    if isinstance(task, Task):
        if (task.d_in, task.d_out) != (d_in, d_out):
            raise ValueError(f"task maps {task.d_in} -> {task.d_out} but widths are {widths}")
        return np.sort(np.asarray(task.spectrum, np.float64))[::-1], float(task.noise)
    sigma = _nonneg(task, "task")
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(f"task must be a Task or a 1-D array of teacher singular values, got shape {sigma.shape}")
    if sigma.size > min(d_in, d_out):
        raise ValueError(f"task has {sigma.size} singular values but min(d_in, d_out) = {min(d_in, d_out)}")
    return np.sort(sigma)[::-1], 0.0


def _input_variance(task, widths):
    r"""Per-mode input variances :math:`\kappa_i = v_i^\top\Sigma v_i` of the ``min(widths)`` carried modes,
    of all teacher modes, and :math:`\operatorname{tr}\Sigma`; ``None`` for :math:`\Sigma = I` or singular values.

    The mode dynamics close only when every right singular vector of the teacher is an eigenvector
    of :math:`\Sigma` (Saxe et al. 2014); any other covariance raises a ValueError naming that condition."""
    if not isinstance(task, Task):
        return None
    cov = np.asarray(task.input_cov, np.float64)
    if np.allclose(cov, np.eye(cov.shape[0]), rtol=0, atol=1e-10):
        return None
    kappa_all = input_variance(task)  # raises the ValueError naming the condition
    k = min(widths)
    kappa = np.ones(k)
    n = min(k, kappa_all.size)
    kappa[:n] = kappa_all[:n]
    return kappa, kappa_all, float(np.trace(cov))


def _learnable(sigma, widths):
    """(sigma of the min(widths) modes the network carries, zero-padded; sum of sigma^2 it cannot learn)."""
    k = min(widths)
    sig = np.zeros(k)
    n = min(k, sigma.size)
    sig[:n] = sigma[:n]
    return sig, float(np.sum(sigma[n:] ** 2))


def _s0(s0, k):
    """Initial mode values: a scalar, or one per mode ``(k,)``; all > 0."""
    arr = _nonneg(s0, "s0")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != k):
        raise ValueError(f"s0 must be a scalar or have one entry per mode ({k},), got shape {arr.shape}")
    if np.any(arr <= 0):
        raise ValueError("s0 must be > 0 (the initial mode value, scale**depth for an aligned init)")
    return arr


def _horizon(sig, s0, L, lam):
    """A time by which every mode that will be learnt is learnt (generous), for default grids."""
    s_inf = mode_asymptote(sig, s0, L, lam)
    live = s_inf > s0
    if L == 1 or not np.any(live):
        return 10.0 / (1.0 + lam) if L == 1 else 10.0
    r, start = s_inf[live], np.broadcast_to(s0, sig.shape)[live]
    if L == 2:
        half = np.log(np.maximum(r / start - 1.0, 1.0)) / (2.0 * r)
    else:  # integral of ds / (L sigma s^(2-2/L) / 2) from s0 upwards (the slow start dominates)
        half = 2.0 / ((L - 2) * r * start ** ((L - 2) / L))
    # then within 1% of the asymptote after ~ log(100) / (L r^(2-2/L)) more
    return float(1.5 * np.max(half + 5.0 / (L * r ** (2.0 - 2.0 / L))))


def perturbed_loss_curve(task: Task | ArrayLike, t: ArrayLike, gamma: ArrayLike, *, widths: DeepLinear | Sequence[int],
                         s0: ArrayLike, weight_decay: float = 0.0, pretrain_lr: float | None = None) -> np.ndarray:
    r"""Predicted expected pre-training loss after Gaussian perturbation, over pre-training time.

    .. math:: f(t) = \tfrac12\sum_{i\le k}(\sigma_i - s_i(t))^2 + \tfrac12\sum_{i>k}\sigma_i^2
              + \tfrac12\sigma_\varepsilon^2 d_{out} + S\big(s(t);\gamma\big),

    :math:`s_i(t)` from :func:`~linoverfit.theory.modes.mode_trajectory` (balanced aligned init, :math:`\Sigma = I`),
    :math:`k = \min(\text{widths})` the modes the network carries and :math:`S` the exact
    sensitivity of balanced aligned weights (:func:`~linoverfit.theory.perturbation.sensitivity_from_spectrum`). For a Task whose
    input covariance :math:`\Sigma` shares the teacher's right singular vectors,
    :math:`\Sigma v_i = \kappa_i v_i`, each mode follows (1.3) at rate :math:`\kappa_i`, the fit terms carry
    the weights :math:`\kappa_i` and :math:`S` sees :math:`\Sigma` on its input side (``docs/theory.md`` 3.5);
    any other covariance raises a ValueError.

    Args:
      task: a :class:`~linoverfit.Task` (identity input covariance, or one sharing the teacher's right
        singular vectors), or the teacher's singular values ``(r,)`` (then :math:`\Sigma = I`).
      t: pre-training times :math:`t = \eta\cdot\text{steps} \ge 0`, shape ``T``.
      gamma: :math:`\gamma \ge 0`, any shape ``G``; a scalar is one scale, ``G = (1,)``.
      widths: ``(d_in, h_1, ..., d_out)`` or a :class:`~linoverfit.DeepLinear` (depth is ``len - 1``).
      s0: initial mode value (``scale**depth`` for ``net.init(scheme="aligned", scale=scale)``), or
        one per carried mode ``(k,)`` (e.g. :func:`~linoverfit.theory.modes.gaussian_init_s0` for a small Gaussian init).
      weight_decay: :math:`\lambda` on every layer during pre-training.
      pretrain_lr: ``None`` (pre-training by gradient flow) or the pre-training learning rate
        :math:`\eta`: then :math:`s(t)` is GD's, exactly (:func:`~linoverfit.theory.modes.mode_trajectory` with ``lr=``; the
        per-mode map :math:`a \mapsto a + \eta(\kappa_i a^{L-1}(\sigma_i - a^L) - \lambda a)`).

    Returns shape ``t.shape + G`` (one noise scale keeps its axis: ``(T, 1)``, as the simulation's
    ``(C, G)``); :math:`\gamma = 0` gives the plain pre-training loss.

    Examples:
      >>> import numpy as np, linoverfit as lo
      >>> f = lo.theory.curves.perturbed_loss_curve(1 / np.arange(1, 9), np.geomspace(1, 1e4, 50), 0.1,
      ...                                    widths=(8, 8, 8), s0=1e-6)
      >>> f.shape, int(np.argmin(f[:, 0])) not in (0, 49)    # a U-curve: interior minimum
      ((50, 1), True)
    """
    widths = _widths(widths)
    L = len(widths) - 1
    gamma = np.asarray(_gamma(gamma))
    sigma, noise = _spectrum(task, widths)
    sig, rest = _learnable(sigma, widths)
    var = _input_variance(task, widths)
    if var is None:
        kappa, rest_k, iv = 1.0, rest, None
    else:
        kappa, kap_all, tr = var
        rest_k, iv = float(np.sum(kap_all[sig.size:] * sigma[sig.size:] ** 2)), (kappa, tr)
    s = mode_trajectory(sig, t, _s0(s0, sig.size), L, weight_decay, lr=pretrain_lr,
                        input_var=None if var is None else kappa)
    fit = 0.5 * np.sum(kappa * (sig - s) ** 2, axis=-1) + 0.5 * rest_k + 0.5 * noise * widths[-1]
    S = _spectrum_sensitivity(s, gamma, widths, input_var=iv)[0]
    return fit.reshape(fit.shape + (1,) * np.ndim(gamma)) + S


def _curve_and_slope(sig, rest, noise, t, gamma, widths, s0, lam, modes=None, input_var=None):
    """f(t) and df/dt for scalar gamma (perturbation), arrays of shape t.shape; ``modes``: a dense
    solution ``t -> s`` (:func:`~linoverfit.theory._mode_solvers._mode_solution`) to evaluate instead of re-solving."""
    L = len(widths) - 1
    s = mode_trajectory(sig, t, s0, L, lam) if modes is None else modes(t)
    # each mode learns at its own input variance: ds/dt = L kappa s^(2-2/L) (sigma - s) - L lam s
    kappa = 1.0 if input_var is None else input_var[0]
    sdot = mode_velocity(s, sig, L, lam, input_var=None if input_var is None else kappa)
    S, dS = _spectrum_sensitivity(s, gamma, widths, sdot=sdot, input_var=input_var)
    f = 0.5 * np.sum(kappa * (sig - s) ** 2, axis=-1) + 0.5 * rest + 0.5 * noise * widths[-1] + S
    df = np.sum(kappa * (s - sig) * sdot, axis=-1) + dS
    return f, df


def _aligned_maps(task, widths, s):
    """Maps U_k diag(s) V_k^T of a balanced aligned net, ``s`` ``(..., k)``."""
    U, _, Vt = (np.asarray(x, np.float64) for x in task.svd())
    k = s.shape[-1]
    return np.einsum("ik,...k,kj->...ij", U[:, :k], s, Vt[:k])


def finetune_curve(task: Task, finetune: Task, t: ArrayLike, *, widths: DeepLinear | Sequence[int], s0: ArrayLike,
                   lr: ArrayLike, steps: int, weight_decay: float = 0.0,
                   pretrain_lr: float | None = None, gd_order: int | str = "auto", return_maps: bool = False,
                   method: str = "auto", rtol: float = 1e-10, pretrain_task: Task | None = None) -> FinetunePrediction:
    r"""Predicted fine-tuning outcome from every pre-training time ``t`` (balanced aligned init).

    Pre-training gives :math:`P(t) = U\operatorname{diag}(s(t))V^\top` (:func:`~linoverfit.theory.modes.mode_trajectory`; with
    :math:`\Sigma v_i = \kappa_i v_i` each mode at its own input variance, ``docs/theory.md`` 1.8);
    fine-tuning on ``finetune`` for :math:`\tau = \eta\cdot\text{steps}` is the end-to-end flow
    from it (:func:`~linoverfit.theory.forgetting.predict_finetune`). ``pretrain_loss_after`` over ``t`` is the fine-tuning
    U-curve.

    Args:
      task: pre-training :class:`~linoverfit.Task` (its singular vectors matter): identity input
        covariance or one sharing the teacher's right singular vectors; any other raises a ValueError.
      finetune: fine-tuning :class:`~linoverfit.Task` (any PSD covariance).
      t: pre-training times, shape ``(C,)``.
      widths, s0, weight_decay: the pre-training network and init, as in :func:`perturbed_loss_curve`.
      lr: fine-tuning learning rate(s) ``(R,)``; steps: fine-tuning steps.
      pretrain_lr: ``None`` (pre-training by gradient flow) or the pre-training learning rate: then
        :math:`s(t)` is GD's, exactly (:func:`~linoverfit.theory.modes.mode_trajectory` with ``lr=``).
      gd_order: how fine-tuning at each ``lr`` is predicted (:func:`~linoverfit.theory.forgetting.predict_finetune`; default
        ``"auto"``: GD, not the flow).
      method, rtol: how the flow is integrated (:func:`~linoverfit.theory.flow.end_to_end_flow`).
      pretrain_task: the task whose loss ``pretrain_loss_before`` / ``_after`` report (``lo.finetune``'s
        argument of that name), e.g. the original task when ``task`` is a mixture; default ``task``.

    Returns a :class:`~linoverfit.theory.forgetting.FinetunePrediction` with ``t`` and losses ``(C, R)``.
    """
    widths = _widths(widths)
    if not isinstance(task, Task):
        raise TypeError("task must be a Task for fine-tuning predictions (the singular vectors matter)")
    sigma, _ = _spectrum(task, widths)
    sig, _ = _learnable(sigma, widths)
    t = _nonneg(t, "t")
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D (the checkpoint axis), got shape {t.shape}")
    var = _input_variance(task, widths)
    L = len(widths) - 1
    if pretrain_lr is None and L >= 3 and t.size:
        # the dense mode solve turning_point uses (one universal curve without weight decay): same s(t)
        s = _mode_solution(sig, _s0(s0, sig.size), L, _weight_decay(weight_decay), float(np.max(t)),
                           kappa=None if var is None else var[0])(t)
    else:
        s = mode_trajectory(sig, t, _s0(s0, sig.size), L, weight_decay, lr=pretrain_lr,
                            input_var=None if var is None else var[0])
    pred = predict_finetune(_aligned_maps(task, widths, s), finetune, lr, steps, depth=len(widths) - 1,
                            pretrain_task=task if pretrain_task is None else pretrain_task, return_maps=return_maps, gd_order=gd_order, method=method, rtol=rtol)
    return FinetunePrediction(**{**pred.__dict__, "t": t})

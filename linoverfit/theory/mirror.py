r"""The simulation's calls, predicted.

:func:`pretrain`, :func:`finetune` and :func:`gaussian` take the arguments of ``lo.pretrain``,
``lo.finetune`` and ``lo.sensitivity.gaussian`` and return the same result classes
(:class:`~linoverfit.PretrainResult`, :class:`~linoverfit.FinetuneResult`,
:class:`~linoverfit.sensitivity.SensitivityResult`) with the same fields, axes, coordinates and
``to_xarray()``, computed without simulating parameters where a closed form exists. So a figure
(or a test) overlays theory on simulation with one call swapped, and ``run`` may be simulated or
predicted. Each result names the prediction it carries in ``result.prediction`` (``None`` on a
simulated result) and whether it is exact for gradient descent at the given learning rate in
``result.exact``; ``docs/theory.md`` section 9 states the assumptions and exactness per start.

Predictions by start (:func:`pretrain`, ``method="auto"`` picks the first that applies):

* ``"modes"``: a balanced start whose end-to-end map is aligned with the teacher
  (``net.init(scheme="aligned")``; checked: :math:`W_{l+1}^\top W_{l+1} = W_lW_l^\top` and
  :math:`P_0 = U\operatorname{diag}(s_0)V^\top` with the teacher's singular vectors, to
  :math:`\sqrt\epsilon`), and an input covariance sharing the teacher's right singular vectors.
  Every layer carries :math:`a_i = s_i^{1/L}` on mode :math:`i`, iterated by the exact scalar GD
  map of :func:`~linoverfit.theory.modes.mode_trajectory` (``lr=``), and the layers are
  :math:`W_l(t) = W_l(0) + Q_l\operatorname{diag}(a(t) - a(0))Q_{l-1}^\top` with :math:`Q_0 = V`,
  :math:`Q_L = U` and the start's own hidden vectors :math:`Q_l = W_lQ_{l-1}\operatorname{diag}(a(0))^{-1}`.
  Exact (round-off).
* ``"gd"``: any start; the exact GD map on the start's own layers, iterated in float64 (the map
  ``predict_finetune(gd_order="exact")`` uses). Exact (round-off): nothing is approximated, so it
  predicts what the simulation computes without its float32 round-off, divergence bookkeeping or
  layout.
* ``"flow"``: any start; the gradient flow of the start's own layers (jitted DOP853), the
  continuous-time limit. Differs from GD by :math:`O(\eta)`; ``exact`` is False.

:func:`finetune` is :func:`~linoverfit.theory.forgetting.predict_finetune` on the run's own layers (exact GD
for at most 10 000 steps by default); with a penalty toward the checkpoint (``l2``, ``l2_on="layers"``
or Springer et al.'s ``l2_on="map"``) it iterates the penalised GD exactly (``method="gd"``, any
start) or the per-mode map of balanced aligned starts (``method="modes"``). :func:`gaussian` is the exact expectation
:func:`~linoverfit.theory.perturbation.perturbation_sensitivity` (``stderr`` zero, ``samples`` 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import warnings

import jax
import jax.numpy as jnp
import numpy as np

# the result classes and the simulation's own rules, by module (one line to retarget)
from .. import result_types as _rt
from .. import validation as _v
from ..networks import DeepLinear, check_linear as check_network
from ..tasks import Dataset, Task
# helpers of the theory modules (one block: paths are fixed here when those modules move)
from ..pretraining import DIVERGENCE_FACTOR
from ..sensitivity import checked_run_task
from ..finetuning import check_l2_on
from ._aligned import _aligned, _mode_map, _modes_layers
from ._gd import AUTO_EXACT_STEPS, _gd_layers, _penalised_gd
from ._layer_flow import _flow_layers
from .curvature import check_edge
from .forgetting import _loss, predict_finetune
from .modes import input_variance
from .perturbation import perturbation_sensitivity
from ..precision import enable_x64

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike

__all__ = ["pretrain", "finetune", "gaussian", "PRETRAIN_METHODS", "FINETUNE_METHODS"]

PRETRAIN_METHODS = ("auto", "modes", "gd", "flow")
#: :func:`finetune`'s own methods (the penalised exact GD and the per-mode map); any other ``method``
#: is :func:`~linoverfit.theory.forgetting.predict_finetune`'s (unpenalised fine-tuning only).
FINETUNE_METHODS = ("gd", "modes")


# ----------------------------------------------------------------------------- checks


def _net(net):
    """``net`` as the DeepLinear the closed forms predict (an identity MLP becomes the DeepLinear of its widths)."""
    return check_network(net)


def _population(task, name):
    """The Task whose population loss the prediction follows: ``task`` itself, or a Dataset's own
    moments (:meth:`~linoverfit.Dataset.as_task`: full-batch GD on the sample, exactly)."""
    if isinstance(task, Dataset):
        return task.as_task()
    if not isinstance(task, Task):
        raise TypeError(f"{name} must be a linoverfit Task, got {type(task).__name__}")
    return task


def _constant_lr(lr):
    if callable(lr):
        raise TypeError("lr must be a constant learning rate: the mirror predicts constant-rate GD "
                        "(simulate a schedule with lo.pretrain)")
    return _v.positive_scalar(lr, "lr")


def _f64(weights):
    return tuple(np.asarray(w, np.float64) for w in weights)


# ----------------------------------------------------------------------------- pre-training


def pretrain(net: DeepLinear, W0: Sequence[ArrayLike], task: Task, *, lr: float,
             checkpoints: Sequence[int] | ArrayLike, weight_decay: float = 0.0, method: str = "auto",
             keep_weights: bool = True, divergence_factor: float = DIVERGENCE_FACTOR,
             rtol: float = 1e-10, atol: float = 1e-12) -> _rt.PretrainResult:
    r"""Predicted ``lo.pretrain(net, W0, task, lr=, checkpoints=, weight_decay=)``: the same
    :class:`~linoverfit.PretrainResult` (``loss`` ``(C[, S])``, ``weights`` ``(C[, S], n_l, n_{l-1})``,
    ``steps``, ``t``), without simulating where the start allows.

    Plain GD :math:`W \leftarrow W - \eta(\nabla_W L + \lambda W)` at a constant ``lr`` on the
    population loss of a :class:`~linoverfit.Task`, or full-batch GD on a
    :class:`~linoverfit.Dataset` (exactly: the population loss of its own moments,
    :meth:`~linoverfit.Dataset.as_task`; the result's ``task`` is the Dataset, as the simulation's is).
    ``method`` (module docstring):

    * ``"modes"``: balanced aligned starts, exact per-mode GD map (round-off);
    * ``"gd"``: any start, the exact GD map on its own layers (round-off);
    * ``"flow"``: any start, the gradient flow of its own layers (error :math:`O(\eta)`);
    * ``"auto"``: ``"modes"`` where every seed's start is balanced and aligned and the input
      covariance shares the teacher's right singular vectors, else ``"gd"``.

    ``result.prediction`` names the method used, ``result.exact`` is True for ``"modes"`` and
    ``"gd"``. A learning rate past the stability edge of the aligned net warns
    (:class:`~linoverfit.theory.PastEdgeWarning`, ``"modes"``); a predicted loss that is
    non-finite or above ``divergence_factor`` times its natural scale at a checkpoint raises
    :class:`~linoverfit.DivergenceError` (with ``.step`` the first such checkpoint; the simulation
    names the exact step). ``rtol``/``atol``: tolerances of the ``"flow"`` solve. ``keep_weights=False``
    drops the predicted layers from the result, as in ``lo.pretrain``.
    """
    net = _net(net)
    given = net.check_task(task)
    task = _population(given, "task")
    W0 = net.check_weights(W0, "W0")
    dtype = _v.working_dtype(W0, "W0")
    ndims = {np.ndim(w) for w in W0}
    if ndims not in ({2}, {3}) or len({np.shape(w)[0] for w in W0} if ndims == {3} else {0}) != 1:
        raise ValueError("W0 layers must all be 2-D (one network) or all 3-D with one leading seed axis")
    batched = ndims == {3}
    lr = _constant_lr(lr)
    wd = _v.positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    steps = _v.step_grid(checkpoints, "checkpoints")
    if method not in PRETRAIN_METHODS:
        raise ValueError(f"method must be one of {PRETRAIN_METHODS}, got {method!r}")
    Ws = tuple(w if batched else w[None] for w in _f64(W0))
    L, t = len(Ws), lr * steps.astype(np.float64)
    A = np.asarray(task.teacher, np.float64)
    found = None
    if method in ("auto", "modes"):
        found = _aligned(Ws, A, L, dtype)
        try:
            input_variance(task)
        except ValueError:
            if method == "modes":
                raise
            found = None
        if found is None and method == "modes":
            raise ValueError("method='modes' needs balanced starts aligned with the teacher (net.init(scheme='aligned', "
                             "task=task)); use method='gd' or 'flow' for any other start")
        method = "modes" if found is not None else "gd"
    if method == "modes":
        layers = _modes_layers(Ws, task, *found, lr, wd, t)
    elif method == "gd":
        layers = _gd_layers(Ws, task, lr, wd, steps)
    else:
        layers = _flow_layers(Ws, task, wd, t, rtol, atol)
    P = layers[0]
    for w in layers[1:]:
        P = w @ P  # (S, C, m, n)
    loss = _loss(task, P)  # (S, C)
    P0 = Ws[0]
    for w in Ws[1:]:
        P0 = w @ P0
    limit = factor * np.maximum(_loss(task, P0), _loss(task, np.zeros_like(A)))
    bad = ~np.isfinite(loss) | (loss > limit[:, None])
    if bad.any():
        ck = int(np.argmax(bad.any(0)))
        seed = int(np.argmax(bad[:, ck])) if batched else None
        raise _rt.DivergenceError(
            f"predicted pre-training diverged by checkpoint {ck} (step {steps[ck]})"
            + (f" (seed {seed})" if batched else "") + f" with lr={lr}. Lower lr.",
            step=int(steps[ck]), seed=seed, checkpoint=ck)
    cast = lambda x: np.asarray(np.swapaxes(x, 0, 1) if batched else x[0], dtype)  # noqa: E731
    return _rt.PretrainResult(
        steps=steps, loss=cast(loss), weights=tuple(cast(w) for w in layers) if keep_weights else None,
        task=_v.cast_objective(given, dtype), lr=lr, weight_decay=wd, times=None,
        prediction=method, exact=method != "flow")


# ----------------------------------------------------------------------------- fine-tuning


def _penalised_finetune(net, run, task, pre_task, lrs, steps, l2, l2_on, record_steps, factor, method, dtype):
    """``lo.theory.finetune`` by ``method`` ``"gd"`` or ``"modes"``: ``(pre_traj, ft_traj, objective_traj)``
    ``(C, R[, S], K)``, the losses before ``(C[, S])`` and ``past_edge`` ``(C, R[, S])``."""
    weights = _f64(run.weights)
    lead = weights[0].shape[:-2]
    Ws = tuple(w.reshape((-1,) + w.shape[len(lead):]) for w in weights)
    on_map = l2_on == "map"
    if method == "modes":
        P, pen = _mode_map(Ws, task, lrs, l2, on_map, record_steps, dtype)
    else:
        P, pen = _penalised_gd(Ws, task, lrs, l2, on_map, record_steps)
    P0 = Ws[0]
    for w in Ws[1:]:
        P0 = w @ P0

    def to_cr(x):  # (B, R, K, ...) -> (C, R[, S], K, ...)
        x = x.reshape(lead + x.shape[1:])
        return np.moveaxis(x, len(lead), 1) if len(lead) == 2 else x

    pre, ft, pen = to_cr(_loss(pre_task, P)), to_cr(_loss(task, P)), to_cr(pen)
    # the stability edge of the penalised objective: Gauss-Newton sharpness L s1^(2-2/L) (||Sigma|| + 2 lambda
    # on the map) + lambda (layer pull), at the start and at the predicted end
    L = len(Ws)
    c = float(np.linalg.eigvalsh(np.asarray(task.input_cov, np.float64))[-1])
    gn = lambda M: L * np.linalg.norm(np.where(np.isfinite(M), M, 0.0), ord=2, axis=(-2, -1)) ** (2.0 - 2.0 / L)  # noqa: E731
    curv = lambda g: g * (c + (2 * l2 if on_map else 0.0)) + (0.0 if on_map else l2)  # noqa: E731
    start = curv(gn(P0)).reshape(lead)
    end = curv(to_cr(gn(P[:, :, -1])[..., None])[..., 0])
    lam = np.maximum(np.expand_dims(start, 1), end)
    with np.errstate(divide="ignore"):
        edge = 2.0 / lam
    r = lrs.reshape((1, -1) + (1,) * (len(lead) - 1))
    past = check_edge(np.broadcast_to(r, edge.shape), edge, "lo.theory.finetune", stacklevel=4)
    return pre, ft, ft + pen, _loss(pre_task, P0.reshape(lead + P0.shape[1:])), _loss(task, P0.reshape(lead + P0.shape[1:])), past


def finetune(net: DeepLinear, run: _rt.PretrainResult, task: Task, *, lr: float | Sequence[float] | ArrayLike,
             steps: int, l2: float = 0.0, l2_on: str = "layers", record_every: int | None = None,
             return_weights: bool = False, pretrain_task: Task | Dataset | None = None,
             divergence_factor: float = DIVERGENCE_FACTOR, gd_order: int | str = "auto",
             method: str = "auto") -> _rt.FinetuneResult:
    r"""Predicted ``lo.finetune(net, run, task, lr=, steps=, l2=, l2_on=, record_every=)``: the same
    :class:`~linoverfit.FinetuneResult` (``pretrain_loss_before/after``, ``finetune_loss_before/after``
    ``(C, R[, S])``, ``diverged``, ``diverged_step``, loss trajectories with ``record_every``), on the
    run's own layers (``run`` simulated or predicted).

    ``method``:

    * ``"auto"`` (default): without a penalty (``l2=0``), :func:`~linoverfit.theory.forgetting.predict_finetune`
      (below); with one, ``"gd"``.
    * ``"gd"``: any start, any ``l2``/``l2_on``: the exact GD map of the penalised objective
      :math:`L_{ft} + R_\lambda` iterated in float64 on the run's own layers, with the simulation's
      gradient and penalty (:math:`R_\lambda = \tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert_F^2`
      for ``l2_on="layers"``, :math:`\lambda\lVert\theta - \theta^0\rVert_F^2` on the end-to-end map
      :math:`\theta = W_L\cdots W_1` for ``"map"``, Springer et al. 2025). Exact (round-off).
    * ``"modes"``: starts that are balanced and whose maps share the fine-tuning teacher's singular
      vectors (Springer's setting, :mod:`linoverfit.springer`), and an input covariance sharing its
      right singular vectors. Every layer carries :math:`a_i` on mode :math:`i` and one GD step is the
      scalar map :math:`a \leftarrow a + \eta\big(\kappa a^{L-1}(\sigma - a^L) - \rho(a)\big)`,
      :math:`\rho = \lambda(a - a_0)` (layers) or :math:`2\lambda a^{L-1}(a^L - a_0^L)` (map); the
      map is :math:`P = P_0 + U\operatorname{diag}(a^L - a_0^L)V^\top`. Exact (round-off). Its fixed
      point under the map penalty is :math:`a^L = (\kappa\sigma + 2\lambda a_0^L)/(\kappa + 2\lambda)`
      (the fine-tuned mode is pulled toward its checkpoint value).
    * ``"layers"``, ``"function"``, ``"closed"``: :func:`~linoverfit.theory.forgetting.predict_finetune`'s flow
      methods, unpenalised only (a penalty raises a ValueError naming the methods that predict it).

    Without a penalty the defaults (``method="auto"``, ``gd_order="auto"``) iterate GD exactly on the
    run's own layers when ``steps <= 10 000`` (``result.exact`` True, round-off), else (for rates
    with :math:`\eta\lambda \le 1/4`) its order-2 modified equation (error :math:`O(\eta^3)`,
    ``exact`` False); ``gd_order=0`` predicts gradient flow (error :math:`O(\eta)`). ``"gd"`` and
    ``"modes"`` are exact GD and take ``gd_order`` ``"auto"`` or ``"exact"`` only.
    ``result.past_edge`` ``(C, R[, S])`` marks learning rates at or past the stability edge (they
    warn, :class:`~linoverfit.theory.PastEdgeWarning`, and the prediction does not describe GD there).

    Divergence follows the simulation's rule at the predicted points only: a run whose objective
    (fine-tuning loss, plus the penalty when ``l2 > 0``, as in the simulation) at a record (or the
    end) is non-finite or above ``divergence_factor`` times :math:`\max(L_{ft}(W^0), L_{ft}(0))` is
    marked in ``diverged``, ``diverged_step`` is that record's step (the simulation gives the exact
    step), its losses from there on are NaN, and a :class:`~linoverfit.DivergenceWarning` is raised.
    The recorded fine-tuning losses are the task loss without the penalty, as in the simulation.

    ``return_weights`` must be False (the prediction gives maps). ``pretrain_task`` (the task whose
    loss measures forgetting, default ``run.task``), ``record_every`` and ``divergence_factor`` mean
    what they mean in ``lo.finetune``.
    """
    net = _net(net)
    _rt.checked_run(run, "fine-tuning")
    task = _population(net.check_task(task), "task")
    pre_task = run.task if pretrain_task is None else net.check_task(pretrain_task, "pretrain_task")
    net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(run.weights, "run.weights")
    l2 = _v.positive_scalar(l2, "l2", allow_zero=True)
    l2_on = check_l2_on(l2_on)
    if return_weights:
        raise ValueError("return_weights=True is not predicted (the prediction gives end-to-end maps: "
                         "lo.theory.forgetting.predict_finetune(run, task, return_maps=True))")
    lrs = _v.positive_vector(lr, "lr")
    steps = _v.positive_int(steps, "steps")
    factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    record_steps = _v.record_grid(steps, record_every)
    if method == "auto" and l2 != 0:
        method = "gd"
    if l2 != 0 and method not in FINETUNE_METHODS:
        raise ValueError(f"l2 > 0 (l2_on={l2_on!r}) is predicted by method='gd' (exact GD, any start) or "
                         f"method='modes' (balanced starts aligned with the fine-tuning teacher); method={method!r} "
                         "integrates unpenalised fine-tuning")
    if method in FINETUNE_METHODS:
        if gd_order not in ("auto", "exact"):
            raise ValueError(f"method={method!r} iterates GD exactly: gd_order must be 'auto' or 'exact', got {gd_order!r}")
        pre_traj, ft_traj, obj_traj, pre_before, ft_before, past = _penalised_finetune(
            net, run, task, pre_task, lrs, steps, l2, l2_on, record_steps, factor, method, dtype)
        order, exact, prediction = "exact", True, f"finetune(method={method!r}, l2_on={l2_on!r})"
    else:
        preds = [predict_finetune(run, task, lrs, int(k), pretrain_task=pre_task, gd_order=gd_order, method=method)
                 for k in record_steps]
        first = preds[0]
        pre_traj = np.stack([p.pretrain_loss_after for p in preds], -1)  # (C, R[, S], K)
        ft_traj = np.stack([p.finetune_loss_after for p in preds], -1)
        obj_traj, pre_before, ft_before = ft_traj, first.pretrain_loss_before, first.finetune_loss_before
        past = np.any([p.past_edge for p in preds], axis=0)
        order = first.gd_order
        exact = order != 0 and (order == "exact" or net.depth == 1 or (order == "auto" and steps <= AUTO_EXACT_STEPS))
        prediction = f"predict_finetune(gd_order={order!r})"
    P0 = np.asarray(run.end_to_end, np.float64)
    limit = factor * np.maximum(ft_before, _loss(task, np.zeros(P0.shape[-2:])))
    bad = ~np.isfinite(obj_traj) | (obj_traj > np.expand_dims(np.expand_dims(limit, 1), -1))
    diverged = bad.any(-1)
    bad_step = np.where(diverged, record_steps[np.argmax(bad, -1)], -1).astype(_v.step_dtype())
    invalid = diverged[..., None] & (record_steps >= bad_step[..., None])
    pre_traj, ft_traj = np.where(invalid, np.nan, pre_traj), np.where(invalid, np.nan, ft_traj)
    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    result = _rt.FinetuneResult(
        **_rt.checkpoint_axis(run), lr=lrs, ft_steps=steps, l2=l2, l2_on=l2_on,
        pretrain_loss_before=c(pre_before), finetune_loss_before=c(ft_before),
        pretrain_loss_after=c(pre_traj[..., -1]), finetune_loss_after=c(ft_traj[..., -1]),
        diverged=diverged, diverged_step=bad_step,
        record_steps=None if record_every is None else record_steps,
        pretrain_loss_trajectory=None if record_every is None else c(pre_traj),
        finetune_loss_trajectory=None if record_every is None else c(ft_traj),
        weights=None,
        past_edge=past, prediction=prediction, exact=bool(exact))
    if diverged.any():
        warnings.warn(f"{int(diverged.sum())} predicted fine-tuning run(s) diverged; their after-losses are NaN and "
                      "marked in result.diverged; lower the learning rate.", _rt.DivergenceWarning, stacklevel=2)
    return result


# ----------------------------------------------------------------------------- Gaussian perturbation


def gaussian(net: DeepLinear, run: _rt.PretrainResult, task: Task | None = None,
             gamma: float | Sequence[float] | ArrayLike = (0.01,), samples: int | None = None,
             key: jax.Array | int | None = None) -> _rt.SensitivityResult:
    r"""Predicted ``lo.sensitivity.gaussian(net, run, task, gamma=)``: the same
    :class:`~linoverfit.sensitivity.SensitivityResult` with axes ``(C, G[, S])``, holding the exact
    expectation :math:`\mathbb E[L(W + \gamma E)]` (:func:`~linoverfit.theory.perturbation.perturbation_sensitivity`,
    ``docs/theory.md`` section 2) at every checkpoint of ``run`` (simulated or predicted).

    Exact for any weights, depth and input covariance; for a Dataset the sensitivity uses its
    empirical covariance :math:`X^\top X/N` (the perturbation leaves :math:`\mathbb E P` unchanged, so
    the cross term with the labels vanishes). ``stderr`` is zero and ``samples`` is 0 (no draws):
    ``samples`` and ``key`` are accepted, and ignored, so the simulation's call runs unchanged.
    """
    del samples, key  # an expectation in closed form draws nothing
    net = _net(net)
    task = checked_run_task(net, run, task)
    weights = _f64(net.check_weights(run.weights, "run.weights"))
    dtype = _v.working_dtype(run.weights, "run.weights")
    gammas = _v.positive_vector(gamma, "gamma")
    if isinstance(task, Task):
        cov = np.asarray(task.input_cov, np.float64)
    else:
        x = np.asarray(task.x, np.float64)
        cov = x.T @ x / x.shape[0]
    P = weights[0]
    for w in weights[1:]:
        P = w @ P
    loss = _loss(task, P)  # (C[, S])
    with enable_x64(True):
        sens = np.asarray(perturbation_sensitivity(weights, jnp.asarray(gammas), jnp.asarray(cov)))  # (C[, S], G)
    sens = np.moveaxis(sens, -1, 1)  # (C, G[, S]), the simulation's order
    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    return _rt.SensitivityResult(
        **_rt.checkpoint_axis(run), gamma=gammas, samples=0, loss=c(loss),
        perturbed_loss=c(np.expand_dims(loss, 1) + sens), sensitivity=c(sens), stderr=np.zeros(sens.shape, dtype),
        prediction="perturbation_sensitivity", exact=True)

r"""Fine-tuning predicted from the end-to-end flow, and the forgetting it causes.

From each start (a checkpoint's own layers, or the balanced factors of a map) fine-tuning on a task
for :math:`\tau = \eta\cdot\text{steps}` is predicted without simulating parameters
(:func:`predict_finetune`: exact gradient descent, its modified equation, or the gradient flow of
:mod:`~linoverfit.theory.flow`), with the pre-training and fine-tuning losses before and after
(:class:`FinetunePrediction`), hence the forgetting :math:`L_{pre}(P(\tau)) - L_{pre}(P_0)`; and the
forgetting along the tangent line of the flow in closed form (:func:`first_order_forgetting`).
``docs/theory.md`` sections 4 and 5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import validation as _v
from ..result_types import PretrainResult
from ..results import Result, result, static
from ..tasks import Dataset, Task
from ..tuned import TunedFinetune, at_lr
from ._args import _depth, _nonneg
from ._gd import AUTO_EXACT_ABOVE, AUTO_EXACT_STEPS, _gd_order, _integrate_gd, _iterate_gd
from .curvature import check_edge
from .flow import _integrate, _maps, _method, _task, _velocity

if TYPE_CHECKING:
    from collections.abc import Sequence
    from numpy.typing import ArrayLike


__all__ = ["predict_finetune", "first_order_forgetting", "FinetunePrediction"]


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

    def at_lr(self, lr, *, interpolation: str = "linear", steps: int | None = None,
              missing: str = "raise") -> TunedFinetune:
        r"""The prediction read at one learning rate per checkpoint :math:`\lambda_c`, ``lr`` ``(C,)`` or
        ``(C, K)``: a :class:`~linoverfit.tuned.TunedFinetune` with losses after ``(C, K[, S])``, the same
        type and interpolation as :meth:`linoverfit.FinetuneResult.at_lr` (:func:`linoverfit.tuned.at_lr`)."""
        return at_lr(self, lr, interpolation=interpolation, steps=steps, missing=missing)


def _resolve_start(start, depth, pretrain_task, with_weights=False):
    """(P0, depth, pretrain_task, t[, weights]) from a PretrainResult or an array of maps
    (``weights``: the run's layers as float64 arrays ``(C[, S], n_l, n_{l-1})``, None for maps)."""
    if isinstance(start, PretrainResult):
        if start.weights is None:
            raise ValueError("start has no weights (it was pre-trained with lo.pretrain(..., keep_weights=False))")
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

    From each :math:`P_0` the fine-tuned map is :math:`P(\tau)` of :func:`~linoverfit.theory.flow.end_to_end_flow` on
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
    a closed form at depth 2 with :math:`\Sigma = I`, :func:`~linoverfit.theory.flow.end_to_end_flow`).

    Assumes plain fine-tuning (no l2 pull, no weight decay), and balanced layers for bare maps.

    Args:
      start: a :class:`~linoverfit.PretrainResult` (its maps, depth and task are used), or maps
        ``(C[, S], d_out, d_in)`` (then ``depth`` and ``pretrain_task`` are required).
      finetune_task: the fine-tuning :class:`~linoverfit.Task`.
      lr: learning rate(s) :math:`\eta > 0`, shape ``(R,)``; ``steps``: fine-tuning steps >= 1.
      pretrain_task: Task or Dataset whose loss is tracked (default: the run's task).
      return_maps: also return the fine-tuned maps ``(C, R[, S], d_out, d_in)``.
      gd_order: ``"auto"`` (default), ``"exact"``, 2, 1, or 0 (gradient flow); see above.
      method, rtol, atol: as in :func:`~linoverfit.theory.flow.end_to_end_flow` (``"function"`` and ``"closed"`` need
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

    With :math:`V = \dot P(0)` from :func:`~linoverfit.theory.flow.end_to_end_velocity` (on ``finetune_task``) the flow is
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
      >>> lo.theory.forgetting.first_order_forgetting(np.eye(2), ft, [0.1, 0.2], depth=2, pretrain_task=pre)
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

r"""Fine-tuning predicted by the network linearised at each checkpoint (the empirical-kernel prediction).

From a checkpoint :math:`W^0` (all parameters flattened, :math:`n` of them) the first-order Taylor
model :math:`f_{lin}(x; W) = f(x; W^0) + J(x; W^0)(W - W^0)` is fine-tuned by GD at learning rate
:math:`\eta`. On :math:`N` rows :math:`(X, Y)` with the library's loss
:math:`L = \tfrac{w}{2}\sum_n\lVert f(x_n) - y_n\rVert^2`, :math:`w = 1/N` (a
:class:`~linoverfit.Dataset`, :mod:`linoverfit.objective`), the residual
:math:`r = \operatorname{vec}(f_{lin}(X) - Y)` (``M = N d_out`` entries) and the train Jacobian
:math:`J` ``(M, n)`` give :math:`\delta_{k+1} = \delta_k - \eta w J^\top r_k`,
:math:`r_{k+1} = (I - \eta w K) r_k`, :math:`K = JJ^\top` the empirical neural tangent kernel. So,
with :math:`K = Q\Lambda Q^\top` and :math:`s_k(a) = \sum_{j<k}(1 - a)^j = (1 - (1-a)^k)/a`,

.. math:: r_k = Q(I - \eta w\Lambda)^kQ^\top r_0, \qquad
          W_k - W^0 = -\eta w\,J^\top Q\,s_k(\eta w\Lambda)\,Q^\top r_0

(``docs/theory.md``, section 11.2). When :math:`n < M` the same is computed from
:math:`G = J^\top J = V\Lambda V^\top` (the same non-zero spectrum):
:math:`W_k - W^0 = -\eta w\,V s_k(\eta w\Lambda) V^\top J^\top r_0`. The predicted losses are those of
:math:`f_{lin}(\cdot; W_k)` on the pre-training and fine-tuning objectives (``jax.linearize`` of the
outputs at :math:`W^0`). For a linear network on a population :class:`~linoverfit.Task` the rows are
:math:`X = \Sigma^{1/2}`, :math:`Y = XA^\top` with :math:`w = 1`
(:math:`\tfrac12\operatorname{tr}((P-A)\Sigma(P-A)^\top) = \tfrac12\sum_i\lVert(P - A)x_i\rVert^2`), and
:math:`f_{lin}` is the linearised end-to-end map :math:`P^0 + \mathrm dP(\delta)`.

Exact for a network linear in its parameters (depth-1 :class:`~linoverfit.DeepLinear` or
:class:`~linoverfit.MLP`): the Taylor model is the network. Otherwise the error in the losses is
:math:`O((\eta k)^2)` relative to the change they predict as :math:`\eta k \to 0` (section 11.2). Computed
in float64 (``jax.enable_x64`` inside) whatever the weights' dtype; the results come back in it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from .. import objective as _obj
from .. import validation as _v
from ..models import MLP
from ..networks import DeepLinear, Network, check_network, end_to_end
from ..precision import enable_x64
from ..pretraining import DIVERGENCE_FACTOR, check_objective
from ..result_types import DivergenceWarning, FinetuneResult, PretrainResult, checked_run, checkpoint_axis
from ..tasks import Dataset, Task
from .curvature import check_edge
from .hutchinson import _output_loss

__all__ = ["finetune", "geometric_sum", "LinearisedRun"]


def geometric_sum(a: ArrayLike, k: ArrayLike) -> jax.Array:
    r""":math:`s_k(a) = \sum_{j=0}^{k-1}(1 - a)^j`, elementwise, for integer :math:`k \ge 1` and any real
    :math:`a` (broadcast): :math:`k` at :math:`a = 0`, :math:`-\operatorname{expm1}(k\log(1-a))/a` for
    :math:`a < 1/2` (no cancellation as :math:`a \to 0`), :math:`(1 - (1-a)^k)/a` with the sign of
    :math:`(1-a)^k` for :math:`a \ge 1/2`."""
    a, k = jnp.asarray(a), jnp.asarray(k)
    small = a < 0.5
    safe_a = jnp.where(a == 0, 1.0, a)
    near = -jnp.expm1(k * jnp.log1p(-jnp.where(small, a, 0.0))) / safe_a
    b = 1.0 - jnp.where(small, 0.0, a)
    bk = jnp.exp(k * jnp.log(jnp.abs(b))) * jnp.where((b < 0) & (k % 2 == 1), -1.0, 1.0)
    far = (1.0 - bk) / safe_a
    return jnp.where(a == 0, k.astype(a.dtype), jnp.where(small, near, far))


@dataclass(frozen=True)
class LinearisedRun:
    r"""One checkpoint, ``W`` (a tuple of layers or a params pytree) -> the losses of its linearised model
    before ``(pre, ft)`` (scalars), after every learning rate and record ``(R, K)`` each, and the top
    eigenvalue :math:`w\lambda_{max}(J^\top J)` of the linearised fine-tuning objective (its GD edge is
    :math:`2/\cdot`). ``shared = ((X, Y, w), ft_task, pre_task, lrs, record_steps)``. ``net`` is ``None``
    for a linear network (end-to-end map); ``kernel``: eigendecompose :math:`JJ^\top` (else :math:`J^\top J`)."""

    kernel: bool
    net: Any = None

    def __call__(self, W, shared):
        (x, y, w), ft_task, pre_task, lrs, ks = shared
        flat, unravel = ravel_pytree(W)
        net = self.net

        def train_out(p):
            Wp = unravel(p)
            return (x @ end_to_end(Wp).T if net is None else net.apply(Wp, x)).reshape(-1)

        r0 = train_out(flat) - y.reshape(-1)
        jac = jax.jacrev if self.kernel else jax.jacfwd  # fewer passes: M reverse or n forward
        J = jac(train_out)(flat)  # (M, n)
        lam, Q = jnp.linalg.eigh(J @ J.T if self.kernel else J.T @ J)
        proj = Q.T @ (r0 if self.kernel else J.T @ r0)
        s = geometric_sum(w * lrs[:, None, None] * lam, ks[None, :, None])  # (R, K, m)
        coef = -(w * lrs)[:, None, None] * s * proj  # (R, K, m)
        delta = coef @ Q.T @ J if self.kernel else coef @ Q.T  # (R, K, n)

        def losses(task):
            out, ell = _output_loss(net, task, False)
            o0, lin = jax.linearize(lambda p: out(unravel(p)), flat)
            after = jax.vmap(jax.vmap(lambda d: ell(o0 + lin(d))))(delta)
            return ell(o0), after

        (pre0, pre), (ft0, ft) = losses(pre_task), losses(ft_task)
        return pre0, ft0, pre, ft, w * lam[-1]


@partial(jax.jit, static_argnames=("fn",))
def _each_checkpoint(Ws, shared, fn):
    """``fn`` over the leading axis of ``Ws``, one checkpoint at a time (``lax.map``): its Jacobian
    ``(M, n)`` and kernel are the working set. Not :func:`linoverfit.sweep`: the closed form runs in
    float64 inside ``enable_x64`` on one device, as :func:`~linoverfit.theory.curvature.sharpness` does."""
    return jax.lax.map(lambda W: fn(W, shared), Ws)


def _rows(task):
    """The rows the linearised GD is fitted on: ``(X, Y, w)`` with loss ``w/2 sum ||f(x) - y||^2`` (+ const)."""
    if isinstance(task, Dataset):
        return task.x, task.y, jnp.asarray(1.0 / task.n, task.x.dtype)
    x = task.input_sqrt()
    return x, x @ task.teacher.T, jnp.asarray(1.0, x.dtype)


def _f64(task):
    return _v.cast_objective(task, jnp.float64)


def finetune(
    net: Network,
    run: PretrainResult,
    task: Task | Dataset,
    lr: float | Sequence[float] | ArrayLike = (0.01,),
    steps: int = 1000,
    *,
    record_every: int | None = None,
    pretrain_task: Task | Dataset | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> FinetuneResult:
    r"""Predicted ``lo.finetune(net, run, task, lr=, steps=)`` by the network linearised at each checkpoint:
    GD at each ``lr`` on :math:`f(x;W^0) + J(x;W^0)(W - W^0)`, in closed form (module docstring).

    Args:
      net, run: any :class:`~linoverfit.networks.Network` and a :class:`~linoverfit.PretrainResult` with weights.
      task: the fine-tuning Dataset (any network) or Task (population loss; linear networks).
      lr: learning rates :math:`\eta > 0`, shape ``(R,)``; steps: GD steps :math:`k \ge 1`.
      record_every: also predict the losses every ``record_every`` steps (must divide ``steps``).
      pretrain_task: the objective whose loss measures forgetting (default ``run.task``).
      divergence_factor: the simulation's rule at the records: a fine-tuning loss non-finite or above
        this times :math:`\max(L_{ft}(W^0), L_{ft}(0))` marks the run diverged (NaN from that record).

    Returns a :class:`~linoverfit.FinetuneResult` laid out as ``lo.finetune``'s: ``(C[, S])`` before,
    ``(C, R[, S])`` after, ``(C, R[, S], K)`` trajectories with ``record_every``; ``l2`` 0,
    ``weights`` None, ``prediction="linearised"``, ``exact`` True for a network linear in its
    parameters (depth 1), and ``past_edge`` where :math:`\eta \ge 2/(w\lambda_{max}(J^\top J))`, the edge
    of GD on the linearised objective (a :class:`~linoverfit.theory.PastEdgeWarning` is raised).
    Cost per checkpoint: the ``(N d_out, n)`` Jacobian and an ``eigh`` of size ``min(N d_out, n)``.
    """
    check_network(net)
    checked_run(run, "fine-tuning")
    task = check_objective(net, task, "task")
    pre_task = check_objective(net, run.task if pretrain_task is None else pretrain_task, "pretrain_task")
    weights = net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(jax.tree.leaves(weights), "run.weights")
    nonlinear = _obj.nonlinear(net)
    lrs = _v.positive_vector(lr, "lr")
    steps = _v.positive_int(steps, "steps")
    factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    record_steps = _v.record_grid(steps, record_every)
    lead = tuple(run.loss.shape)
    B = int(np.prod(lead))
    with enable_x64(True):
        if nonlinear:
            Ws = jax.tree.map(lambda w: jnp.reshape(jnp.asarray(w, jnp.float64), (B,) + np.shape(w)[len(lead):]), weights)
        else:
            Ws = tuple(jnp.reshape(jnp.asarray(w, jnp.float64), (B,) + np.shape(w)[-2:]) for w in weights)
        ft, pre = _f64(task), _f64(pre_task)
        rows = _rows(ft)
        n = sum(int(np.prod(np.shape(w)[1:])) for w in jax.tree.leaves(Ws))
        M = int(np.prod(rows[1].shape))
        fn = LinearisedRun(kernel=M <= n, net=net if nonlinear else None)
        shared = (rows, ft, pre, jnp.asarray(lrs), jnp.asarray(record_steps, jnp.float64))
        out = _each_checkpoint(Ws, shared, fn)
        pre0, ft0, pre_traj, ft_traj, top = (np.asarray(x) for x in out)
        zero = float(_obj.zero_map_loss(ft))

    def to_cr(x):  # (B, R, ...) -> (C, R[, S], ...)
        x = x.reshape(lead + x.shape[1:])
        return np.moveaxis(x, len(lead), 1) if len(lead) == 2 else x

    pre_traj, ft_traj = to_cr(np.moveaxis(pre_traj, 2, -1)), to_cr(np.moveaxis(ft_traj, 2, -1))  # (C, R[, S], K)
    pre0, ft0, top = pre0.reshape(lead), ft0.reshape(lead), top.reshape(lead)
    with np.errstate(divide="ignore"):
        edge = np.expand_dims(2.0 / top, 1)
    r = lrs.reshape((1, -1) + (1,) * (len(lead) - 1))
    past = check_edge(np.broadcast_to(r, np.broadcast_shapes(r.shape, edge.shape)), edge,
                      "lo.theory.linearised.finetune")
    limit = factor * np.maximum(ft0, zero)
    bad = ~np.isfinite(ft_traj) | (ft_traj > np.expand_dims(np.expand_dims(limit, 1), -1))
    diverged = bad.any(-1)
    bad_step = np.where(diverged, record_steps[np.argmax(bad, -1)], -1).astype(_v.step_dtype())
    invalid = diverged[..., None] & (record_steps >= bad_step[..., None])
    pre_traj, ft_traj = np.where(invalid, np.nan, pre_traj), np.where(invalid, np.nan, ft_traj)
    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    linear_in_params = isinstance(net, (DeepLinear, MLP)) and net.depth == 1
    result = FinetuneResult(
        **checkpoint_axis(run), lr=lrs, ft_steps=steps, l2=0.0,
        pretrain_loss_before=c(pre0), finetune_loss_before=c(ft0),
        pretrain_loss_after=c(pre_traj[..., -1]), finetune_loss_after=c(ft_traj[..., -1]),
        diverged=diverged, diverged_step=bad_step,
        record_steps=None if record_every is None else record_steps,
        pretrain_loss_trajectory=None if record_every is None else c(pre_traj),
        finetune_loss_trajectory=None if record_every is None else c(ft_traj),
        weights=None, past_edge=past, prediction="linearised", exact=linear_in_params)
    if diverged.any():
        warnings.warn(f"{int(diverged.sum())} linearised fine-tuning run(s) diverged; their after-losses are NaN and "
                      "marked in result.diverged; lower the learning rate.", DivergenceWarning, stacklevel=2)
    return result

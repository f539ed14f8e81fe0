r"""Fine-tuning: one run (:class:`FinetuneRun`: one checkpoint, one learning rate, one key), and every
checkpoint x seed x learning rate in one sweep (:func:`finetune`).

From a checkpoint :math:`W^0` a run takes ``steps`` steps of the optimiser (plain GD by default) on
:math:`L_{ft}(W) + R_\lambda(W)` and records the pre-training and fine-tuning losses. The penalty
toward the checkpoint (``l2`` = :math:`\lambda`) is either

* ``l2_on="layers"`` (default): the layer pull :math:`R_\lambda = \tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert_F^2`;
* ``l2_on="map"``: Springer et al.'s (2025, arXiv:2503.19206) penalty on the end-to-end map
  :math:`R_\lambda = \lambda\lVert\theta - \theta^0\rVert_F^2`, :math:`\theta = W_L\cdots W_1`
  (no 1/2: the convention of the paper's restatement, Feng et al. 2026, arXiv:2605.12705 App. C),
  whose layer gradient is :math:`2\lambda(\theta - \theta^0)` pulled back through the product.

The recorded fine-tuning losses are the task loss :math:`L_{ft}` alone for both penalties; the
divergence rule watches the objective :math:`L_{ft} + R_\lambda`.
A run that diverges (:func:`linoverfit.objective.diverging`, the objective the run minimises) is
frozen at its last finite weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from . import loops as _loops
from . import objective as _obj
from . import optimizers as _opt
from . import progress as _progress
from . import validation as _v
from .networks import Network, check_network, end_to_end
from .pretraining import (DIVERGENCE_FACTOR, WORKING_COPIES, check_batch_size, check_objective, checked_inputs,
                          flop_widths, n_params, rows, run_key)
from .result_types import DivergenceWarning, FinetuneResult, PretrainResult, checked_run, checkpoint_axis
from .sweeps import Footprint, Layout, Work, resolve_layout, sweep
from .tasks import Dataset, Task

__all__ = ["finetune", "FinetuneRun", "L2_ON"]

#: The penalties toward the checkpoint: the layer pull and Springer et al.'s end-to-end map penalty.
L2_ON = ("layers", "map")


def check_l2_on(l2_on) -> str:
    r"""``l2_on`` validated: one of :data:`L2_ON` (``"layers"``: :math:`\tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert^2`,
    ``"map"``: :math:`\lambda\lVert\theta - \theta^0\rVert^2`), else a ValueError naming the argument."""
    if not isinstance(l2_on, str) or l2_on not in L2_ON:
        raise ValueError(f"l2_on must be one of {L2_ON} (the l2 penalty on the layers or on the end-to-end map), "
                         f"got {l2_on!r}")
    return l2_on


def map_penalty(W, P0, l2):
    r"""Springer et al.'s penalty on the end-to-end map and its layer gradient:
    :math:`\lambda\lVert\theta - \theta^0\rVert_F^2` with :math:`\theta = W_L\cdots W_1`, and
    :math:`\partial/\partial W_l = (W_L\cdots W_{l+1})^\top 2\lambda(\theta - \theta^0)(W_{l-1}\cdots W_1)^\top`
    (one ``jax.vjp`` of the product). ``W``: layers ``(n_l, n_{l-1})``; ``P0``: ``(d_out, d_in)``."""
    P, pullback = jax.vjp(end_to_end, W)
    D = P - P0
    (g,) = pullback(2 * l2 * D)
    return l2 * jnp.sum(D * D), g


@dataclass(frozen=True)
class FinetuneRun:
    r"""One fine-tuning run, ``run = (b, lr, key)``: from start ``b`` of ``shared``'s ``W_start`` at
    learning rate ``lr``. Returns the final weights (``None`` unless ``return_weights``), the first
    bad step (``-1`` if none) and ``n_records`` pre-training / fine-tuning loss records.

    ``shared = (W_start, ft_task, pre_task, l2, seg_len, factor, spec)``: the starts ``(B, n_l, n_{l-1})``
    (held once, indexed by every run: memory does not grow with the number of learning rates),
    the prepared fine-tuning task, the pre-training task, :math:`\lambda`, steps per record, the
    divergence factor, and a traced :mod:`linoverfit.optimizers` spec (``None``: ``make_opt``).
    ``on_map`` (static): the penalty is :math:`\lambda\lVert\theta - \theta^0\rVert_F^2` on the
    end-to-end map (:func:`map_penalty`) instead of the layer pull. ``net`` (``None``: a linear
    network) is called through ``apply`` on the Datasets' samples when it is not linear; ``W_start``
    is then its params pytree with a leading ``B`` on every leaf.
    """

    make_opt: Callable | None
    batch_size: int | None
    n_records: int
    return_weights: bool
    identity: bool
    on_map: bool = False
    net: Any = None

    def __call__(self, run, shared):
        b, lr, key = run
        W_start, ft_task, pre_task, l2, seg_len, block, factor, spec = shared
        net = self.net if _obj.nonlinear(self.net) else None
        W_init = tuple(w[b] for w in W_start) if net is None else jax.tree.map(lambda w: w[b], W_start)
        tx = self.make_opt(lr) if spec is None else spec.transform(lr)
        limit = _obj.divergence_limit(ft_task, W_init, factor, self.identity, net)

        if self.on_map:
            P_init = end_to_end(W_init)

        def pull(W, loss, g):
            """The penalty toward the checkpoint (skipped at run time when l2 == 0): + l2/2 sum ||W - W0||^2
            (layers), or + l2 ||P - P0||^2 on the end-to-end map (``on_map``)."""
            def on(args):
                loss, g = args
                if self.on_map:
                    value, gp = map_penalty(W, P_init, l2)
                    return loss + value, tuple(gl + d for gl, d in zip(g, gp))
                if net is not None:  # any params pytree
                    diff = jax.tree.map(lambda w, w0: w - w0, W, W_init)
                    return (loss + 0.5 * l2 * sum(jnp.sum(d * d) for d in jax.tree.leaves(diff)),
                            jax.tree.map(lambda gl, d: gl + l2 * d, g, diff))
                diff = tuple(w - w0 for w, w0 in zip(W, W_init))
                return loss + 0.5 * l2 * sum(jnp.sum(d * d) for d in diff), tuple(gl + l2 * d for gl, d in zip(g, diff))

            return jax.lax.cond(l2 != 0, on, lambda args: args, (loss, g))

        def step(i, carry):
            # the loss at step i is that of the weights after i updates
            W, state, bad_step = carry

            def value_and_grad(W):
                loss, g = _obj.value_and_grad(ft_task, W, key, i, self.batch_size, self.identity, net=net)
                return pull(W, loss, g)

            loss, g = value_and_grad(W) if spec is None else spec.gradient(value_and_grad, W)
            bad_step = jnp.where((bad_step < 0) & _obj.diverging(loss, limit), i, bad_step)
            updates, new_state = tx.update(g, state, W)
            new_W = optax.apply_updates(W, updates)
            # freeze a diverged run at its last finite weights instead of propagating NaN
            keep = bad_step >= 0
            W = jax.tree.map(lambda old, new: jnp.where(keep, old, new), W, new_W)
            state = jax.tree.map(lambda old, new: jnp.where(keep, old, new), state, new_state)
            return W, state, bad_step

        def segment(carry, _):
            W, state, bad_step, i0 = carry
            unroll = _loops.UNROLL if spec is None else _loops.SPEC_UNROLL
            W, state, bad_step = _loops.fori_ticking(i0, seg_len, step, (W, state, bad_step), block, unroll, report=False)
            if net is None:
                P = end_to_end(W)
                ft_loss, pre_loss = _obj.loss(ft_task, P, self.identity), pre_task.loss(P)
            else:
                ft_loss, pre_loss = _obj.net_loss(net, ft_task, W), _obj.net_loss(net, pre_task, W)
            # the last update of the segment is checked here (the step loop checks each loss before an update)
            objective, _ = pull(W, ft_loss, W)
            end = i0 + seg_len
            bad_step = jnp.where((bad_step < 0) & _obj.diverging(objective, limit), end, bad_step)
            return (W, state, bad_step, end), (pre_loss, ft_loss)

        counter = seg_len.dtype
        init = (W_init, tx.init(W_init), jnp.asarray(-1, counter), jnp.asarray(0, counter))
        (W, _, bad_step, _), (pre_traj, ft_traj) = jax.lax.scan(segment, init, None, length=self.n_records)
        return (W if self.return_weights else None), bad_step, pre_traj, ft_traj


@partial(jax.jit, static_argnames=("lead", "R", "net"))
def _layout(outs, W_start, ft_task, pre_task, record_steps, lead, R, net=None):
    """The sweep's ``(B * R, ...)`` outputs as ``(C, R[, S], ...)``: final weights (``None`` unless kept),
    ``diverged``, first bad step, the records (NaN from each run's divergence step on), and the
    pre-training / fine-tuning losses at the checkpoints ``(C[, S])``."""
    W_end, bad_step, pre_traj, ft_traj = outs

    def to_cr(x):
        """(B * R, ...) -> (C, R[, S], ...)."""
        x = jnp.reshape(x, lead + (R,) + x.shape[1:])
        return jnp.moveaxis(x, len(lead), 1) if len(lead) == 2 else x

    W_end = None if W_end is None else (tuple(to_cr(w) for w in W_end) if net is None else jax.tree.map(to_cr, W_end))
    bad_step = to_cr(bad_step)
    diverged = bad_step >= 0
    # a record is invalid from the step where its run diverged on (the run is frozen there)
    invalid = diverged[..., None] & (record_steps >= bad_step[..., None])
    pre_traj, ft_traj = jnp.where(invalid, jnp.nan, to_cr(pre_traj)), jnp.where(invalid, jnp.nan, to_cr(ft_traj))
    if net is not None:  # a nonlinear network: its sample losses at each start, (B,) -> lead
        before = jax.vmap(lambda W: (_obj.net_loss(net, pre_task, W), _obj.net_loss(net, ft_task, W)))(W_start)
        return W_end, diverged, bad_step, pre_traj, ft_traj, tuple(jnp.reshape(x, lead) for x in before)
    P0 = end_to_end(tuple(jnp.reshape(w, lead + w.shape[-2:]) for w in W_start))
    return W_end, diverged, bad_step, pre_traj, ft_traj, (pre_task.loss(P0), ft_task.loss(P0))


def finetune(
    net: Network,
    run: PretrainResult,
    task: Task | Dataset,
    lr: float | Sequence[float] | ArrayLike = (0.01,),
    steps: int = 1000,
    *,
    l2: float = 0.0,
    l2_on: str = "layers",
    optimizer: Any = None,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    record_every: int | None = None,
    return_weights: bool = False,
    pretrain_task: Task | Dataset | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    layout: Layout | None = None,
    devices: Any = None,
    chunk: int | None = None,
    progress: bool | None = None,
) -> FinetuneResult:
    r"""Fine-tune every checkpoint of ``run`` at every learning rate, in one compiled call.

    From each checkpoint :math:`W^0` it runs ``steps`` steps of
    :math:`W \leftarrow W - \eta\,\nabla_W\big(L_{ft}(W) + R_\lambda(W)\big)` with
    :math:`R_\lambda = \tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert_F^2` (``l2_on="layers"``) or
    :math:`R_\lambda = \lambda\lVert W_L\cdots W_1 - \theta^0\rVert_F^2` (``l2_on="map"``, Springer et al. 2025)
    (or the ``optimizer``'s update of that gradient) and measures the pre-training loss
    :math:`L_{pre}` (``run.task`` unless ``pretrain_task`` is given) and the fine-tuning loss
    :math:`L_{ft}` before and after, so forgetting is :math:`L_{pre}(W_{ft}) - L_{pre}(W^0)`.

    Args:
      net: the network of ``run`` (any :class:`~linoverfit.networks.Network`; a nonlinear one needs
        Dataset tasks, ``task`` and the pre-training task, and ``l2_on="layers"``).
      run: a :class:`PretrainResult` with weights (simulated, or predicted by :func:`linoverfit.theory.pretrain`).
      task: the fine-tuning Task or Dataset.
      lr: one or more learning rates (all > 0), shape ``(R,)``.
      steps: fine-tuning steps (>= 1).
      l2: :math:`\lambda \ge 0`, the strength of the penalty toward the checkpoint.
      l2_on: ``"layers"`` (default): the layer pull :math:`\tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert_F^2`;
        ``"map"``: Springer et al.'s (2025, arXiv:2503.19206) penalty on the end-to-end map
        :math:`\lambda\lVert\theta - \theta^0\rVert_F^2`, :math:`\theta = W_L\cdots W_1` (no 1/2;
        ``docs/theory.md``). Either is in the divergence rule's objective; the recorded
        ``finetune_loss_*`` are the task loss :math:`L_{ft}` without it.
      optimizer: as in :func:`linoverfit.pretrain`: ``None`` (GD), a :mod:`linoverfit.optimizers`
        instance or name (momentum, Adam, SAM; hyperparameters traced), an optax transformation or
        a callable ``lr -> GradientTransformation``.
      batch_size: minibatch SGD on a Dataset task (drawn from ``key`` and the step).
      key: a ``jax.random`` key or an integer seed; required with ``batch_size``.
      record_every: also record both losses every ``record_every`` steps (must divide ``steps``).
      return_weights: also return the fine-tuned weights ``(C, R[, S], n_l, n_{l-1})``.
      pretrain_task: the task whose loss measures forgetting (default ``run.task``).
      divergence_factor: a run diverges when its objective exceeds this times its natural scale.
      layout: :class:`~linoverfit.Layout`: the checkpoint x seed x learning-rate runs are one flat
        sweep axis sharded over ``devices``, ``chunk`` runs per vmap (default 4), and a progress bar
        over the runs.
      devices, chunk, progress: shorthands for the fields of ``layout`` (not together with it).

    Returns a :class:`FinetuneResult` ``(C, R[, S])``. Diverged runs (non-finite or exploding
    objective) are frozen, reported with a :class:`DivergenceWarning` naming the checkpoint and
    learning rate, marked in ``diverged``/``diverged_step``, and their after-losses are NaN.
    """
    check_network(net)
    checked_run(run, "fine-tuning")
    layout = resolve_layout(layout, devices, chunk, progress)
    task = check_objective(net, task, "task")
    pre_task = check_objective(net, run.task if pretrain_task is None else pretrain_task, "pretrain_task")
    weights = net.check_weights(run.weights, "run.weights")
    nonlinear = _obj.nonlinear(net)
    lrs = _v.positive_vector(lr, "lr")
    steps = _v.positive_int(steps, "steps")
    _v.representable_steps(steps, "steps")
    l2 = _v.positive_scalar(l2, "l2", allow_zero=True)
    l2_on = check_l2_on(l2_on)
    if nonlinear and l2_on == "map":
        raise ValueError(f"l2_on='map' penalises the end-to-end map, which a nonlinear {type(net).__name__} does not "
                         "have; use l2_on='layers' (the pull on every parameter)")
    divergence_factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    batch_size = check_batch_size(batch_size, task)
    if record_every is None:
        n_records, seg_len = 1, steps
    else:
        record_every = _v.positive_int(record_every, "record_every")
        if steps % record_every:
            raise ValueError(f"record_every ({record_every}) must divide steps ({steps})")
        n_records, seg_len = steps // record_every, record_every
    make_opt, spec = _opt.resolve(optimizer)

    lead = tuple(run.loss.shape)  # (C,) or (C, S)
    B, R = int(np.prod(lead)), lrs.size
    key = run_key(key, batch_size)
    dtype, weights, (task, pre_task) = checked_inputs(weights, (task, pre_task), "run.weights")
    P, isz = n_params(weights, net), np.dtype(dtype).itemsize
    footprint = Footprint(
        shared=B * P * isz, per_run=WORKING_COPIES * P * isz,
        per_output=((P if return_weights else 0) + 2 * n_records + 2) * isz, label="fine-tuning",
        what=f"{lead[0]} checkpoints x {lead[1] if len(lead) > 1 else 1} seed(s) x {R} learning rate(s) = {B * R} "
        f"runs of {P} parameters of {np.dtype(dtype).name}, {n_records} record(s) per run"
        + (", final weights returned" if return_weights else ""),
        fix="pass return_weights=False, fewer checkpoints or learning rates per call, a larger record_every, "
        "or a smaller chunk")
    if nonlinear:
        W_start = jax.tree.map(lambda w: jnp.reshape(w, (B,) + w.shape[len(lead):]), weights)
    else:
        W_start = tuple(jnp.reshape(w, (B,) + w.shape[-2:]) for w in weights)
    lrs_d = jnp.asarray(lrs, dtype)
    runs = (jnp.repeat(jnp.arange(B, dtype=jnp.int32), R), jnp.tile(lrs_d, B), jax.random.split(key, B * R))
    identity = _obj.identity_cov(task)
    flops = _progress.step_flops(flop_widths(net), rows(task, batch_size))
    # interrupt points inside a run's step loop only when a chunk (4 runs by default) is long; the
    # progress bar advances per chunk (the sweep's ticks)
    block = _progress.tick_block(steps, 4 * flops, at_least=0)
    shared = (W_start, _obj.prepared(task), pre_task, jnp.asarray(l2, dtype),
              jnp.asarray(seg_len, _v.step_dtype()), jnp.asarray(block, _v.step_dtype()),
              jnp.asarray(divergence_factor, dtype),
              None if spec is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), spec))
    work = Work(desc="fine-tuning", unit="run", flops=flops * float(steps) * B * R)
    fn = FinetuneRun(make_opt=make_opt, batch_size=batch_size, n_records=n_records,
                     return_weights=bool(return_weights), identity=identity, on_map=l2_on == "map",
                     net=net if nonlinear else None)
    outs = sweep(fn, runs, shared, layout=layout, work=work, footprint=footprint, default_chunk=4)
    record_steps = seg_len * np.arange(1, n_records + 1)
    W_end, diverged, bad_step, pre_traj, ft_traj, (pre_before, ft_before) = jax.block_until_ready(
        _layout(outs, W_start, task, pre_task, record_steps, lead, R, net if nonlinear else None))
    result = FinetuneResult(
        lr=lrs,
        ft_steps=steps,
        l2=l2,
        l2_on=l2_on,
        pretrain_loss_before=pre_before,
        finetune_loss_before=ft_before,
        pretrain_loss_after=pre_traj[..., -1],
        finetune_loss_after=ft_traj[..., -1],
        diverged=diverged,
        diverged_step=bad_step,
        record_steps=None if record_every is None else record_steps,
        pretrain_loss_trajectory=None if record_every is None else pre_traj,
        finetune_loss_trajectory=None if record_every is None else ft_traj,
        weights=W_end,
        **checkpoint_axis(run),
    )
    if bool(jnp.any(diverged)):
        idx = np.argwhere(np.asarray(diverged))
        where = ", ".join(
            f"checkpoint step {result.steps[c]} at lr={lrs[r]:g} (step {int(bad_step[tuple(i)])})"
            for i in idx[:5] for c, r in [(i[0], i[1])]
        )
        more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
        warnings.warn(
            f"{len(idx)} fine-tuning run(s) diverged: {where}{more}. Their after-losses are NaN and "
            "marked in result.diverged; lower the learning rate.",
            DivergenceWarning,
            stacklevel=2,
        )
    return result

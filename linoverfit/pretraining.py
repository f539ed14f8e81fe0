r"""Pre-training: one run (:class:`PretrainRun`), and every seed of it in one sweep (:func:`pretrain`).

Each step is :math:`W \leftarrow W - \eta\,(\nabla_W L(W) + \lambda W)` for plain GD, or an
optimiser's update of :math:`\nabla_W L + \lambda W`; the gradient is the one objective of
:mod:`linoverfit.objective`. Gradient-flow time is the cumulative learning rate
:math:`t_k = \sum_{j<k}\eta_j`.

Divergence (:func:`linoverfit.objective.diverging`): the loss of the weights after every update,
the last one included, must stay finite and below ``divergence_factor`` times the task's natural
scale, or :class:`~linoverfit.DivergenceError` is raised with the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from . import objective as _obj
from . import optimizers as _opt
from . import progress as _progress
from . import loops as _loops
from . import validation as _v
from .networks import Network, check_network, lead_shape, param_count
from .result_types import DivergenceError, PretrainResult
from .sweeps import Footprint, Layout, Work, resolve_layout, sweep
from .tasks import Dataset, Task

__all__ = ["pretrain", "PretrainRun", "DIVERGENCE_FACTOR", "EVAL_SAMPLES"]

#: A run counts as exploding once its loss exceeds this factor times the larger of its
#: starting loss and the loss of the zero map (the natural scale of the task).
DIVERGENCE_FACTOR = 1e4
#: A nonlinear network trained online on a Task has no population loss: its checkpoint losses are
#: measured on this many samples of the task, drawn once from ``key`` (``result.task`` is that Dataset).
EVAL_SAMPLES = 4096


@dataclass(frozen=True)
class PretrainRun:
    r"""One pre-training run, ``run = (W_init, key)`` -> ``(weights (C, ...) or None, losses (C,), bad step)``.

    ``shared = (task, lr, weight_decay, seg_lengths, block, factor, lr_scale, spec, root, eval_set)``: the
    prepared task (:func:`linoverfit.objective.prepared`), the peak rate, weight decay, the step
    counts between checkpoints ``(C,)``, the progress block, the divergence factor, per-step
    multipliers of a schedule (``None``: constant), a traced :mod:`linoverfit.optimizers` spec
    (``None``: ``make_opt``), :math:`\Sigma^{1/2}` for online samples (``None``: white inputs) and
    the Dataset the checkpoint losses are measured on (``None``: ``task``; a nonlinear network
    trained online, :data:`EVAL_SAMPLES`). The fields are static (hashable): the compiled program
    is reused for new values of everything in ``shared``. ``net`` (``None``: a linear network
    through its end-to-end map) is called through ``apply`` when it is not linear.
    """

    make_opt: Callable | None
    batch_size: int | None
    keep_weights: bool
    identity: bool
    online: bool
    net: Any = None

    def __call__(self, run, shared):
        W_init, key = run
        task, lr, weight_decay, seg_lengths, block, factor, lr_scale, spec, root, eval_set = shared
        net = self.net if _obj.nonlinear(self.net) else None
        measured = task if eval_set is None else eval_set
        opt = self.make_opt(lr) if spec is None else spec.transform(lr)
        tx = optax.chain(optax.add_decayed_weights(weight_decay), opt)
        limit = _obj.divergence_limit(measured, W_init, factor, self.identity, net)

        def step(i, carry):
            # the loss at step i is that of the weights after i updates
            W, state, bad_step = carry
            value_and_grad = partial(_obj.value_and_grad, task, key=key, step=i, batch_size=self.batch_size,
                                     identity=self.identity, root=root, net=net)
            loss, g = value_and_grad(W) if spec is None else spec.gradient(value_and_grad, W)
            bad_step = jnp.where((bad_step < 0) & _obj.diverging(loss, limit), i, bad_step)
            updates, state = tx.update(g, state, W)
            if lr_scale is not None:  # a schedule: eta_i = lr * lr_scale[i] multiplies the update
                updates = jax.tree.map(lambda u: lr_scale[i].astype(u.dtype) * u, updates)
            return optax.apply_updates(W, updates), state, bad_step

        def segment(carry, n):
            W, state, bad_step, i0 = carry
            unroll = _loops.UNROLL if spec is None else _loops.SPEC_UNROLL
            # progress (and Ctrl-C) every `block` steps, inside the segment
            W, state, bad_step = _loops.fori_ticking(i0, n, step, (W, state, bad_step), block, unroll=unroll)
            loss = _obj.net_loss(net, measured, W, self.identity)
            # the last update of the segment is checked here (its loss is the checkpoint's)
            bad_step = jnp.where((bad_step < 0) & _obj.diverging(loss, limit), i0 + n, bad_step)
            return (W, state, bad_step, i0 + n), (W if self.keep_weights else None, loss)

        counter = seg_lengths.dtype
        init = (W_init, tx.init(W_init), jnp.asarray(-1, counter), jnp.asarray(0, counter))
        (_, _, bad_step, _), (Ws, losses) = jax.lax.scan(segment, init, seg_lengths)
        return Ws, losses, bad_step


def lr_schedule(lr, n_steps: int):
    """``(peak, per_step)``: a constant rate gives ``(lr, None)``; a schedule (callable ``step -> lr``,
    e.g. an optax schedule) is evaluated at steps ``0 .. n_steps - 1`` into a float64 array."""
    if not callable(lr):
        return _v.positive_scalar(lr, "lr"), None
    steps = np.arange(n_steps)
    try:
        values = np.asarray(lr(jnp.asarray(steps)), dtype=np.float64)
    except Exception:  # a schedule written for scalar steps only
        values = None
    if values is None or values.shape != steps.shape:
        values = np.asarray([float(lr(int(k))) for k in steps], dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("lr schedule must give finite learning rates >= 0 at every step")
    peak = float(values.max()) if values.size else 0.0
    if peak <= 0:
        raise ValueError("lr schedule is 0 at every step: nothing would be learnt")
    return peak, values


def check_objective(net: Network, task, name: str, online: bool = False, streams: bool = False):
    """``task`` checked to be a Task or Dataset fitting ``net``'s widths, and a Dataset (or a Task sampled
    ``online``) for a nonlinear ``net`` (:func:`linoverfit.objective.require_samples`; ``streams``: the
    caller can sample online, so the error suggests it)."""
    if not isinstance(task, (Task, Dataset)):
        raise TypeError(f"{name} must be a linoverfit Task or Dataset, got {type(task).__name__}")
    return _obj.require_samples(net, net.check_task(task, name), name, online, streams)


def check_batch_size(batch_size, task, name="batch_size", online=False):
    """``batch_size`` checked against the objective: online SGD needs a Task, minibatches a Dataset."""
    if online:
        if not isinstance(task, Task) or batch_size is None:
            raise ValueError("lo.pretrain(..., online=True) needs a Task (the stream to draw from) and a batch_size")
        return _v.positive_int(batch_size, name)
    if batch_size is None:
        return None
    if not isinstance(task, Dataset):
        raise ValueError(f"{name} needs a finite-sample Dataset task (population loss has no minibatches; "
                         "make one with task.sample(n, key))")
    batch_size = _v.positive_int(batch_size, name)
    if batch_size > task.n:
        raise ValueError(f"{name} ({batch_size}) exceeds the number of samples ({task.n})")
    return batch_size


def run_key(key, batch_size):
    """The key of a run: required for minibatch SGD, checked (and otherwise unused) for full-batch GD."""
    if batch_size is not None:
        return _v.prng_key(key, "key", purpose=f"minibatch SGD (batch_size={batch_size})")
    key = _v.prng_key(key, "key", required=False)
    return jax.random.key(0) if key is None else key  # full-batch GD draws nothing


def checked_inputs(weights, objectives, name):
    """The dtype policy: every array of ``weights`` (a tuple of layers, or any params pytree) and of the
    objectives in one working dtype (see :func:`linoverfit.validation.working_dtype`); returns
    ``(dtype, weights, objectives)``."""
    dtype = _v.working_dtype(jax.tree.leaves(weights), name)
    cast = (tuple(jnp.asarray(w, dtype) for w in weights) if isinstance(weights, tuple)
            else jax.tree.map(lambda w: jnp.asarray(w, dtype), weights))
    return (dtype, cast,
            tuple(None if t is None else _v.cast_objective(t, dtype) for t in objectives))


def n_params(weights, net=None) -> int:
    """Parameters of one network (the last two axes of each layer; the template of ``net`` when it is
    given and has no layer ``shapes``)."""
    if net is not None and not hasattr(net, "shapes"):
        return param_count(net)
    return sum(int(np.prod(np.shape(w)[-2:])) for w in weights)


def flop_widths(net) -> tuple:
    """Widths for :func:`linoverfit.progress.step_flops`: ``net.widths``, or ``(1, parameters)`` for a
    network without them (the estimate ``6 * rows * parameters``)."""
    return tuple(net.widths) if hasattr(net, "widths") else (1, param_count(net))


def rows(task, batch_size):
    """Rows of the matmuls of one step (for the time estimate of a progress bar)."""
    if batch_size is not None:
        return batch_size
    return task.n if isinstance(task, Dataset) else None


#: Per-run working set of a step, in units of one network's parameters: the weights, the gradient,
#: the update, the new weights, the start point (fine-tuning) and two optimizer moments (Adam).
WORKING_COPIES = 8


@partial(jax.jit, static_argnames=("batched",))
def _layout(Ws, losses, batched):
    """(S, C, ...) -> (C, S, ...), or (C, ...) without a seed axis."""
    layout = (lambda x: jnp.swapaxes(x, 0, 1)) if batched else (lambda x: x[0])
    if Ws is None or isinstance(Ws, tuple):
        return (None if Ws is None else tuple(layout(w) for w in Ws)), layout(losses)
    return jax.tree.map(layout, Ws), layout(losses)


def pretrain(
    net: Network,
    W0: Sequence[ArrayLike],
    task: Task | Dataset,
    lr: float | Callable = 0.05,
    checkpoints: Sequence[int] | ArrayLike = (1000,),
    *,
    optimizer: Any = None,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    online: bool = False,
    key: jax.Array | int | None = None,
    keep_weights: bool = True,
    divergence_factor: float = DIVERGENCE_FACTOR,
    layout: Layout | None = None,
    devices: Any = None,
    chunk: int | None = None,
    progress: bool | None = None,
) -> PretrainResult:
    r"""Pre-train ``net`` from ``W0`` on ``task`` and keep every checkpoint, in one compiled run.

    Each step is :math:`W \leftarrow W - \eta\,(\nabla_W L(W) + \lambda W)` for plain GD
    (``optimizer=None``), or the given optax transformation applied to
    :math:`\nabla_W L + \lambda W` (weight decay :math:`\lambda` = ``weight_decay`` on every layer,
    i.e. the gradient of :math:`L + \tfrac\lambda2\sum_l\lVert W_l\rVert_F^2`).

    Args:
      net: the network (:class:`~linoverfit.DeepLinear`, :class:`~linoverfit.MLP`,
        :class:`~linoverfit.Model`, any :class:`~linoverfit.networks.Network`); ``W0`` must fit it.
      W0: tuple of ``L`` arrays ``(n_l, n_{l-1})``, or ``(S, n_l, n_{l-1})`` for ``S`` seeds run together
        (a :class:`~linoverfit.Model`: its params pytree, with a leading ``S`` on every leaf for seeds).
      task: :class:`Task` (population loss) or :class:`Dataset` (finite-sample loss). A nonlinear
        network needs a Dataset or ``online=True``; trained online, its checkpoint losses are
        measured on :data:`EVAL_SAMPLES` samples of the task drawn from ``key`` (``result.task``).
      lr: learning rate :math:`\eta > 0` (time is :math:`t = \eta\cdot\text{steps}`), or a schedule:
        a callable ``step -> lr`` such as an optax schedule (warmup + cosine, warmup-stable-decay,
        step decay). Step :math:`k` then moves by :math:`\eta_k` times the optimiser's direction and
        time is the cumulative learning rate :math:`t_k = \sum_{j<k}\eta_j` (``result.t``), the
        variable in which every closed form of :mod:`linoverfit.theory` applies unchanged (gradient
        flow; ``docs/theory.md``). Schedules of equal length share one compiled program.
      checkpoints: strictly increasing step counts, e.g. :func:`log_checkpoints`.
      optimizer: ``None`` (GD), a :mod:`linoverfit.optimizers` instance (``Momentum(beta)``,
        ``Adam(...)``, ``SAM(rho, base)``, or its name; hyperparameters are traced, so new values
        never recompile), an ``optax.GradientTransformation`` (used as is; ``lr`` then only sets
        time units) or a callable ``lr -> GradientTransformation`` (``lr`` stays sweepable).
      weight_decay: :math:`\lambda \ge 0`, on every layer.
      batch_size: minibatch SGD on a Dataset (batches drawn with replacement, from ``key`` and the step).
      online: with a Task and ``batch_size``: online SGD, ``batch_size`` fresh samples
        :math:`x\sim\mathcal N(0,\Sigma)`, :math:`y = Ax + \varepsilon` every step, drawn inside the
        compiled loop from ``fold_in(key, step)`` (bitwise reproducible from ``key``); the label
        noise is ``task.noise`` and ``result.samples_seen`` the samples drawn.
      key: a ``jax.random`` key or an integer seed; required with ``batch_size`` (full-batch GD draws nothing).
      keep_weights: ``False`` keeps only losses (memory of one checkpoint).
      divergence_factor: the run diverges when its loss exceeds this times its natural scale.
      layout: :class:`~linoverfit.Layout` (devices the seeds are sharded over, seeds per vmapped loop
        (default: all of a device's), progress bar over the steps, advanced at every checkpoint).
      devices, chunk, progress: shorthands for the fields of ``layout`` (not together with it).

    Returns a :class:`PretrainResult` with a leading checkpoint axis (then the seed axis if batched).

    Raises :class:`DivergenceError` (with ``.step``) when the loss becomes non-finite or exceeds
    ``divergence_factor`` times its natural scale.
    """
    check_network(net)
    layout = resolve_layout(layout, devices, chunk, progress)
    task = check_objective(net, task, "task", online=bool(online), streams=True)
    W0 = net.check_weights(W0, "W0")
    dtype, W0, (task,) = checked_inputs(W0, (task,), "W0")
    if hasattr(net, "shapes"):  # layers (DeepLinear, MLP)
        ndims = {np.ndim(w) for w in W0}
        if ndims not in ({2}, {3}):
            raise ValueError("W0 layers must all be 2-D (one network) or all 3-D (a batch of seeds)")
        batched = ndims == {3}
        if batched and len({np.shape(w)[0] for w in W0}) != 1:
            raise ValueError("W0 layers must share the same leading seed axis")
    else:
        lead = lead_shape(net, W0)
        if len(lead) > 1:
            raise ValueError(f"W0 has leading axes {lead}; expected none (one network) or one (a batch of seeds)")
        batched = len(lead) == 1
    weight_decay = _v.positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    divergence_factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    steps = _v.step_grid(checkpoints, "checkpoints")
    _v.representable_steps(steps[-1], "checkpoints")
    lr, per_step = lr_schedule(lr, int(steps[-1]))
    online = bool(online)
    batch_size = check_batch_size(batch_size, task, online=online)
    make_opt, spec = _opt.resolve(optimizer)

    n_seeds = np.shape(jax.tree.leaves(W0)[0])[0] if batched else 1
    root_key = run_key(key, batch_size)
    keys = jax.random.split(root_key, n_seeds)
    eval_set = None
    if online and _obj.nonlinear(net):  # no population loss: a fixed evaluation sample of the task
        eval_set = task.sample(EVAL_SAMPLES, jax.random.fold_in(root_key, 2**31 - 1))
    seg = np.diff(steps, prepend=0).astype(_v.step_dtype())
    identity = _obj.identity_cov(task)
    prepared = _obj.prepared(task)
    root = prepared.input_sqrt() if online and not identity else None  # Sigma^(1/2) for online samples
    flops = _progress.step_flops(flop_widths(net), rows(task, batch_size)) * n_seeds
    block = _progress.tick_block(int(steps[-1]), flops)
    shared = (prepared, jnp.asarray(lr, dtype), jnp.asarray(weight_decay, dtype), jnp.asarray(seg),
              jnp.asarray(block, seg.dtype),
              jnp.asarray(divergence_factor, dtype), None if per_step is None else jnp.asarray(per_step / lr, dtype),
              None if spec is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), spec), root, eval_set)
    P, isz = n_params(W0, net), np.dtype(dtype).itemsize
    footprint = Footprint(
        shared=n_seeds * P * isz + sum(int(np.size(x)) for x in jax.tree.leaves(task)) * isz,
        per_run=WORKING_COPIES * P * isz, per_output=steps.size * P * isz if keep_weights else 0,
        label="pre-training",
        what=f"{steps.size} checkpoints x {n_seeds} seed(s) x {P} parameters of {np.dtype(dtype).name}"
        + (", weights kept" if keep_weights else ""),
        fix="pass keep_weights=False (losses only), fewer checkpoints, fewer seeds per call, or a smaller chunk")
    work = Work(desc="pre-training", unit="step", total=int(steps[-1]), ticks_per_run=int(steps[-1]),
                flops=flops * float(steps[-1]))
    runs = (tuple(w if batched else w[None] for w in W0) if isinstance(W0, tuple)
            else jax.tree.map(lambda w: w if batched else w[None], W0), keys)
    fn = PretrainRun(make_opt=make_opt, batch_size=batch_size, keep_weights=bool(keep_weights), identity=identity,
                     online=online, net=net if _obj.nonlinear(net) else None)
    Ws, losses, bad_step = sweep(fn, runs, shared, layout=layout, work=work, footprint=footprint,
                                 default_chunk=None, tick=False)
    weights, losses = _layout(Ws, losses, batched)
    bad_step = np.asarray(bad_step)
    if np.any(bad_step >= 0):
        first = int(bad_step[bad_step >= 0].min())
        seed = int(np.argmax(bad_step == first)) if batched else None
        ck = min(int(np.searchsorted(steps, first, side="left")), len(steps) - 1)
        where = f" (seed {seed})" if batched else ""
        raise DivergenceError(
            f"pre-training diverged at step {first}{where}: the loss after {first} update(s) was non-finite or "
            f"above {divergence_factor:g} x its initial scale, with lr={lr}; checkpoint {ck} (step {steps[ck]}) "
            f"and later are affected. Lower lr.",
            step=first, seed=seed, checkpoint=ck,
        )
    # t_k = sum_{j<k} eta_j, summed in float64 on the host
    times = None if per_step is None else np.cumsum(per_step)[steps - 1]
    return PretrainResult(steps=steps, loss=losses, weights=weights, task=task if eval_set is None else eval_set,
                          lr=lr, weight_decay=weight_decay,
                          times=times, batch_size=batch_size, online=online)

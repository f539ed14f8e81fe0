r"""Checkpointed pre-training and fine-tuning sweeps, each one compiled call.

Gradient descent on the layers, :math:`W_l \leftarrow W_l - \eta\,\partial L/\partial W_l`, with the
gradient taken by ``jax.grad`` of the documented loss of the end-to-end map
:math:`P = W_L\cdots W_1` (population loss of a :class:`~linoverfit.tasks.Task`, or the
finite-sample loss of a :class:`~linoverfit.tasks.Dataset`, optionally on random minibatches, or
online SGD on fresh samples of a :class:`~linoverfit.tasks.Task`).
Gradient-flow time is the cumulative learning rate :math:`t_k = \sum_{j<k}\eta_j`
(:math:`t = \eta \cdot \text{steps}` at a constant rate).

Divergence: the loss of the weights after every update, the last one included, must stay finite
and below ``divergence_factor`` times the task's natural scale, or the run is reported.

Dtypes: one working dtype per call, the widest float dtype of the weights as JAX can currently
represent it (``float64`` needs ``jax_enable_x64``; otherwise ``float32``); the task, the
learning rates and every other input are cast to it at the API boundary, so flipping
``jax_enable_x64`` between building the inputs and training is harmless. Complex, integer, bool
and float16 weights are refused with a ``TypeError``. Step counters are int64 with 64-bit mode on
and int32 otherwise; a step count that does not fit raises a ``ValueError`` instead of wrapping.

Keys: a ``jax.random`` key or an integer seed in ``[0, 2**32)`` (checked by
:func:`linoverfit.validation.prng_key`); minibatch SGD without a key is an error.

Memory: before allocating, each sweep estimates its peak bytes and raises
:class:`linoverfit.memory.MemoryBudgetError` (naming the sizes and the options that shrink them)
when that exceeds the available memory.

Step loops are ``lax.fori_loop`` inside a ``lax.scan`` over checkpoint segments; seeds,
checkpoints and learning rates are ``vmap``-ed, so a whole sweep compiles once per shape and
changing only values (learning rates, teachers, step counts) reuses the compiled code.
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
from jax.typing import ArrayLike
import optax

from . import memory as _mem
from . import optimizers as _opt
from . import parallel as _par
from . import progress as _progress
from . import validation as _v
from .networks import DeepLinear, end_to_end
from .results import Result, expect_shape, expect_weights, result, static
from .tasks import Dataset, Task

__all__ = [
    "pretrain",
    "finetune",
    "PretrainResult",
    "FinetuneResult",
    "DivergenceError",
    "DivergenceWarning",
]

#: A run counts as exploding once its loss exceeds this factor times the larger of its
#: starting loss and the loss of the zero map (the natural scale of the task).
DIVERGENCE_FACTOR = 1e4


class DivergenceError(FloatingPointError):
    """Pre-training produced a non-finite or exploding loss; ``.step`` and ``.seed`` say where."""

    def __init__(self, message: str, step: int | None = None, seed: int | None = None,
                 checkpoint: int | None = None) -> None:
        super().__init__(message)
        self.step, self.seed, self.checkpoint = step, seed, checkpoint


class DivergenceWarning(RuntimeWarning):
    """Some fine-tuning runs diverged; they are marked in ``FinetuneResult.diverged``."""


# ----------------------------------------------------------------------------- results


@result
class PretrainResult(Result):
    r"""Checkpoints of one pre-training sweep.

    Shapes (``C`` checkpoints, optional ``S`` seeds when the initialisation was batched):

    * ``steps`` ``(C,)`` step counts; ``t`` the gradient-flow time, the cumulative learning rate
      :math:`t_k = \sum_{j<k}\eta_j` (``lr * steps`` at a constant rate; stored in ``times`` under a schedule).
    * ``loss`` ``(C[, S])`` training-objective loss at each checkpoint.
    * ``weights``: tuple of ``L`` arrays ``(C[, S], n_l, n_{l-1})``, or ``None`` if
      ``keep_weights=False``.
    * ``task``: the pre-training objective (Task or Dataset); ``lr`` (the constant rate, or the
      largest value of a schedule), ``weight_decay``.
    * ``times`` ``(C,)``: cumulative learning rate at the checkpoints when ``lr`` was a schedule, else ``None``.
    * ``batch_size``: minibatch size (``None`` for full-batch); ``online``: fresh samples every step.
    """

    steps: np.ndarray
    loss: jax.Array
    weights: tuple | None
    task: Task | Dataset
    lr: float
    weight_decay: float = 0.0
    times: np.ndarray | None = None
    batch_size: int | None = static(None)
    online: bool = static(False)
    prediction: str | None = static(None)  # lo.theory.pretrain: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.pretrain: exact for GD at this lr (round-off)

    _dims = {"loss": ("checkpoint", "seed"), "weights": ("checkpoint", "seed")}

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t)}

    def _seeds(self) -> int | None:
        return self.loss.shape[1] if self.batched else None

    @property
    def t(self) -> np.ndarray:
        """Gradient-flow time of each checkpoint: the cumulative learning rate :math:`\\sum_{j<k}\\eta_j`."""
        if self.times is not None:
            return np.asarray(self.times, dtype=np.float64)
        return self.lr * np.asarray(self.steps, dtype=np.float64)

    @property
    def samples_seen(self) -> np.ndarray:
        """Samples drawn up to each checkpoint, ``batch_size * steps`` (online SGD and minibatches)."""
        if self.batch_size is None:
            raise ValueError("full-batch training draws no samples; pass batch_size= (and online=True for a Task)")
        return self.batch_size * np.asarray(self.steps, dtype=np.int64)

    @property
    def batched(self) -> bool:
        """True when the run carries a seed axis (``loss`` is ``(C, S)``)."""
        return np.ndim(self.loss) == 2

    def _check_consistent(self):
        C = np.size(self.steps)
        expect_shape("steps", self.steps, (C,))
        if np.ndim(self.loss) not in (1, 2) or np.shape(self.loss)[0] != C:
            raise ValueError(f"loss has shape {np.shape(self.loss)}, expected ({C},) or ({C}, seeds) for {C} checkpoints")
        expect_weights("weights", self.weights, np.shape(self.loss))

    @property
    def end_to_end(self):
        """End-to-end maps ``(C[, S], d_out, d_in)``."""
        if self.weights is None:
            raise ValueError("this run kept no weights (keep_weights=False)")
        return end_to_end(self.weights)


@result
class FinetuneResult(Result):
    r"""Fine-tuning from every checkpoint at every learning rate.

    Shapes (``C`` checkpoints, ``R`` learning rates, optional ``S`` seeds, ``K`` records):

    * ``steps`` ``(C,)`` pre-training steps of the checkpoints; ``lr`` ``(R,)``.
    * ``pretrain_loss_before`` / ``finetune_loss_before`` ``(C[, S])`` at the checkpoint.
    * ``pretrain_loss_after`` / ``finetune_loss_after`` ``(C, R[, S])`` after ``ft_steps`` steps;
      NaN where the run diverged.
    * ``diverged`` ``(C, R[, S])`` bool and ``diverged_step`` (``-1`` if not).
    * ``record_steps`` ``(K,)`` and ``pretrain_loss_trajectory`` / ``finetune_loss_trajectory``
      ``(C, R[, S], K)`` when ``record_every`` was given, else ``None``.
    * ``weights``: tuple of ``(C, R[, S], n_l, n_{l-1})`` when ``return_weights=True``.
    """

    steps: np.ndarray
    lr: np.ndarray
    ft_steps: int = static()
    l2: float
    pretrain_lr: float
    pretrain_loss_before: jax.Array
    finetune_loss_before: jax.Array
    pretrain_loss_after: jax.Array
    finetune_loss_after: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array
    record_steps: np.ndarray | None = None
    pretrain_loss_trajectory: jax.Array | None = None
    finetune_loss_trajectory: jax.Array | None = None
    weights: tuple | None = None
    pretrain_t: np.ndarray | None = None
    past_edge: jax.Array | None = None  # lo.theory.finetune: lr at or past the stability edge, (C, R[, S])
    prediction: str | None = static(None)  # lo.theory.finetune: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.finetune: exact for GD at these lrs (round-off)

    _dims = {
        **{k: ("checkpoint", "seed") for k in ("pretrain_loss_before", "finetune_loss_before")},
        **{k: ("checkpoint", "lr", "seed") for k in ("pretrain_loss_after", "finetune_loss_after", "diverged",
                                                     "diverged_step", "weights", "past_edge")},
        **{k: ("checkpoint", "lr", "seed", "record") for k in ("pretrain_loss_trajectory", "finetune_loss_trajectory")},
    }

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t), "lr": ("lr", self.lr),
                "record_steps": ("record", self.record_steps)}

    def _seeds(self) -> int | None:
        return self.pretrain_loss_before.shape[1] if np.ndim(self.pretrain_loss_before) == 2 else None

    @property
    def t(self) -> np.ndarray:
        """Pre-training gradient-flow time of each checkpoint (the run's cumulative learning rate)."""
        if self.pretrain_t is not None:
            return np.asarray(self.pretrain_t, dtype=np.float64)
        return self.pretrain_lr * np.asarray(self.steps, dtype=np.float64)

    def _check_consistent(self):
        C, R = np.size(self.steps), np.size(self.lr)
        expect_shape("steps", self.steps, (C,))
        expect_shape("lr", self.lr, (R,))
        lead = np.shape(self.pretrain_loss_before)
        if len(lead) not in (1, 2) or lead[0] != C:
            raise ValueError(f"pretrain_loss_before has shape {lead}, expected ({C},) or ({C}, seeds)")
        expect_shape("finetune_loss_before", self.finetune_loss_before, lead)
        after = (C, R) + lead[1:]
        for name in ("pretrain_loss_after", "finetune_loss_after", "diverged", "diverged_step"):
            expect_shape(name, getattr(self, name), after)
        if self.record_steps is not None:
            K = np.size(self.record_steps)
            for name in ("pretrain_loss_trajectory", "finetune_loss_trajectory"):
                expect_shape(name, getattr(self, name), after + (K,))
        expect_weights("weights", self.weights, after)

    @property
    def forgetting(self):
        """Pre-training loss after fine-tuning minus before, ``(C, R[, S])``."""
        return self.pretrain_loss_after - jnp.expand_dims(self.pretrain_loss_before, 1)

    @property
    def plasticity(self):
        """Fine-tuning loss before minus after (how much the new task was learnt), ``(C, R[, S])``."""
        return jnp.expand_dims(self.finetune_loss_before, 1) - self.finetune_loss_after


# ----------------------------------------------------------------------------- helpers


def _resolve_optimizer(optimizer):
    """Normalise ``optimizer`` to a hashable factory ``lr -> GradientTransformation``.

    A :mod:`linoverfit.optimizers` instance is *not* a factory: it travels as a traced pytree
    (see :func:`_split_optimizer`), so new hyperparameter values reuse the compiled program.
    """
    if optimizer is None:
        return optax.sgd
    if isinstance(optimizer, optax.GradientTransformation):
        return _Fixed(optimizer)
    if callable(optimizer):
        return optimizer
    raise TypeError(
        "optimizer must be None (plain GD), an optax.GradientTransformation, or a callable lr -> GradientTransformation"
    )


@dataclass(frozen=True)
class _Fixed:
    """Factory that ignores ``lr`` (the user's transformation carries its own step size)."""

    tx: optax.GradientTransformation

    def __call__(self, lr):
        return self.tx

    def __hash__(self):
        return id(self.tx)


def _split_optimizer(optimizer):
    """``(make_opt, spec)``: a static factory for optax inputs, or ``(None, spec)`` for a traced
    :mod:`linoverfit.optimizers` spec (also accepted by name: ``"gd"``, ``"momentum"``, ``"adam"``, ``"sam"``)."""
    if isinstance(optimizer, str):
        if optimizer.lower() not in _opt.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(_opt.OPTIMIZERS)} by name, got {optimizer!r}")
        optimizer = _opt.OPTIMIZERS[optimizer.lower()]()
    if isinstance(optimizer, _opt._Optimizer):
        return None, optimizer
    return _resolve_optimizer(optimizer), None


def _lr_schedule(lr, n_steps: int):
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


def _check_objective(net: DeepLinear, task, name: str):
    if not isinstance(task, (Task, Dataset)):
        raise TypeError(f"{name} must be a linoverfit Task or Dataset, got {type(task).__name__}")
    return net.check_task(task, name)


def _check_batch_size(batch_size, task, name="batch_size", online=False):
    if online:
        if not isinstance(task, Task) or batch_size is None:
            raise ValueError("online=True needs a Task (the stream to draw from) and a batch_size")
        return _v.positive_int(batch_size, name)
    if batch_size is None:
        return None
    if not isinstance(task, Dataset):
        raise ValueError(f"{name} needs a finite-sample Dataset task (population loss has no minibatches), "
                         "or online=True to draw fresh samples from the Task every step")
    batch_size = _v.positive_int(batch_size, name)
    if batch_size > task.n:
        raise ValueError(f"{name} ({batch_size}) exceeds the number of samples ({task.n})")
    return batch_size


def _online_batch(task, root, key, step, batch_size):
    r"""Fresh samples of step ``step``: :math:`x = z\Sigma^{1/2}`, :math:`y = Ax + \sigma_\varepsilon\xi`,
    :math:`z, \xi \sim \mathcal N(0, I)` from ``fold_in(key, step)``; ``root`` is :math:`\Sigma^{1/2}`
    (``None`` for :math:`\Sigma = I`). Returns ``x`` ``(B, d_in)``, ``y`` ``(B, d_out)``."""
    kx, ke = jax.random.split(_step_key(key, step))
    dtype = task.teacher.dtype
    x = jax.random.normal(kx, (batch_size, task.d_in), dtype)
    if root is not None:
        x = x @ root
    eps = jax.random.normal(ke, (batch_size, task.d_out), dtype)
    return x, x @ task.teacher.T + jnp.sqrt(jnp.asarray(task.noise, dtype)) * eps


def _objective_loss(task, P, key, step, batch_size, root=None):
    """Loss used for the gradient: full objective, a random minibatch (with replacement) of a
    Dataset, or fresh samples of a Task (online SGD)."""
    if batch_size is None:
        return task.loss(P)
    if isinstance(task, Task):
        return Dataset.batch_loss(P, *_online_batch(task, root, key, step, batch_size))
    idx = jax.random.randint(_step_key(key, step), (batch_size,), 0, task.n)
    return Dataset.batch_loss(P, task.x[idx], task.y[idx])


def _step_key(key, step):
    """``fold_in(key, step)``; 64-bit step counts past ``2**32`` also fold in their high word, so
    no two steps share a minibatch key (steps below ``2**32`` keep the 32-bit stream)."""
    step = jnp.asarray(step)
    k = jax.random.fold_in(key, step)
    if jnp.dtype(step.dtype).itemsize <= 4:
        return k
    high = (step >> 32).astype(jnp.uint32)
    return jax.lax.cond(high > 0, lambda: jax.random.fold_in(jax.random.fold_in(key, step.astype(jnp.uint32)), high),
                        lambda: k)


def _bad(loss, limit):
    """A loss that is non-finite or above the explosion limit."""
    return ~jnp.isfinite(loss) | (loss > limit)


def _zero_map_loss(task):
    """Loss of the zero predictor: the task's natural loss scale."""
    return task.loss(jnp.zeros((task.d_out, task.d_in), task.x.dtype if isinstance(task, Dataset) else task.teacher.dtype))


def _learning_rates(lr, name="lr"):
    return _v.positive_vector(lr, name)


def _identity_cov(task) -> bool:
    r"""True when ``task`` is a :class:`Task` whose input covariance is exactly :math:`I`.

    A *structural* flag chosen at the API boundary (a static argument of the compiled cores): the
    matmul by :math:`\Sigma` is skipped. Changing teacher or covariance values never recompiles,
    switching between identity and non-identity covariance compiles a second program once.
    """
    if not isinstance(task, Task) or _v.is_traced(task.input_cov):
        return False
    cov = np.asarray(task.input_cov)
    return bool(np.array_equal(cov, np.eye(cov.shape[0], dtype=cov.dtype)))


def _prepared(task):
    r"""``task`` with :math:`\Sigma` symmetrised (inside jit, once per call), so that
    :math:`\nabla_P L = (P - A)\Sigma` is exactly the gradient of the documented loss."""
    if not isinstance(task, Task):
        return task
    cov = 0.5 * (task.input_cov + jnp.swapaxes(task.input_cov, -1, -2))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(task), [task.teacher, cov, task.noise])


def _task_loss(task, P, identity_cov):
    """Loss of ``P`` (population or full-sample); with ``identity_cov`` the Sigma matmul is skipped."""
    if identity_cov:
        D = P - task.teacher
        return 0.5 * jnp.sum(D * D, axis=(-2, -1)) + 0.5 * task.noise * task.d_out
    return task.loss(P)


def _value_and_grad(task, W, key, step, batch_size, identity_cov, root=None):
    r"""Objective value and its gradient with respect to the layers ``W``.

    Population loss (:class:`Task`): the closed form :math:`G = \nabla_P L = (P - A)\Sigma` pulled
    back through :math:`P = W_L\cdots W_1` by ``jax.vjp`` of the product, i.e.
    :math:`\partial L/\partial W_l = (W_L\cdots W_{l+1})^\top G\,(W_{l-1}\cdots W_1)^\top`:
    :math:`3(L-1)` matmuls, plus one for :math:`\Sigma \ne I`. (``jax.grad`` of the quadratic form
    would also form :math:`(P-A)\Sigma^\top`, one matmul more per step.) ``task`` must come from
    :func:`_prepared`. Finite-sample objectives (:class:`Dataset`) and online SGD (a Task with
    ``batch_size``, fresh samples through ``root`` :math:`= \Sigma^{1/2}`) use ``jax.value_and_grad``.
    """
    if isinstance(task, Task) and batch_size is None:
        P, pullback = jax.vjp(end_to_end, W)
        D = P - task.teacher
        G = D if identity_cov else D @ task.input_cov
        loss = 0.5 * jnp.sum(D * G) + 0.5 * task.noise * task.d_out
        (g,) = pullback(G)
        return loss, g
    return jax.value_and_grad(lambda w: _objective_loss(task, end_to_end(w), key, step, batch_size, root))(W)


#: GD steps per iteration of the compiled step loops. Unrolling copies the step into the program: with
#: XLA's CPU runtime 4 steps per iteration ran no faster (W1 pre-training and fine-tuning, online SGD,
#: same results bit for bit) and compiled 25-30% slower (an online SGD program 1 s more), and compilation
#: dominates the figure runs; so 1.
UNROLL = 1
#: Steps per iteration for the traced optimizer specs (momentum, Adam, SAM): XLA fuses Adam's elementwise
#: update differently when its loop is unrolled, which moves its float32 results by ~1e-3 relative; 4 keeps
#: the published numbers (F9) unchanged.
SPEC_UNROLL = 4


def _fori(start, n, body, carry, unroll=UNROLL):
    """``lax.fori_loop(start, start + n, body, carry)`` for a traced ``n``, ``unroll`` steps per iteration."""
    if unroll == 1:
        return jax.lax.fori_loop(start, start + n, body, carry)

    def block(j, c):
        i = start + j * unroll
        for k in range(unroll):
            c = body(i + k, c)
        return c

    n_blocks = n // unroll
    carry = jax.lax.fori_loop(0, n_blocks, block, carry)
    return jax.lax.fori_loop(start + n_blocks * unroll, start + n, body, carry)


def _sweep(fn, runs, shared, mesh, chunk, part=0, parts=1, tick_runs=True):
    """Map ``fn(run, shared)`` over the leading axis of ``runs``: padded, sharded over ``mesh``, ``chunk``
    runs per vmap, only part ``part`` of ``parts`` (see :func:`linoverfit.parallel.sweep`)."""
    return _par.sweep(fn, runs, shared, mesh=mesh, chunk=chunk, part=part, parts=parts, tick_runs=tick_runs)


def _rows(task, batch_size):
    """Rows of the matmuls of one step (for the time estimate of a progress bar)."""
    if batch_size is not None:
        return batch_size
    return task.n if isinstance(task, Dataset) else None


def _run_key(key, batch_size):
    """The key of a run: required for minibatch SGD, checked (and otherwise unused) for full-batch GD."""
    if batch_size is not None:
        return _v.prng_key(key, "key", purpose=f"minibatch SGD (batch_size={batch_size})")
    key = _v.prng_key(key, "key", required=False)
    return jax.random.key(0) if key is None else key  # full-batch GD draws nothing


def _checked_inputs(weights, objectives, name):
    """The dtype policy: every array of ``weights`` and of the objectives in one working dtype (see
    :func:`linoverfit.validation.working_dtype`); returns ``(dtype, weights, objectives)``."""
    dtype = _v.working_dtype(weights, name)
    return (dtype, tuple(jnp.asarray(w, dtype) for w in weights),
            tuple(None if t is None else _v.cast_objective(t, dtype) for t in objectives))


def _n_params(weights) -> int:
    return sum(int(np.prod(np.shape(w)[-2:])) for w in weights)


def _in_flight(plan) -> int:
    """Runs whose working sets exist at the same time: a chunk per part per device."""
    return plan.chunk * plan.parts * (1 if plan.mesh is None else plan.mesh.size)


#: Per-run working set of a step, in units of one network's parameters: the weights, the gradient,
#: the update, the new weights, the start point (fine-tuning) and two optimizer moments (Adam).
WORKING_COPIES = 8


# ----------------------------------------------------------------------------- pre-training


@partial(jax.jit, static_argnames=("make_opt", "batch_size", "keep_weights", "identity_cov", "mesh", "chunk",
                                   "parts", "online"))
def _pretrain_core(W0, task, lr, weight_decay, seg_lengths, keys, factor, part=0, lr_scale=None, spec=None, *,
                   make_opt, batch_size, keep_weights, identity_cov=False, mesh=None, chunk=1, parts=1,
                   online=False):
    """``W0``: tuple of ``([S,] n_l, n_{l-1})``; ``keys`` ``(S,)`` (``S = 1`` without a seed axis).

    ``lr_scale`` ``(n_steps,)``: per-step multipliers of the updates (a schedule divided by its peak
    ``lr``), or ``None`` for a constant rate. ``spec``: a traced :mod:`linoverfit.optimizers` pytree
    (then ``make_opt`` is ``None``). ``online``: ``task`` is a Task sampled afresh every step.

    Seeds are sharded over ``mesh`` (``None``: one device), ``chunk`` per vmap; only part ``part`` of
    ``parts`` is computed. Returns, per seed of that part (padding included, see
    :func:`_pretrain_layout`): weights ``(m, C, ...)`` (``None`` unless ``keep_weights``), losses
    ``(m, C)`` and the first bad step ``(m,)``.
    """
    if W0[0].ndim == 2:
        W0 = tuple(w[None] for w in W0)
    task = _prepared(task)
    # Sigma^(1/2) for drawing online samples, once per call (None: white inputs)
    root = task.input_sqrt() if online and not identity_cov else None
    shared = (task, lr, weight_decay, seg_lengths, factor, lr_scale, spec, root)

    def one_seed(run, shared):
        W_init, key = run
        task, lr, weight_decay, seg_lengths, factor, lr_scale, spec, root = shared
        opt = make_opt(lr) if spec is None else spec.transform(lr)
        tx = optax.chain(optax.add_decayed_weights(weight_decay), opt)
        limit = factor * jnp.maximum(_task_loss(task, end_to_end(W_init), identity_cov), _zero_map_loss(task))

        def step(i, carry):
            # the loss at step i is that of the weights after i updates
            W, state, bad_step = carry
            value_and_grad = partial(_value_and_grad, task, key=key, step=i, batch_size=batch_size,
                                     identity_cov=identity_cov, root=root)
            loss, g = value_and_grad(W) if spec is None else spec.gradient(value_and_grad, W)
            bad_step = jnp.where((bad_step < 0) & _bad(loss, limit), i, bad_step)
            updates, state = tx.update(g, state, W)
            if lr_scale is not None:  # a schedule: eta_i = lr * lr_scale[i] multiplies the update
                updates = jax.tree.map(lambda u: lr_scale[i].astype(u.dtype) * u, updates)
            return optax.apply_updates(W, updates), state, bad_step

        def segment(carry, n):
            W, state, bad_step, i0 = carry
            W, state, bad_step = _fori(i0, n, step, (W, state, bad_step), unroll=UNROLL if spec is None else SPEC_UNROLL)
            loss = _task_loss(task, end_to_end(W), identity_cov)
            # the last update of the segment is checked here (its loss is the checkpoint's)
            bad_step = jnp.where((bad_step < 0) & _bad(loss, limit), i0 + n, bad_step)
            _progress.tick_blocks(i0, n, block, loss)  # reached a checkpoint: report whole blocks of steps
            return (W, state, bad_step, i0 + n), (W if keep_weights else None, loss)

        block = jnp.maximum(1, jnp.sum(seg_lengths) // _progress.TICKS)  # progress: ~TICKS reports per run
        counter = seg_lengths.dtype
        init = (W_init, tx.init(W_init), jnp.asarray(-1, counter), jnp.asarray(0, counter))
        (_, _, bad_step, _), (Ws, losses) = jax.lax.scan(segment, init, seg_lengths)
        return Ws, losses, bad_step

    return _sweep(one_seed, (W0, keys), shared, mesh, chunk, part, parts, tick_runs=False)


@partial(jax.jit, static_argnames=("n", "batched"))
def _pretrain_layout(outs, n, batched):
    """Join the parts of :func:`_pretrain_core`: weights ``(C[, S], ...)``, losses ``(C[, S])``, bad step ``(S,)``."""
    Ws, losses, bad_step = _par.assemble(outs, n)
    # (S, C, ...) -> (C, S, ...), or (C, ...) without a seed axis
    layout = (lambda x: jnp.swapaxes(x, 0, 1)) if batched else (lambda x: x[0])
    return (None if Ws is None else tuple(layout(w) for w in Ws)), layout(losses), bad_step


def pretrain(
    net: DeepLinear,
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
      net: the network; ``W0`` must fit its widths.
      W0: tuple of ``L`` arrays ``(n_l, n_{l-1})``, or ``(S, n_l, n_{l-1})`` for ``S`` seeds run together.
      task: :class:`Task` (population loss) or :class:`Dataset` (finite-sample loss).
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
      batch_size: minibatch SGD on a Dataset (batches drawn with replacement, from ``key`` and the step).
      online: with a Task and ``batch_size``: online SGD, ``batch_size`` fresh samples
        :math:`x\sim\mathcal N(0,\Sigma)`, :math:`y = Ax + \varepsilon` every step, drawn inside the
        compiled loop from ``fold_in(key, step)`` (bitwise reproducible from ``key``); the label
        noise is ``task.noise`` and ``result.samples_seen`` the samples drawn.
      key: a ``jax.random`` key or an integer seed; required with ``batch_size`` (full-batch GD draws nothing).
      keep_weights: ``False`` keeps only losses (memory of one checkpoint).
      devices: where the seeds run (see :mod:`linoverfit.parallel`): ``None`` = all devices, an int,
        a sequence of devices or a ``Mesh``; seeds are sharded over them.
      chunk: seeds per vmapped loop on a device (default: all of that device's seeds).
      progress: a ``tqdm.auto`` progress bar over the steps, advanced from inside the compiled loop
        at every checkpoint (:mod:`linoverfit.progress`); ``None`` shows it when the run is estimated
        to take more than a few seconds (or as ``LINOVERFIT_PROGRESS`` says). Never recompiles.

    Returns a :class:`PretrainResult` with a leading checkpoint axis (then the seed axis if batched).

    Raises :class:`DivergenceError` (with ``.step``) when the loss becomes non-finite or exceeds
    ``divergence_factor`` times its natural scale.
    """
    if not isinstance(net, DeepLinear):
        raise TypeError(f"net must be a DeepLinear, got {type(net).__name__}")
    task = _check_objective(net, task, "task")
    W0 = net.check_weights(W0, "W0")
    dtype, W0, (task,) = _checked_inputs(W0, (task,), "W0")
    ndims = {np.ndim(w) for w in W0}
    if ndims not in ({2}, {3}):
        raise ValueError("W0 layers must all be 2-D (one network) or all 3-D (a batch of seeds)")
    batched = ndims == {3}
    if batched and len({np.shape(w)[0] for w in W0}) != 1:
        raise ValueError("W0 layers must share the same leading seed axis")
    weight_decay = _v.positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    divergence_factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    steps = _v.step_grid(checkpoints, "checkpoints")
    _v.representable_steps(steps[-1], "checkpoints")
    lr, per_step = _lr_schedule(lr, int(steps[-1]))
    online = bool(online)
    batch_size = _check_batch_size(batch_size, task, online=online)
    make_opt, spec = _split_optimizer(optimizer)

    n_seeds = np.shape(W0[0])[0] if batched else 1
    keys = jax.random.split(_run_key(key, batch_size), n_seeds)
    seg = np.diff(steps, prepend=0).astype(_v.step_dtype())
    plan = _par.Plan(devices, n_seeds, chunk, per_device_chunk=True)
    _pretrain_memory(net, W0, task, steps.size, n_seeds, keep_weights, plan, dtype)
    inputs = plan.shared((W0, task, jnp.asarray(lr, dtype),
                          jnp.asarray(weight_decay, dtype), jnp.asarray(seg), keys, jnp.asarray(divergence_factor, dtype)))
    extra = plan.shared((None if per_step is None else jnp.asarray(per_step / lr, dtype),
                         None if spec is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), spec)))
    flops = _progress.step_flops(net.widths, _rows(task, batch_size)) * float(steps[-1]) * n_seeds
    with _progress.bar(progress, total=int(steps[-1]) * n_seeds, ticks=int(steps[-1]) * plan.padded, unit="step",
                       desc="pre-training",
                       seconds=_progress.estimate_seconds(flops, plan.devices)):
        outs = plan.map(lambda part: _pretrain_core(
            *inputs, part, *extra, make_opt=make_opt, batch_size=batch_size, keep_weights=keep_weights,
            identity_cov=_identity_cov(task), mesh=plan.mesh, chunk=plan.chunk, parts=plan.parts, online=online,
        ))
        weights, losses, bad_step = plan.finish(_pretrain_layout(outs, n_seeds, batched))
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
    return PretrainResult(steps=steps, loss=losses, weights=weights, task=task, lr=lr, weight_decay=weight_decay,
                          times=times, batch_size=batch_size, online=online)


def _pretrain_memory(net, W0, task, n_checkpoints, n_seeds, keep_weights, plan, dtype):
    """Refuse a pre-training sweep whose estimated peak memory exceeds what is available.

    Peak: the checkpoint weights ``C x S x P`` three times (the scan's stacked outputs, the joined
    parts, the ``(C, S, ...)`` layout) plus :data:`WORKING_COPIES` networks per run in flight and
    the inputs.
    """
    P, isz = _n_params(W0), _mem.itemsize(dtype)
    kept = 3 * n_checkpoints * n_seeds * P * isz if keep_weights else 0
    working = WORKING_COPIES * min(n_seeds, _in_flight(plan)) * P * isz
    inputs = n_seeds * P * isz + sum(int(np.size(x)) for x in jax.tree.leaves(task)) * isz
    _mem.require(
        kept + working + inputs, "pre-training",
        f"{n_checkpoints} checkpoints x {n_seeds} seed(s) x {P} parameters of {np.dtype(dtype).name}"
        + (", weights kept" if keep_weights else ""),
        "pass keep_weights=False (losses only), fewer checkpoints, fewer seeds per call, or a smaller chunk",
    )


# ----------------------------------------------------------------------------- fine-tuning


@partial(jax.jit, static_argnames=("make_opt", "batch_size", "n_records", "return_weights", "identity_cov", "mesh",
                                   "chunk", "parts"))
def _finetune_core(W_start, ft_task, pre_task, lrs, l2, seg_len, keys, factor, part=0, *, make_opt, batch_size,
                   n_records, return_weights=True, identity_cov=False, mesh=None, chunk=4, parts=1):
    """Every checkpoint x learning rate: ``W_start`` tuple ``(C[, S], n_l, n_{l-1})``, ``lrs`` ``(R,)``, one ``key``.

    The ``N = C[*S]*R`` runs (run ``b * R + r`` starts from checkpoint(-seed) ``b`` at learning rate
    ``r``, with key ``split(key, N)[b * R + r]``) form one flat sweep, sharded over ``mesh``
    (a run carries the index ``b`` of its start, not a copy of it: the ``C[*S]`` starting weights
    exist once, so memory does not grow with the number of learning rates)
    (``None``: one device), ``chunk`` runs per vmap; only part ``part`` of ``parts`` is computed.
    Returns, per run of that part (padding included, see :func:`_finetune_layout`): final weights
    (``None`` unless ``return_weights``), first bad step and the ``n_records`` loss records.
    """
    lead = W_start[0].shape[:-2]
    B, R = int(np.prod(lead)), lrs.shape[0]
    W_start = tuple(jnp.reshape(w, (B,) + w.shape[-2:]) for w in W_start)
    runs = (jnp.repeat(jnp.arange(B, dtype=jnp.int32), R), jnp.tile(lrs, B), jax.random.split(keys, B * R))
    ft_task = _prepared(ft_task)
    shared = (W_start, ft_task, pre_task, l2, seg_len, factor)

    def one(run, shared):
        b, lr, key = run
        W_start, ft_task, pre_task, l2, seg_len, factor = shared
        W_init = tuple(w[b] for w in W_start)
        tx = make_opt(lr)
        limit = factor * jnp.maximum(_task_loss(ft_task, end_to_end(W_init), identity_cov), _zero_map_loss(ft_task))

        def pull(W, loss, g):
            """l2 pull toward the checkpoint, + l2/2 sum ||W - W0||^2 (skipped at run time when l2 == 0)."""
            def on(args):
                loss, g = args
                diff = tuple(w - w0 for w, w0 in zip(W, W_init))
                return loss + 0.5 * l2 * sum(jnp.sum(d * d) for d in diff), tuple(gl + l2 * d for gl, d in zip(g, diff))

            return jax.lax.cond(l2 != 0, on, lambda args: args, (loss, g))

        def step(i, carry):
            # the loss at step i is that of the weights after i updates
            W, state, bad_step = carry
            loss, g = _value_and_grad(ft_task, W, key, i, batch_size, identity_cov)
            loss, g = pull(W, loss, g)
            bad_step = jnp.where((bad_step < 0) & _bad(loss, limit), i, bad_step)
            updates, new_state = tx.update(g, state, W)
            new_W = optax.apply_updates(W, updates)
            # freeze a diverged run at its last finite weights instead of propagating NaN
            keep = bad_step >= 0
            W = jax.tree.map(lambda old, new: jnp.where(keep, old, new), W, new_W)
            state = jax.tree.map(lambda old, new: jnp.where(keep, old, new), state, new_state)
            return W, state, bad_step

        def segment(carry, _):
            W, state, bad_step, i0 = carry
            W, state, bad_step = _fori(i0, seg_len, step, (W, state, bad_step))
            P = end_to_end(W)
            ft_loss = _task_loss(ft_task, P, identity_cov)
            # the last update of the segment is checked here (the step loop checks each loss before an update)
            objective, _ = pull(W, ft_loss, W)
            end = i0 + seg_len
            bad_step = jnp.where((bad_step < 0) & _bad(objective, limit), end, bad_step)
            return (W, state, bad_step, end), (pre_task.loss(P), ft_loss)

        counter = seg_len.dtype
        init = (W_init, tx.init(W_init), jnp.asarray(-1, counter), jnp.asarray(0, counter))
        (W, _, bad_step, _), (pre_traj, ft_traj) = jax.lax.scan(segment, init, None, length=n_records)
        return (W if return_weights else None), bad_step, pre_traj, ft_traj

    return _sweep(one, runs, shared, mesh, chunk, part, parts)


@jax.jit
def _finetune_layout(outs, W_start, ft_task, pre_task, lrs, record_steps):
    """Join the parts of :func:`_finetune_core`. Returns final weights (``None`` unless kept),
    ``diverged``, first bad step and the records (NaN from each run's divergence on), all
    ``(C, R[, S], ...)``, and the pre-training / fine-tuning losses at the checkpoints ``(C[, S])``."""
    lead = W_start[0].shape[:-2]
    R = lrs.shape[0]
    W_end, bad_step, pre_traj, ft_traj = _par.assemble(outs, int(np.prod(lead)) * R)

    def to_cr(x):
        """(B * R, ...) -> (C, R[, S], ...)."""
        x = jnp.reshape(x, lead + (R,) + x.shape[1:])
        return jnp.moveaxis(x, len(lead), 1) if len(lead) == 2 else x

    W_end = None if W_end is None else tuple(to_cr(w) for w in W_end)
    bad_step = to_cr(bad_step)
    diverged, pre_traj, ft_traj = _mask_diverged(bad_step, record_steps, to_cr(pre_traj), to_cr(ft_traj))
    P0 = end_to_end(W_start)
    return W_end, diverged, bad_step, pre_traj, ft_traj, (pre_task.loss(P0), ft_task.loss(P0))


@jax.jit
def _mask_diverged(bad_step, record_steps, pre_traj, ft_traj):
    """``diverged`` ``(C, R[, S])`` and the records ``(C, R[, S], K)`` with NaN from each run's divergence step on."""
    diverged = bad_step >= 0
    # a record is invalid from the step where its run diverged on (the run is frozen there)
    invalid = diverged[..., None] & (record_steps >= bad_step[..., None])
    return diverged, jnp.where(invalid, jnp.nan, pre_traj), jnp.where(invalid, jnp.nan, ft_traj)


def _finetune_memory(weights, lead, R, n_records, return_weights, plan, dtype):
    """Refuse a fine-tuning sweep whose estimated peak memory exceeds what is available.

    Peak: the ``B = C[*S]`` starting networks (held once, indexed by every run), the
    :data:`WORKING_COPIES` networks of each run in flight, and the outputs of the ``N = B x R``
    runs three times (the parts' outputs, their join, the ``(C, R[, S])`` layout): final weights
    when ``return_weights``, and two loss records per record step.
    """
    P, isz = _n_params(weights), _mem.itemsize(dtype)
    B = int(np.prod(lead))
    N = B * R
    out = 3 * N * ((P if return_weights else 0) + 2 * n_records + 2) * isz
    working = WORKING_COPIES * min(N, _in_flight(plan)) * P * isz
    _mem.require(
        B * P * isz + working + out, "fine-tuning",
        f"{lead[0]} checkpoints x {lead[1] if len(lead) > 1 else 1} seed(s) x {R} learning rate(s) = {N} runs of "
        f"{P} parameters of {np.dtype(dtype).name}, {n_records} record(s) per run"
        + (", final weights returned" if return_weights else ""),
        "pass return_weights=False, fewer checkpoints or learning rates per call, a larger record_every, "
        "or a smaller chunk",
    )


def finetune(
    net: DeepLinear,
    run: PretrainResult,
    task: Task | Dataset,
    lr: float | Sequence[float] | ArrayLike = (0.01,),
    steps: int = 1000,
    *,
    l2: float = 0.0,
    optimizer: Any = None,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    record_every: int | None = None,
    return_weights: bool = False,
    pretrain_task: Task | Dataset | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    devices: Any = None,
    chunk: int | None = None,
    progress: bool | None = None,
) -> FinetuneResult:
    r"""Fine-tune every checkpoint of ``run`` at every learning rate, in one compiled call.

    From each checkpoint :math:`W^0` it runs ``steps`` steps of
    :math:`W \leftarrow W - \eta\,\nabla_W\big(L_{ft}(W) + \tfrac{\lambda}{2}\sum_l\lVert W_l - W_l^0\rVert_F^2\big)`
    (``l2`` = :math:`\lambda`, an l2 pull toward the pre-trained weights) and measures the
    pre-training loss :math:`L_{pre}` (``run.task`` unless ``pretrain_task`` is given) and the
    fine-tuning loss :math:`L_{ft}` before and after, so forgetting is
    :math:`L_{pre}(W_{ft}) - L_{pre}(W^0)`.

    Args:
      run: a :class:`PretrainResult` with weights; ``task``: the fine-tuning Task or Dataset.
      lr: one or more learning rates (all > 0); ``steps``: fine-tuning steps (>= 1).
      record_every: also record both losses every ``record_every`` steps (must divide ``steps``).
      key: a ``jax.random`` key or an integer seed; required with ``batch_size`` (minibatch SGD).
      devices: where the runs go (see :mod:`linoverfit.parallel`): ``None`` = all devices, an int, a
        sequence of devices or a ``Mesh``. The checkpoint x seed x learning-rate runs are flattened
        into one sweep axis and sharded over them.
      chunk: runs per vmapped loop on a device (default 4: batched matmuls that stay in cache).
      progress: a ``tqdm.auto`` progress bar over the runs, advanced from inside the compiled sweep as
        each run finishes (:mod:`linoverfit.progress`); ``None`` shows it when the sweep is estimated
        to take more than a few seconds (or as ``LINOVERFIT_PROGRESS`` says). Never recompiles.

    Diverged runs (non-finite or exploding fine-tuning loss) are frozen, reported with a
    :class:`DivergenceWarning` naming the checkpoint and learning rate, marked in
    ``diverged``/``diverged_step``, and their after-losses are NaN.
    """
    if not isinstance(net, DeepLinear):
        raise TypeError(f"net must be a DeepLinear, got {type(net).__name__}")
    if not isinstance(run, PretrainResult):
        raise TypeError(f"run must be a PretrainResult from lo.pretrain, got {type(run).__name__}")
    if run.weights is None:
        raise ValueError("run has no weights (it was pre-trained with keep_weights=False); fine-tuning needs them")
    task = _check_objective(net, task, "task")
    pre_task = _check_objective(net, run.task if pretrain_task is None else pretrain_task, "pretrain_task")
    weights = net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(weights, "run.weights")
    lrs = _learning_rates(lr)
    steps = _v.positive_int(steps, "steps")
    _v.representable_steps(steps, "steps")
    l2 = _v.positive_scalar(l2, "l2", allow_zero=True)
    divergence_factor = _v.positive_scalar(divergence_factor, "divergence_factor")
    batch_size = _check_batch_size(batch_size, task)
    if record_every is None:
        n_records, seg_len = 1, steps
    else:
        record_every = _v.positive_int(record_every, "record_every")
        if steps % record_every:
            raise ValueError(f"record_every ({record_every}) must divide steps ({steps})")
        n_records, seg_len = steps // record_every, record_every
    make_opt = _resolve_optimizer(optimizer)

    lead = run.loss.shape  # (C,) or (C, S)
    B = int(np.prod(lead))
    R = lrs.size
    key = _run_key(key, batch_size)
    plan = _par.Plan(devices, B * R, chunk)
    _finetune_memory(weights, lead, R, n_records, return_weights, plan, dtype)
    _, weights, (task, pre_task) = _checked_inputs(weights, (task, pre_task), "run.weights")  # after the check
    inputs = plan.shared((weights, task, pre_task, jnp.asarray(lrs, dtype),
                          jnp.asarray(l2, dtype), jnp.asarray(seg_len, _v.step_dtype()), key,
                          jnp.asarray(divergence_factor, dtype)))
    flops = _progress.step_flops(net.widths, _rows(task, batch_size)) * float(steps) * B * R
    with _progress.bar(progress, total=B * R, ticks=plan.padded, unit="run", desc="fine-tuning",
                       seconds=_progress.estimate_seconds(flops, plan.devices)):
        outs = plan.map(lambda part: _finetune_core(
            *inputs, part, make_opt=make_opt, batch_size=batch_size, n_records=n_records,
            return_weights=return_weights, identity_cov=_identity_cov(task), mesh=plan.mesh, chunk=plan.chunk,
            parts=plan.parts,
        ))
        record_steps = seg_len * np.arange(1, n_records + 1)
        W_end, diverged, bad_step, pre_traj, ft_traj, (pre_before, ft_before) = plan.finish(
            _finetune_layout(outs, inputs[0], task, pre_task, inputs[3], record_steps))
        jax.block_until_ready(pre_traj)
    result = FinetuneResult(
        steps=np.asarray(run.steps),
        lr=lrs,
        ft_steps=steps,
        l2=l2,
        pretrain_lr=float(run.lr),
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
        pretrain_t=None if run.times is None else np.asarray(run.t),
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

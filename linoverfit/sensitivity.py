r"""Sensitivity of pre-trained weights to Gaussian perturbation, by Monte Carlo.

For weights :math:`W = (W_1,\dots,W_L)` and noise :math:`E_l` with iid :math:`\mathcal N(0,1)`
entries on every layer,

.. math:: S(W, \gamma) = \mathbb E_E\big[L(W + \gamma E)\big] - L(W).

The closed form of :math:`\mathbb E[L(W+\gamma E)]` is :func:`linoverfit.theory.expected_perturbed_loss`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import memory as _mem
from . import validation as _v
from .networks import DeepLinear, end_to_end
from .results import Result, expect_shape, result, static
from .tasks import Dataset, Task
from . import parallel as _par
from . import progress as _progress
from .training import PretrainResult, _identity_cov, _sweep, _task_loss

__all__ = ["gaussian", "SensitivityResult", "NonFiniteWarning"]


class NonFiniteWarning(RuntimeWarning):
    """Some Monte Carlo estimates overflowed (non-finite); they are named in the message."""


@result
class SensitivityResult(Result):
    r"""Monte Carlo sensitivity per checkpoint and noise scale.

    Shapes (``C`` checkpoints, ``G`` noise scales, optional ``S`` seeds):
    ``steps`` ``(C,)``, ``gamma`` ``(G,)``, ``loss`` ``(C[, S])`` unperturbed loss,
    ``perturbed_loss`` ``(C, G[, S])`` the estimate of :math:`\mathbb E[L(W+\gamma E)]`,
    ``sensitivity`` ``(C, G[, S])`` the estimate of :math:`S(W,\gamma)` and ``stderr`` its
    Monte Carlo standard error (sample std of :math:`L(W+\gamma E)-L(W)` over ``sqrt(samples)``).
    """

    steps: np.ndarray
    gamma: np.ndarray
    samples: int = static()
    pretrain_lr: float
    loss: jax.Array
    perturbed_loss: jax.Array
    sensitivity: jax.Array
    stderr: jax.Array
    prediction: str | None = static(None)  # lo.theory.gaussian: the prediction used; None when simulated
    exact: bool | None = static(None)  # lo.theory.gaussian: True (a closed-form expectation)

    _dims = {"loss": ("checkpoint", "seed"),
             **{k: ("checkpoint", "gamma", "seed") for k in ("perturbed_loss", "sensitivity", "stderr")}}

    def _coords(self) -> dict:
        return {"steps": ("checkpoint", self.steps), "t": ("checkpoint", self.t), "gamma": ("gamma", self.gamma)}

    def _seeds(self) -> int | None:
        return self.loss.shape[1] if np.ndim(self.loss) == 2 else None

    @property
    def t(self) -> np.ndarray:
        """Pre-training gradient-flow time of each checkpoint."""
        return self.pretrain_lr * np.asarray(self.steps, dtype=np.float64)

    def _check_consistent(self):
        C, G = np.size(self.steps), np.size(self.gamma)
        expect_shape("steps", self.steps, (C,))
        expect_shape("gamma", self.gamma, (G,))
        lead = np.shape(self.loss)
        if len(lead) not in (1, 2) or lead[0] != C:
            raise ValueError(f"loss has shape {lead}, expected ({C},) or ({C}, seeds)")
        for name in ("perturbed_loss", "sensitivity", "stderr"):
            expect_shape(name, getattr(self, name), (C, G) + lead[1:])


#: Perturbed copies evaluated together: samples per batch = this / (largest layer size), i.e.
#: 4 MiB of float32 per layer (W1, width 64: all 256 samples; W2, width 256: 16). Measured on CPU:
#: W2 sensitivity ~2.5x faster than streaming all samples at once; W1 unchanged.
SAMPLE_BATCH_ELEMENTS = 2**20


def _sample_batch(samples, sizes):
    """Perturbed copies evaluated (and drawn) together, see :data:`SAMPLE_BATCH_ELEMENTS`."""
    return min(samples, max(1, SAMPLE_BATCH_ELEMENTS // max(sizes)))


@partial(jax.jit, static_argnames=("samples", "shapes"))
def _gaussian_noise(key, *, samples, shapes):
    """The Monte Carlo draws: per layer ``(samples, n_l, n_{l-1})`` iid N(0, 1).

    Drawn in sample batches (batch ``j`` from ``split(key)[j]``), each one flat
    ``(batch, sum_l n_l n_{l-1})`` draw cut into layers: the generator's temporaries stay
    batch-sized, and one flat draw compiles ~3x faster than one draw per layer.
    """
    sizes = [int(np.prod(s[0])) for s in shapes]
    batch = _sample_batch(samples, sizes)
    n_batches = -(-samples // batch)
    cuts = np.cumsum([0] + sizes)

    def draw(k):
        flat = jax.random.normal(k, (batch, sum(sizes)), shapes[0][1])
        return tuple(flat[:, a:b].reshape((batch,) + s[0]) for a, b, s in zip(cuts[:-1], cuts[1:], shapes))

    keys = jax.random.split(key, n_batches)
    noise = jax.lax.map(draw, keys) if n_batches > 1 else jax.tree.map(lambda e: e[None], draw(keys[0]))
    return tuple(e.reshape((n_batches * batch,) + e.shape[2:])[:samples] for e in noise)


@partial(jax.jit, static_argnames=("identity_cov", "mesh", "chunk", "parts"))
def _gaussian_core(weights, task, gammas, noise, part=0, *, identity_cov=False, mesh=None, chunk=1, parts=1):
    """``weights``: tuple ``(C[, S], n_l, n_{l-1})``. Returns, per weight set of part ``part`` of
    ``parts`` (padding included, see :func:`_gaussian_layout`), the loss ``(m,)`` and the mean /
    stderr of :math:`L(W+\\gamma E) - L(W)`, ``(m, G)``.

    The ``C[*S]`` weight sets are sharded over ``mesh`` (``None``: one device), ``chunk`` per vmap.
    ``noise`` (from :func:`_gaussian_noise`) is shared by every weight set, gamma and part: common
    random numbers.
    """
    lead = weights[0].shape[:-2]
    B = int(np.prod(lead))
    weights = tuple(jnp.reshape(w, (B,) + w.shape[-2:]) for w in weights)
    samples = noise[0].shape[0]
    sample_batch = _sample_batch(samples, [int(np.prod(w.shape[1:])) for w in weights])

    def per_weights(W, shared):
        task, gammas, noise = shared
        base = _task_loss(task, end_to_end(W), identity_cov)

        def per_gamma(g):
            def perturbed_loss(E):
                return _task_loss(task, end_to_end(tuple(w + g * e for w, e in zip(W, E))), identity_cov)

            # samples in cache-sized batches: large widths would otherwise stream (samples, n, n) arrays
            diff = jax.lax.map(perturbed_loss, noise, batch_size=sample_batch) - base
            return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(samples)

        # one noise scale at a time: the (samples, ...) perturbed weights exist once, not G times
        mean, se = jax.lax.map(per_gamma, gammas)
        return base, mean, se

    return _sweep(per_weights, weights, (task, gammas, noise), mesh, chunk, part, parts)


@partial(jax.jit, static_argnames=("lead",))
def _gaussian_layout(outs, lead):
    """Join the parts of :func:`_gaussian_core`: loss ``(C[, S])``, mean and stderr ``(C, G[, S])``."""
    base, mean, se = _par.assemble(outs, int(np.prod(lead)))

    def to_cg(x):
        """(B, G) -> (C, G[, S])."""
        x = jnp.reshape(x, lead + x.shape[1:])
        return jnp.moveaxis(x, -1, 1) if len(lead) == 2 else x

    return jnp.reshape(base, lead), to_cg(mean), to_cg(se)


def _gaussian_memory(weights, lead, samples, n_gamma, plan, dtype):
    """Refuse a sensitivity sweep whose estimated peak memory exceeds what is available: the noise
    ``samples x P`` (twice while drawn), the weights, and per weight set in flight the perturbed
    copies of one sample batch (three networks each)."""
    P, isz = sum(int(np.prod(np.shape(w)[-2:])) for w in weights), _mem.itemsize(dtype)
    B = int(np.prod(lead))
    batch = _sample_batch(samples, [int(np.prod(np.shape(w)[-2:])) for w in weights])
    in_flight = min(B, plan.chunk * plan.parts * (1 if plan.mesh is None else plan.mesh.size))
    need = (2 * samples + B + 3 * batch * in_flight) * P * isz + 6 * B * n_gamma * isz
    _mem.require(need, "the sensitivity estimate",
                 f"{samples} samples x {P} parameters of {np.dtype(dtype).name}, {B} weight set(s)",
                 "pass fewer samples, fewer checkpoints per call, or a smaller chunk")


def gaussian(
    net: DeepLinear,
    run: PretrainResult,
    task: Task | Dataset | None = None,
    gamma: float | Sequence[float] | ArrayLike = (0.01,),
    samples: int = 256,
    key: jax.Array | int | None = None,
    *,
    devices: Any = None,
    chunk: int | None = None,
    prng_impl: str | None = None,
    progress: bool | None = None,
) -> SensitivityResult:
    r"""Monte Carlo estimate of :math:`S(W,\gamma)=\mathbb E[L(W+\gamma E)]-L(W)` at every checkpoint.

    Args:
      net, run: the network and a :class:`~linoverfit.training.PretrainResult` with weights.
      task: Task (population loss) or Dataset whose loss is perturbed; default ``run.task``.
      gamma: one or more noise scales :math:`\gamma > 0`.
      samples: Monte Carlo draws :math:`E` per checkpoint (>= 2, for the standard error).
      key: ``jax.random`` key or an integer seed in ``[0, 2**32)`` (required: randomness is always explicit).
      devices: where the checkpoint x seed weight sets go (see :mod:`linoverfit.parallel`): ``None`` =
        all devices, an int, a sequence of devices or a ``Mesh``; they are sharded over them.
      chunk: weight sets per vmap on a device (default 1: each one already batches its ``samples``).
      prng_impl: draw the noise with this ``jax.random`` implementation (``"rbg"``, ``"unsafe_rbg"``,
        ``"threefry2x32"``), keyed deterministically from ``key``; ``None`` uses ``key`` as it is.
        ``rbg`` generators are faster on GPU/TPU; on CPU threefry is the fastest. Any choice is an
        honest Monte Carlo estimate: only the stream of iid normal draws changes.
      progress: a ``tqdm.auto`` progress bar over the weight sets (checkpoint x seed), advanced from
        inside the compiled sweep as each one finishes (:mod:`linoverfit.progress`); ``None`` shows it
        when the sweep is estimated to take more than a few seconds (or as ``LINOVERFIT_PROGRESS``
        says). Never recompiles.

    The same ``samples`` draws are reused at every checkpoint, :math:`\gamma` and seed (common
    random numbers): each entry is an unbiased estimate with standard error ``stderr``, and
    differences between checkpoints carry much less noise than independent draws would give.
    """
    if not isinstance(net, DeepLinear):
        raise TypeError(f"net must be a DeepLinear, got {type(net).__name__}")
    if not isinstance(run, PretrainResult):
        raise TypeError(f"run must be a PretrainResult from lo.pretrain, got {type(run).__name__}")
    if run.weights is None:
        raise ValueError("run has no weights (it was pre-trained with keep_weights=False)")
    task = run.task if task is None else task
    if not isinstance(task, (Task, Dataset)):
        raise TypeError(f"task must be a linoverfit Task or Dataset, got {type(task).__name__}")
    net.check_task(task)
    weights = net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(weights, "run.weights")
    weights = tuple(jnp.asarray(w, dtype) for w in weights)
    task = _v.cast_objective(task, dtype)
    gammas = _v.positive_vector(gamma, "gamma")
    samples = _v.positive_int(samples, "samples")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to estimate a standard error, got {samples}")
    key = _v.prng_key(key, "key", purpose="the Monte Carlo draws")

    if prng_impl is not None:
        # a key of the requested implementation, derived deterministically from ``key``
        width = jax.random.key_data(jax.random.key(0, impl=prng_impl)).shape
        key = jax.random.wrap_key_data(jax.random.bits(key, width, jnp.uint32), impl=prng_impl)

    lead = run.loss.shape
    plan = _par.Plan(devices, int(np.prod(lead)), 1 if chunk is None else chunk)
    _gaussian_memory(weights, lead, samples, gammas.size, plan, dtype)
    # common random numbers: one draw serves every checkpoint, seed, gamma (and every part)
    noise = _gaussian_noise(key, samples=samples, shapes=tuple((tuple(np.shape(w)[-2:]), dtype) for w in weights))
    inputs = plan.shared((weights, task, jnp.asarray(gammas, dtype), noise))
    rows = task.n if isinstance(task, Dataset) else None
    flops = _progress.step_flops(net.widths, rows) / 3 * samples * gammas.size * int(np.prod(lead))
    with _progress.bar(progress, total=int(np.prod(lead)), ticks=plan.padded, unit="set", desc="sensitivity",
                       seconds=_progress.estimate_seconds(flops, plan.devices)):
        outs = plan.map(lambda part: _gaussian_core(*inputs, part, identity_cov=_identity_cov(task),
                                                    mesh=plan.mesh, chunk=plan.chunk, parts=plan.parts))
        base, sens, se = jax.block_until_ready(plan.finish(_gaussian_layout(outs, tuple(lead))))
    bad = ~(np.isfinite(np.asarray(sens)) & np.isfinite(np.asarray(se)))
    if bad.any():
        g_bad = np.unique(gammas[np.nonzero(bad)[1]])
        warnings.warn(
            f"{int(bad.sum())} sensitivity estimate(s) are not finite (the perturbed loss overflowed "
            f"{np.dtype(dtype).name}) at gamma={', '.join(f'{g:g}' for g in g_bad[:5])}; use smaller gamma "
            "or float64 weights (jax_enable_x64). They are inf/NaN in the result.",
            NonFiniteWarning, stacklevel=2,
        )
    return SensitivityResult(
        steps=np.asarray(run.steps),
        gamma=gammas,
        samples=samples,
        pretrain_lr=float(run.lr),
        loss=base,
        perturbed_loss=sens + jnp.expand_dims(base, 1),
        sensitivity=sens,
        stderr=se,
    )

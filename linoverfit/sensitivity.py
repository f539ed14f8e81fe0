r"""Sensitivity of pre-trained weights to Gaussian perturbation, by Monte Carlo.

For weights :math:`W = (W_1,\dots,W_L)` (or every leaf of a network's params pytree) and noise
:math:`E_l` with iid :math:`\mathcal N(0,1)` entries on every layer (leaf),

.. math:: S(W, \gamma) = \mathbb E_E\big[L(W + \gamma E)\big] - L(W).

The closed form of :math:`\mathbb E[L(W+\gamma E)]` is :func:`linoverfit.theory.expected_perturbed_loss`.
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
from jax.typing import ArrayLike

from . import objective as _obj
from . import progress as _progress
from . import validation as _v
from .networks import Network, check_network, end_to_end
from .result_types import NonFiniteWarning, PretrainResult, SensitivityResult, checked_run, checkpoint_axis
from .pretraining import flop_widths
from .sweeps import Footprint, Layout, Work, check_footprint, resolve_layout, sweep
from .tasks import Dataset, Task

__all__ = ["gaussian", "GaussianRun", "SensitivityResult", "NonFiniteWarning"]


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


@dataclass(frozen=True)
class GaussianRun:
    r"""One weight set, ``run = W`` (a tuple of layers) -> ``(L(W), mean, stderr)`` with the mean and
    the standard error of :math:`L(W+\gamma E) - L(W)` over the shared draws, ``(G,)`` each.

    ``shared = (task, gammas, noise)``: the task, the noise scales ``(G,)`` and the draws ``E``
    (from :func:`_gaussian_noise`), shared by every weight set and gamma: common random numbers.
    ``sample_batch`` draws are evaluated together (see :data:`SAMPLE_BATCH_ELEMENTS`). ``net``
    (``None``: a linear network) is called through ``apply`` when it is not linear; ``W`` and the
    draws are then params pytrees, every leaf perturbed.
    """

    identity: bool
    sample_batch: int
    net: Any = None

    def __call__(self, W, shared):
        task, gammas, noise = shared
        net = self.net if _obj.nonlinear(self.net) else None
        samples = jax.tree.leaves(noise)[0].shape[0]
        base = _obj.net_loss(net, task, W, self.identity)

        def per_gamma(g):
            def perturbed_loss(E):
                if net is not None:
                    return _obj.net_loss(net, task, jax.tree.map(lambda w, e: w + g * e, W, E))
                return _obj.loss(task, end_to_end(tuple(w + g * e for w, e in zip(W, E))), self.identity)

            # samples in cache-sized batches: large widths would otherwise stream (samples, n, n) arrays
            diff = jax.lax.map(perturbed_loss, noise, batch_size=self.sample_batch) - base
            return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(samples)

        # one noise scale at a time: the (samples, ...) perturbed weights exist once, not G times
        mean, se = jax.lax.map(per_gamma, gammas)
        return base, mean, se


@partial(jax.jit, static_argnames=("lead",))
def _layout(base, mean, se, lead):
    """The sweep's ``(B, ...)`` outputs as loss ``(C[, S])``, mean and stderr ``(C, G[, S])``."""

    def to_cg(x):
        """(B, G) -> (C, G[, S])."""
        x = jnp.reshape(x, lead + x.shape[1:])
        return jnp.moveaxis(x, -1, 1) if len(lead) == 2 else x

    return jnp.reshape(base, lead), to_cg(mean), to_cg(se)


def checked_run_task(net, run, task):
    """The objective to perturb at every checkpoint of ``run``: ``task``, or ``run.task`` when ``None``;
    refuses a network outside the protocol, a run without weights, and a population Task for a
    nonlinear network, each by name."""
    check_network(net)
    checked_run(run)
    task = run.task if task is None else task
    if not isinstance(task, (Task, Dataset)):
        raise TypeError(f"task must be a linoverfit Task or Dataset, got {type(task).__name__}")
    _obj.require_samples(net, net.check_task(task))
    return task


def gaussian(
    net: Network,
    run: PretrainResult,
    task: Task | Dataset | None = None,
    gamma: float | Sequence[float] | ArrayLike = (0.01,),
    samples: int = 256,
    key: jax.Array | int | None = None,
    *,
    prng_impl: str | None = None,
    layout: Layout | None = None,
    devices: Any = None,
    chunk: int | None = None,
    progress: bool | None = None,
) -> SensitivityResult:
    r"""Monte Carlo estimate of :math:`S(W,\gamma)=\mathbb E[L(W+\gamma E)]-L(W)` at every checkpoint.

    Args:
      net, run: the network (any :class:`~linoverfit.networks.Network`) and a
        :class:`~linoverfit.PretrainResult` with weights; every leaf of the params is perturbed.
      task: Task (population loss) or Dataset whose loss is perturbed; default ``run.task`` (a
        nonlinear network needs a Dataset).
      gamma: one or more noise scales :math:`\gamma > 0`.
      samples: Monte Carlo draws :math:`E` per checkpoint (>= 2, for the standard error).
      key: ``jax.random`` key or an integer seed in ``[0, 2**32)`` (required: randomness is always explicit).
      prng_impl: draw the noise with this ``jax.random`` implementation (``"rbg"``, ``"unsafe_rbg"``,
        ``"threefry2x32"``), keyed deterministically from ``key``; ``None`` uses ``key`` as it is.
        ``rbg`` generators are faster on GPU/TPU; on CPU threefry is the fastest. Any choice is an
        honest Monte Carlo estimate: only the stream of iid normal draws changes.
      layout: :class:`~linoverfit.Layout`: the checkpoint x seed weight sets are sharded over
        ``devices``, ``chunk`` per vmap (default 1: each one already batches its ``samples``), with a
        progress bar over the weight sets.
      devices, chunk, progress: shorthands for the fields of ``layout`` (not together with it).

    The same ``samples`` draws are reused at every checkpoint, :math:`\gamma` and seed (common
    random numbers): each entry is an unbiased estimate with standard error ``stderr``, and
    differences between checkpoints carry much less noise than independent draws would give.
    """
    task = checked_run_task(net, run, task)
    nonlinear = _obj.nonlinear(net)
    weights = net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(jax.tree.leaves(weights), "run.weights")
    if nonlinear:
        leaves, treedef = jax.tree.flatten(jax.tree.map(lambda w: jnp.asarray(w, dtype), weights))
    else:
        leaves, treedef = tuple(jnp.asarray(w, dtype) for w in weights), None
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

    lead = tuple(run.loss.shape)
    B = int(np.prod(lead))
    shapes = [tuple(np.shape(w)[len(lead):]) if nonlinear else tuple(np.shape(w)[-2:]) for w in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    P, isz, batch = sum(sizes), np.dtype(dtype).itemsize, _sample_batch(samples, sizes)
    # the perturbed loss grows like gamma^2 * P (the noise's own sum of squares, before the network
    # multiplies it): a gamma whose gamma^2 * P already exceeds the dtype can only give inf/NaN
    too_big = gammas[np.asarray(gammas, np.float64) ** 2 * P * 1e6 > float(jnp.finfo(dtype).max)]
    if too_big.size:
        raise ValueError(f"gamma={too_big[0]:g} overflows {np.dtype(dtype).name}: the perturbation alone has a squared "
                         f"norm of about gamma^2 x {P} parameters; use a gamma below "
                         f"{np.sqrt(float(jnp.finfo(dtype).max) / (1e6 * P)):.3g} or float64 weights "
                         "(jax_enable_x64)")
    footprint = Footprint(  # the draws (twice while drawn), the weights, 3 networks per draw of a batch in flight
        shared=(2 * samples + B) * P * isz, per_run=3 * batch * P * isz, per_output=2 * gammas.size * isz,
        label="the sensitivity estimate",
        what=f"{samples} samples x {P} parameters of {np.dtype(dtype).name}, {B} weight set(s)",
        fix="pass fewer samples, fewer checkpoints per call, or a smaller chunk")
    layout = resolve_layout(layout, devices, chunk, progress)
    check_footprint(footprint, B, layout, default_chunk=1)  # before the draws are allocated
    # common random numbers: one draw serves every checkpoint, seed and gamma
    noise = _gaussian_noise(key, samples=samples, shapes=tuple((s, dtype) for s in shapes))
    rows = task.n if isinstance(task, Dataset) else None
    work = Work(desc="sensitivity", unit="set",
                flops=_progress.step_flops(flop_widths(net), rows) / 3 * samples * gammas.size * B)
    runs = tuple(jnp.reshape(w, (B,) + s) for w, s in zip(leaves, shapes))
    if nonlinear:  # the params' structure again, for net.apply
        runs, noise = jax.tree.unflatten(treedef, runs), jax.tree.unflatten(treedef, noise)
    fn = GaussianRun(identity=_obj.identity_cov(task), sample_batch=batch, net=net if nonlinear else None)
    outs = sweep(fn, runs, (task, jnp.asarray(gammas, dtype), noise), layout=layout, work=work,
                 footprint=footprint, default_chunk=1)
    base, sens, se = jax.block_until_ready(_layout(*outs, lead))
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
        **checkpoint_axis(run),
        gamma=gammas,
        samples=samples,
        loss=base,
        perturbed_loss=sens + jnp.expand_dims(base, 1),
        sensitivity=sens,
        stderr=se,
    )

r"""Sensitivity of pre-trained weights to Gaussian perturbation, by Monte Carlo.

For weights :math:`W = (W_1,\dots,W_L)` and noise :math:`E_l` with iid :math:`\mathcal N(0,1)`
entries on every layer,

.. math:: S(W, \gamma) = \mathbb E_E\big[L(W + \gamma E)\big] - L(W).

The closed form of :math:`\mathbb E[L(W+\gamma E)]` is :func:`linoverfit.theory.expected_perturbed_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import validation as _v
from .networks import DeepLinear, end_to_end
from .results import Result
from .tasks import Dataset, Task
from .training import PretrainResult

__all__ = ["gaussian", "SensitivityResult"]


@dataclass(frozen=True, eq=False)
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
    samples: int
    pretrain_lr: float
    loss: jax.Array
    perturbed_loss: jax.Array
    sensitivity: jax.Array
    stderr: jax.Array

    @property
    def t(self) -> np.ndarray:
        """Pre-training gradient-flow time of each checkpoint."""
        return self.pretrain_lr * np.asarray(self.steps, dtype=np.float64)


@partial(jax.jit, static_argnames=("samples",))
def _gaussian_core(weights, task, gammas, key, *, samples):
    """``weights``: tuple ``(B, n_l, n_{l-1})``. Returns ``(B,)`` loss and ``(B, G)`` mean / stderr."""
    keys = jax.random.split(key, len(weights))
    # common random numbers: the same draws serve every checkpoint, gamma and seed
    noise = tuple(jax.random.normal(k, (samples,) + w.shape[1:], w.dtype) for k, w in zip(keys, weights))

    def per_weights(W):
        base = task.loss(end_to_end(W))

        def per_gamma(g):
            perturbed = tuple(w[None] + g * e for w, e in zip(W, noise))
            diff = task.loss(end_to_end(perturbed)) - base
            return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(samples)

        mean, se = jax.vmap(per_gamma)(gammas)
        return base, mean, se

    return jax.lax.map(per_weights, weights)


def gaussian(
    net: DeepLinear,
    run: PretrainResult,
    task=None,
    gamma=(0.01,),
    samples: int = 256,
    key=None,
) -> SensitivityResult:
    r"""Monte Carlo estimate of :math:`S(W,\gamma)=\mathbb E[L(W+\gamma E)]-L(W)` at every checkpoint.

    Args:
      net, run: the network and a :class:`~linoverfit.training.PretrainResult` with weights.
      task: Task (population loss) or Dataset whose loss is perturbed; default ``run.task``.
      gamma: one or more noise scales :math:`\gamma > 0`.
      samples: Monte Carlo draws :math:`E` per checkpoint (>= 2, for the standard error).
      key: ``jax.random`` key (required: randomness is always explicit).

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
    gammas = _v.positive_vector(gamma, "gamma")
    samples = _v.positive_int(samples, "samples")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to estimate a standard error, got {samples}")
    if key is None:
        raise TypeError("key is required: pass a jax.random key, e.g. jax.random.key(0)")
    key = jax.random.key(key) if isinstance(key, int) else key

    lead = run.loss.shape
    B = int(np.prod(lead))
    flat = tuple(jnp.reshape(jnp.asarray(w), (B,) + w.shape[-2:]) for w in weights)
    base, mean, se = _gaussian_core(flat, task, jnp.asarray(gammas, flat[0].dtype), key, samples=samples)

    def to_cg(x):
        """(B, G) -> (C, G[, S])."""
        x = jnp.reshape(x, lead + x.shape[1:])
        return jnp.moveaxis(x, -1, 1) if len(lead) == 2 else x

    base = jnp.reshape(base, lead)
    sens = to_cg(mean)
    return SensitivityResult(
        steps=np.asarray(run.steps),
        gamma=gammas,
        samples=samples,
        pretrain_lr=float(run.lr),
        loss=base,
        perturbed_loss=sens + jnp.expand_dims(base, 1),
        sensitivity=sens,
        stderr=to_cg(se),
    )

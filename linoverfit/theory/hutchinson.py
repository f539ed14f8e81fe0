r"""Second-order sensitivity of any network: :math:`\tfrac{\gamma^2}{2}\operatorname{tr}H` by Hutchinson's estimator.

For a loss :math:`L(W)` twice differentiable in all its parameters :math:`W \in \mathbb R^n` (every
leaf of a params pytree, flattened) and noise :math:`E` with iid :math:`\mathcal N(0, 1)` entries,
the Taylor expansion of the perturbed loss has no odd terms in expectation, so

.. math:: S(W, \gamma) = \mathbb E\,L(W + \gamma E) - L(W) = \tfrac{\gamma^2}{2}\operatorname{tr}H(W) + O(\gamma^4),
          \qquad H = \nabla^2_W L

(``docs/theory.md``, section 11.1). For a deep linear network :math:`S` is a polynomial in
:math:`\gamma^2` (:mod:`linoverfit.theory.perturbation`) whose first coefficient is exactly
:math:`c_1 = \tfrac12\operatorname{tr}H`, so the error is :math:`c_2\gamma^4 + \dots`; for a
nonlinear network the :math:`\gamma^4` term is :math:`\tfrac{\gamma^4}{8}\sum_{ij}\partial_i^2\partial_j^2 L`.

The trace is estimated by Hutchinson's estimator: for Rademacher probes :math:`v` (iid
:math:`\pm 1` entries), :math:`\mathbb E\,v^\top H v = \operatorname{tr}H`, with
:math:`\operatorname{Var}\,v^\top H v = 2\sum_{i\ne j}H_{ij}^2`. Each :math:`v^\top H v` is one
Hessian-vector product, forward-over-reverse (``jax.jvp`` of ``jax.grad``), vmapped over the probes
in batches. With ``probes="exact"`` the probes are the :math:`n` basis vectors and the trace is
exact (round-off), for small networks.

**The Gauss-Newton part.** For the squared loss :math:`L = \tfrac1{2N}\sum_n\lVert f(x_n) - y_n\rVert^2`
the Hessian splits as :math:`H = \tfrac1N J^\top J + \tfrac1N\sum_{n,o} r_{no}\nabla^2 f_o(x_n)`,
:math:`J` the ``(N d_out, n)`` Jacobian of the outputs and :math:`r = f - y` the residual.
:math:`\tfrac{\gamma^2}{2}\operatorname{tr}(J^\top J)/N` is the sensitivity of the *linearised*
network (it is all of it at an interpolating minimum, :math:`r = 0`); ``gauss_newton=True``
estimates that part alone, with :math:`v^\top G v = \lVert Jv\rVert^2/N` (one ``jax.jvp``). For the
population loss of a linear network it is :math:`\operatorname{tr}(\delta P\,\Sigma\,\delta P^\top)`,
:math:`\delta P` the change of the end-to-end map along :math:`v`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from .. import objective as _obj
from .. import validation as _v
from ..networks import Network, end_to_end
from ..result_types import PretrainResult, SensitivityResult, checkpoint_axis
from ..sensitivity import checked_run_task
from ..sweeps import Footprint, Layout, Work, sweep
from ..tasks import Dataset, Task

__all__ = ["second_order_sensitivity", "HessianTraceRun"]

#: Probe entries evaluated together: probes per vmapped batch = this / parameters (at least 1).
PROBE_BATCH_ELEMENTS = 2**20


def _output_loss(net, task, identity):
    """``(out, ell)``: the outputs as a function of the params, and the loss as a function of the
    outputs, so that ``L(W) = ell(out(W))`` (the end-to-end map of a linear network, else the outputs
    on the Dataset's inputs)."""
    if net is None:
        return end_to_end, lambda P: _obj.loss(task, P, identity)
    return (lambda W: net.apply(W, task.x)), (lambda o: 0.5 * jnp.mean(jnp.sum((o - task.y) ** 2, axis=-1)))


@dataclass(frozen=True)
class HessianTraceRun:
    r"""One weight set, ``run = W`` (a tuple of layers or a params pytree) -> ``(L(W), trace, stderr)``:
    Hutchinson's estimate of :math:`\operatorname{tr}H` (or of the Gauss-Newton part, ``gauss_newton``)
    over the ``shared = (task, probes)`` probes ``(M, n)``, and its standard error
    :math:`\operatorname{std}(v^\top H v)/\sqrt M`; with ``exact`` the probes are the basis and the
    trace is their sum (stderr 0). ``net`` is ``None`` for a linear network (end-to-end map)."""

    identity: bool
    batch: int
    exact: bool = False
    gauss_newton: bool = False
    net: Any = None

    def __call__(self, W, shared):
        task, probes = shared
        flat, unravel = ravel_pytree(W)
        loss = lambda x: _obj.net_loss(self.net, task, unravel(x), self.identity)  # noqa: E731
        if self.gauss_newton:
            out, ell = _output_loss(self.net, task, self.identity)
            o0 = out(unravel(flat))
            dell = jax.grad(ell)

            def quad(v):
                u = jax.jvp(lambda x: out(unravel(x)), (flat,), (v,))[1]
                return jnp.sum(u * jax.jvp(dell, (o0,), (u,))[1])
        else:
            grad = jax.grad(loss)

            def quad(v):
                return jnp.dot(v, jax.jvp(grad, (flat,), (v,))[1])

        q = jax.lax.map(quad, probes, batch_size=self.batch)
        if self.exact:
            return loss(flat), jnp.sum(q), jnp.zeros((), q.dtype)
        return loss(flat), jnp.mean(q), jnp.std(q, ddof=1) / jnp.sqrt(q.shape[0])


def _check_probes(probes):
    if isinstance(probes, str):
        if probes != "exact":
            raise ValueError(f"probes must be an integer >= 2 or 'exact', got {probes!r}")
        return probes
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)):
        raise TypeError(f"probes must be an integer >= 2 or 'exact', got {probes!r}")
    if probes < 2:
        raise ValueError(f"probes must be >= 2 to estimate a standard error (or 'exact'), got {probes}")
    return int(probes)


def second_order_sensitivity(
    net: Network,
    run: PretrainResult,
    task: Task | Dataset | None = None,
    gamma: float | Sequence[float] | ArrayLike = (0.01,),
    probes: int | str = 64,
    key: jax.Array | int | None = None,
    *,
    gauss_newton: bool = False,
    layout: Layout | None = None,
) -> SensitivityResult:
    r"""Second-order sensitivity :math:`S_2(W,\gamma) = \tfrac{\gamma^2}{2}\operatorname{tr}\nabla^2_W L`
    at every checkpoint, by Hutchinson's estimator, laid out as ``lo.sensitivity.gaussian``'s result.

    Args:
      net, run: any :class:`~linoverfit.networks.Network` and a :class:`~linoverfit.PretrainResult`
        with weights (every leaf of the params counts, as every leaf is perturbed by ``gaussian``).
      task: Task (population loss; linear networks) or Dataset (sample loss); default ``run.task``.
      gamma: one or more noise scales :math:`\gamma > 0`, shape ``(G,)``.
      probes: Rademacher probes ``M >= 2`` per weight set, shared by every checkpoint and seed (common
        random numbers), or ``"exact"``: the ``n`` basis vectors (exact trace, ``n`` HVPs, small nets).
      key: ``jax.random`` key or integer seed of the probes (required unless ``probes="exact"``).
      gauss_newton: estimate only the Gauss-Newton part :math:`\tfrac{\gamma^2}{2}\operatorname{tr}G`
        (module docstring): the sensitivity of the network linearised at the checkpoint.
      layout: :class:`~linoverfit.Layout` of the checkpoint x seed weight sets (default chunk 1).

    Returns a :class:`~linoverfit.SensitivityResult`: ``loss`` ``(C[, S])``, ``sensitivity`` and
    ``stderr`` ``(C, G[, S])`` (``stderr`` :math:`= \tfrac{\gamma^2}{2}\operatorname{std}(v^\top Hv)/\sqrt M`,
    0 for ``"exact"``), ``perturbed_loss = loss + sensitivity``, ``samples = M`` (``n`` for ``"exact"``),
    ``prediction`` ``"hutchinson"`` or ``"exact_trace"`` (with ``"(gauss_newton)"`` appended), and
    ``exact`` False (it is the :math:`\gamma^2` term only). ``lo.turning_point`` reads it as a
    measured result.
    """
    task = checked_run_task(net, run, task)
    gammas = _v.positive_vector(gamma, "gamma")
    probes = _check_probes(probes)
    exact = probes == "exact"
    key = None if exact else _v.prng_key(key, "key", purpose="the Hutchinson probes")
    nonlinear = _obj.nonlinear(net)
    weights = net.check_weights(run.weights, "run.weights")
    dtype = _v.working_dtype(jax.tree.leaves(weights), "run.weights")
    lead = tuple(run.loss.shape)
    B = int(np.prod(lead))
    if nonlinear:
        runs = jax.tree.map(lambda w: jnp.reshape(jnp.asarray(w, dtype), (B,) + np.shape(w)[len(lead):]), weights)
    else:
        runs = tuple(jnp.reshape(jnp.asarray(w, dtype), (B,) + np.shape(w)[-2:]) for w in weights)
    task = _v.cast_objective(task, dtype)
    n = sum(int(np.prod(np.shape(w)[1:])) for w in jax.tree.leaves(runs))
    M = n if exact else probes
    batch = min(M, max(1, PROBE_BATCH_ELEMENTS // n))
    isz = np.dtype(dtype).itemsize
    footprint = Footprint(shared=(M + B) * n * isz, per_run=6 * batch * n * isz, per_output=3 * isz,
                          label="the second-order sensitivity",
                          what=f"{M} probes x {n} parameters of {np.dtype(dtype).name}, {B} weight set(s)",
                          fix="pass fewer probes (not 'exact' for a large network) or fewer checkpoints per call")
    if exact and n * n * isz >= 2**30:
        raise ValueError(f"probes='exact' needs {n} HVPs and an {n} x {n} identity ({n} parameters); pass an integer "
                         "number of probes")
    V = jnp.eye(n, dtype=dtype) if exact else jax.random.rademacher(key, (M, n), dtype)
    fn = HessianTraceRun(identity=_obj.identity_cov(task), batch=batch, exact=exact,
                         gauss_newton=bool(gauss_newton), net=net if nonlinear else None)
    rows = task.n if isinstance(task, Dataset) else 1
    work = Work(desc="second-order sensitivity", unit="set", flops=8.0 * M * n * rows * B)
    base, tr, se = sweep(fn, runs, (task, V), layout=layout, work=work, footprint=footprint, default_chunk=1)
    half_g2 = jnp.asarray(0.5 * gammas**2, dtype)

    def per_gamma(x):  # (B,) -> (C, G[, S])
        return jnp.reshape(x, lead)[:, None] * half_g2.reshape((1, -1) + (1,) * (len(lead) - 1))

    base, sens, err = jnp.reshape(base, lead), per_gamma(tr), per_gamma(se)
    name = ("exact_trace" if exact else "hutchinson") + ("(gauss_newton)" if gauss_newton else "")
    return SensitivityResult(
        **checkpoint_axis(run), gamma=gammas, samples=M, loss=base, perturbed_loss=sens + jnp.expand_dims(base, 1),
        sensitivity=sens, stderr=err, prediction=name, exact=False)

r"""The objective, written once: the loss of a network on a task and its gradient in the parameters.

Every simulation (:func:`~linoverfit.pretrain`, :func:`~linoverfit.finetune`,
:func:`~linoverfit.sensitivity.gaussian`), the exact-GD predictions of :mod:`linoverfit.theory` and
the sharpness use these functions, so a step of the theory's GD and a step of the simulation are
the same arithmetic.

Loss of a linear network with end-to-end map :math:`P` (the library's convention):

* population (:class:`~linoverfit.tasks.Task`):
  :math:`L(P) = \tfrac12\operatorname{tr}\big((P-A)\Sigma(P-A)^\top\big) + \tfrac12\sigma_\varepsilon^2 d_{out}`;
* finite sample (:class:`~linoverfit.tasks.Dataset`): :math:`\tfrac1{2N}\sum_i\lVert Px_i - y_i\rVert^2`;
* a random minibatch of a Dataset, or ``batch_size`` fresh samples of a Task (online SGD).

A linear network (:func:`linoverfit.networks.is_linear`) enters through its end-to-end map
(:meth:`DeepLinear.end_to_end`); the population gradient is the closed form
:math:`G = (P-A)\Sigma` pulled back through the product. Any other network (``net`` given, e.g.
:class:`~linoverfit.MLP`, :class:`~linoverfit.Model`) enters through ``net.apply``: its loss is the
sample loss :math:`\tfrac1{2N}\sum_n\lVert f(x_n) - y_n\rVert^2`, :math:`f = ` ``net.apply(params, .)``,
on a Dataset, a minibatch of it, or online samples of a Task; it has no population loss
(:func:`require_samples`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import validation as _v
from .networks import end_to_end, is_linear
from .tasks import Dataset, Task

__all__ = ["identity_cov", "prepared", "loss", "value_and_grad", "online_batch", "step_key", "diverging",
           "divergence_limit", "zero_map_loss", "sample_loss", "net_loss", "nonlinear", "require_samples"]


def nonlinear(net) -> bool:
    r"""True when ``net`` is given and not linear (no end-to-end map :math:`P`): its loss goes through
    ``net.apply`` on samples, :func:`sample_loss`."""
    return net is not None and not is_linear(net)


def require_samples(net, task, name: str = "task", online: bool = False, streams: bool = False):
    r"""``task`` unless ``net`` is nonlinear and ``task`` is a population :class:`Task` (not sampled
    online): such a network has no population loss :math:`\mathbb E\,\tfrac12\lVert f(x) - y\rVert^2`
    in closed form, and a ``ValueError`` names the fixes: a Dataset, and for a call that can sample
    online (``streams``: ``lo.pretrain``) online training."""
    if nonlinear(net) and isinstance(task, Task) and not online:
        stream = (" or pre-train online (lo.pretrain(..., online=True, batch_size=B): fresh samples every step)"
                  if streams else "")
        raise ValueError(
            f"{name} is a population Task, but {type(net).__name__} is not linear: its loss has no closed form over "
            f"the input distribution, only over samples. Pass a Dataset ({name}.sample(n, key)){stream}.")
    return task


def sample_loss(net, params, x, y):
    r""":math:`\tfrac1{2B}\sum_b\lVert f(x_b) - y_b\rVert^2` with :math:`f = ` ``net.apply(params, .)``;
    ``x`` ``(B, d_in)``, ``y`` ``(B, d_out)``; a scalar."""
    r = net.apply(params, x) - y
    return 0.5 * jnp.mean(jnp.sum(r * r, axis=-1), axis=-1)


def net_loss(net, task, W, identity: bool = False):
    """Loss of one network's params ``W`` on ``task``: :func:`loss` of the end-to-end map for a linear
    ``net`` (or ``net=None``), :func:`sample_loss` on a Dataset's samples otherwise."""
    if not nonlinear(net):
        return loss(task, end_to_end(W), identity)
    return sample_loss(net, W, task.x, task.y)


def identity_cov(task) -> bool:
    r"""True when ``task`` is a :class:`Task` whose input covariance is exactly :math:`I`.

    A *structural* flag chosen at the API boundary (a static argument of the compiled programs):
    the matmul by :math:`\Sigma` is skipped. Changing teacher or covariance values never
    recompiles; switching between identity and non-identity covariance compiles a second program once.
    """
    if not isinstance(task, Task) or _v.is_traced(task.input_cov):
        return False
    cov = np.asarray(task.input_cov)
    return bool(np.array_equal(cov, np.eye(cov.shape[0], dtype=cov.dtype)))


def prepared(task):
    r"""``task`` with :math:`\Sigma` symmetrised, so that :math:`\nabla_P L = (P - A)\Sigma` is exactly
    the gradient of the documented loss (a Dataset is returned as it is)."""
    if not isinstance(task, Task):
        return task
    cov = 0.5 * (task.input_cov + jnp.swapaxes(task.input_cov, -1, -2))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(task), [task.teacher, cov, task.noise])


def loss(task, P, identity: bool = False):
    """Loss of the end-to-end map(s) ``P`` ``(..., d_out, d_in)`` (population or full sample);
    with ``identity`` (see :func:`identity_cov`) the :math:`\\Sigma` matmul is skipped."""
    if identity:
        D = P - task.teacher
        return 0.5 * jnp.sum(D * D, axis=(-2, -1)) + 0.5 * task.noise * task.d_out
    return task.loss(P)


def step_key(key, step):
    """``fold_in(key, step)``; 64-bit step counts past ``2**32`` also fold in their high word, so
    no two steps share a minibatch key (steps below ``2**32`` keep the 32-bit stream)."""
    step = jnp.asarray(step)
    k = jax.random.fold_in(key, step)
    if jnp.dtype(step.dtype).itemsize <= 4:
        return k
    high = (step >> 32).astype(jnp.uint32)
    return jax.lax.cond(high > 0, lambda: jax.random.fold_in(jax.random.fold_in(key, step.astype(jnp.uint32)), high),
                        lambda: k)


def online_batch(task, root, key, step, batch_size):
    r"""Fresh samples of step ``step``: :math:`x = z\Sigma^{1/2}`, :math:`y = Ax + \sigma_\varepsilon\xi`,
    :math:`z, \xi \sim \mathcal N(0, I)` from ``fold_in(key, step)``; ``root`` is :math:`\Sigma^{1/2}`
    (``None`` for :math:`\Sigma = I`). Returns ``x`` ``(B, d_in)``, ``y`` ``(B, d_out)``."""
    kx, ke = jax.random.split(step_key(key, step))
    dtype = task.teacher.dtype
    x = jax.random.normal(kx, (batch_size, task.d_in), dtype)
    if root is not None:
        x = x @ root
    eps = jax.random.normal(ke, (batch_size, task.d_out), dtype)
    return x, x @ task.teacher.T + jnp.sqrt(jnp.asarray(task.noise, dtype)) * eps


def _sampled_loss(task, P, key, step, batch_size, root=None, net=None):
    """Loss used for a stochastic gradient: a random minibatch (with replacement) of a Dataset, or
    fresh samples of a Task (online SGD). ``P`` is the end-to-end map, or the params of a nonlinear ``net``."""
    batch_loss = Dataset.batch_loss if net is None else (lambda W, x, y: sample_loss(net, W, x, y))
    if isinstance(task, Task):
        return batch_loss(P, *online_batch(task, root, key, step, batch_size))
    idx = jax.random.randint(step_key(key, step), (batch_size,), 0, task.n)
    return batch_loss(P, task.x[idx], task.y[idx])


def value_and_grad(task, W, key=None, step=0, batch_size=None, identity=False, root=None, net=None):
    r"""Objective value and its gradient with respect to the layers ``W``.

    Population loss (:class:`Task`): the closed form :math:`G = \nabla_P L = (P - A)\Sigma` pulled
    back through :math:`P = W_L\cdots W_1` by ``jax.vjp`` of the product, i.e.
    :math:`\partial L/\partial W_l = (W_L\cdots W_{l+1})^\top G\,(W_{l-1}\cdots W_1)^\top`:
    :math:`3(L-1)` matmuls, plus one for :math:`\Sigma \ne I`. (``jax.grad`` of the quadratic form
    would also form :math:`(P-A)\Sigma^\top`, one matmul more per step.) ``task`` must come from
    :func:`prepared`. Finite-sample objectives (:class:`Dataset`), minibatches (``batch_size``) and
    online SGD (a Task with ``batch_size``, fresh samples through ``root`` :math:`= \Sigma^{1/2}`)
    use ``jax.value_and_grad``, as does a nonlinear ``net`` (its :func:`sample_loss`; ``W`` its params).
    """
    if nonlinear(net):
        if batch_size is None:
            return jax.value_and_grad(lambda w: sample_loss(net, w, task.x, task.y))(W)
        return jax.value_and_grad(lambda w: _sampled_loss(task, w, key, step, batch_size, root, net))(W)
    if isinstance(task, Task) and batch_size is None:
        P, pullback = jax.vjp(end_to_end, W)
        D = P - task.teacher
        G = D if identity else D @ task.input_cov
        value = 0.5 * jnp.sum(D * G) + 0.5 * task.noise * task.d_out
        (g,) = pullback(G)
        return value, g
    if batch_size is None:
        return jax.value_and_grad(lambda w: task.loss(end_to_end(w)))(W)
    return jax.value_and_grad(lambda w: _sampled_loss(task, end_to_end(w), key, step, batch_size, root))(W)


def zero_map_loss(task):
    r"""Loss of the zero predictor, :math:`L(0)` (a scalar of the task's dtype): the task's natural
    loss scale, e.g. :math:`\tfrac12\operatorname{tr}(W_* \Sigma W_*^\top)` for a teacher task."""
    dtype = task.x.dtype if isinstance(task, Dataset) else task.teacher.dtype
    return task.loss(jnp.zeros((task.d_out, task.d_in), dtype))


def divergence_limit(task, W_start, factor, identity=False, net=None):
    r"""The one divergence rule's threshold, a scalar:
    :math:`\text{limit} = \text{factor}\cdot\max(L(W_{\text{start}}), L(0))`, i.e. ``factor``
    times the larger of the starting loss and the loss of the zero map (the task's natural scale).
    ``W_start`` is a tuple of layer weights, or a nonlinear ``net``'s params (any leading batch axes
    are not allowed)."""
    return factor * jnp.maximum(net_loss(net, task, W_start, identity), zero_map_loss(task))


def diverging(value, limit):
    r"""Boolean array of ``value``'s shape: :math:`\neg\text{isfinite}(L) \lor L > \text{limit}`, a
    loss that is non-finite or above the divergence limit (see :func:`divergence_limit`)."""
    return ~jnp.isfinite(value) | (value > limit)

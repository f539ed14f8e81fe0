r"""Pre-training optimisers whose hyperparameters are traced values (new values never recompile).

Each optimiser is a small pytree (its hyperparameters are the leaves) passed to
``lo.pretrain(..., optimizer=...)``. Inside the compiled run it becomes an optax transformation
built from those traced leaves, so a sweep over momentum, Adam's betas or SAM's radius compiles
once per optimiser *kind* and reuses the program for every value.

With learning rate :math:`\eta_k` at step :math:`k` and gradient :math:`g_k = \nabla_W L(W_k)`
(plus weight decay, if any):

* :class:`GD`: :math:`W_{k+1} = W_k - \eta_k g_k` (the default; ``optimizer=None``).
* :class:`Momentum` (heavy ball, ``optax.sgd(lr, momentum=beta)``): :math:`m_{k+1} = g_k + \beta m_k`,
  :math:`W_{k+1} = W_k - \eta_k m_{k+1}`. In the flow limit (small :math:`\eta`, :math:`\beta`
  fixed) this is gradient flow in the time :math:`t/(1-\beta)`.
* :class:`Adam` (``optax.adam``): bias-corrected first and second moments, update
  :math:`-\eta_k \hat m / (\sqrt{\hat v} + \epsilon)`.
* :class:`SAM` (sharpness-aware minimisation, Foret et al. 2021): the gradient is taken at the
  adversarial point :math:`W + \rho\, g/\lVert g\rVert` (one normalised ascent step of radius
  :math:`\rho`, :math:`\lVert\cdot\rVert` the global Frobenius norm over all layers) and handed
  to the ``base`` optimiser. This is ``optax.contrib.sam(base, chain(normalize(), sgd(rho)),
  sync_period=2)``, written as one gradient evaluation pair per step so that a step stays one
  step of pre-training time.

Examples:
  >>> import linoverfit as lo
  >>> lo.optimizers.SAM(rho=0.05, base=lo.optimizers.Momentum(0.9))
  SAM(rho=0.05, base=Momentum(beta=0.9))
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import optax

from . import validation as _v

__all__ = ["GD", "Momentum", "Adam", "SAM", "OPTIMIZERS"]


def _register(cls):
    """Register a frozen dataclass as a pytree: numeric fields are leaves, others (``base``) subtrees."""
    names = tuple(f.name for f in fields(cls))

    def flatten(obj):
        return tuple(getattr(obj, n) for n in names), None

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for n, v in zip(names, children):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


class _Optimizer:
    """Base: ``transform(lr)`` -> optax transformation; ``gradient(value_and_grad, W)`` -> (loss, g)."""

    def gradient(self, value_and_grad, W):
        """``(L(W), g)`` with :math:`g = \\nabla_W L(W)` from ``value_and_grad`` (``W``: tuple of layer arrays)."""
        return value_and_grad(W)

    def __repr__(self):
        def fmt(v):
            return repr(v) if isinstance(v, _Optimizer) else f"{float(v):g}"

        args = ", ".join(f"{f.name}={fmt(getattr(self, f.name))}" for f in fields(self))
        return f"{type(self).__name__}({args})"


def _hyper(value, name, upper=None):
    """A scalar hyperparameter ``>= 0`` (``< upper`` if given); traced values pass unchecked."""
    if _v.is_traced(value):
        return value
    value = _v.positive_scalar(value, name, allow_zero=True)
    if upper is not None and not value < upper:
        raise ValueError(f"{name} must be < {upper:g}, got {value:g}")
    return value


@_register
@dataclass(frozen=True, eq=False, repr=False)
class GD(_Optimizer):
    """Plain gradient descent, :math:`W \\leftarrow W - \\eta g`."""

    def transform(self, lr):
        """``optax.sgd(lr)``: the update :math:`-\\eta g`."""
        return optax.sgd(lr)


@_register
@dataclass(frozen=True, eq=False, repr=False)
class Momentum(_Optimizer):
    r"""Heavy-ball momentum :math:`0 \le \beta < 1` (``optax.sgd(lr, momentum=beta)``)."""

    beta: float = 0.9

    def __post_init__(self):
        object.__setattr__(self, "beta", _hyper(self.beta, "beta", 1.0))

    def transform(self, lr):
        """:math:`m \\leftarrow g + \\beta m`, update :math:`-\\eta m` (``trace`` then ``scale(-lr)``)."""
        return optax.chain(optax.trace(decay=self.beta), optax.scale(-lr))


@_register
@dataclass(frozen=True, eq=False, repr=False)
class Adam(_Optimizer):
    r"""Adam with :math:`0 \le \beta_1, \beta_2 < 1` and :math:`\epsilon > 0` (``optax.adam``)."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "b1", _hyper(self.b1, "b1", 1.0))
        object.__setattr__(self, "b2", _hyper(self.b2, "b2", 1.0))
        if not _v.is_traced(self.eps):
            object.__setattr__(self, "eps", _v.positive_scalar(self.eps, "eps"))

    def transform(self, lr):
        """``optax.adam(lr, b1, b2, eps)``: update :math:`-\\eta\\,\\hat m/(\\sqrt{\\hat v}+\\epsilon)`."""
        return optax.adam(lr, b1=self.b1, b2=self.b2, eps=self.eps)


@_register
@dataclass(frozen=True, eq=False, repr=False)
class SAM(_Optimizer):
    r"""Sharpness-aware minimisation of radius :math:`\rho \ge 0` around a ``base`` optimiser (default :class:`GD`).

    The update direction is the gradient at :math:`W + \rho\,g/\lVert g\rVert` (global norm; a
    zero gradient is not perturbed), fed to ``base``. ``rho = 0`` is exactly ``base``.
    """

    rho: float = 0.05
    base: _Optimizer | None = None

    def __post_init__(self):
        object.__setattr__(self, "rho", _hyper(self.rho, "rho"))
        base = GD() if self.base is None else self.base
        if not isinstance(base, _Optimizer) or isinstance(base, SAM):
            raise TypeError("SAM(base=...) must be GD(), Momentum(...) or Adam(...)")
        object.__setattr__(self, "base", base)

    def transform(self, lr):
        """The base optimiser's transformation (SAM changes only where the gradient is taken)."""
        return self.base.transform(lr)

    def gradient(self, value_and_grad, W):
        """``(L(W), g_adv)``: :math:`g_{adv} = \\nabla L(W + \\rho\\, g/\\lVert g\\rVert)` (global Frobenius norm)."""
        loss, g = value_and_grad(W)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g)))
        # a zero gradient (an exact stationary point) is not perturbed: 0/0 would be NaN
        scale = jnp.where(norm > 0, self.rho / jnp.where(norm > 0, norm, 1.0), 0.0)
        _, g_adv = value_and_grad(jax.tree.map(lambda w, d: w + scale * d, W, g))
        return loss, g_adv


#: Name -> class, for configs (``"momentum"`` -> :class:`Momentum`).
OPTIMIZERS = {"gd": GD, "momentum": Momentum, "adam": Adam, "sam": SAM}


@dataclass(frozen=True)
class _Fixed:
    """Factory that ignores ``lr`` (the user's transformation carries its own step size)."""

    tx: optax.GradientTransformation

    def __call__(self, lr):
        return self.tx

    def __hash__(self):
        return id(self.tx)


def resolve(optimizer) -> tuple:
    """``(make_opt, spec)`` for the ``optimizer=`` argument of the sweeps.

    ``None`` (plain GD: ``make_opt = optax.sgd``), an ``optax.GradientTransformation`` (used as is)
    or a callable ``lr -> GradientTransformation`` give a static, hashable factory ``make_opt``
    and ``spec = None``; an instance of this module's optimisers (or its name: ``"gd"``,
    ``"momentum"``, ``"adam"``, ``"sam"``) gives ``make_opt = None`` and the spec, a traced pytree,
    so new hyperparameter values reuse the compiled program.
    """
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} by name, got {optimizer!r}")
        optimizer = OPTIMIZERS[optimizer.lower()]()
    if isinstance(optimizer, _Optimizer):
        return None, optimizer
    if optimizer is None:
        return optax.sgd, None
    if isinstance(optimizer, optax.GradientTransformation):
        return _Fixed(optimizer), None
    if callable(optimizer):
        return optimizer, None
    raise TypeError("optimizer must be None (plain GD), a linoverfit.optimizers instance or name, an "
                    "optax.GradientTransformation, or a callable lr -> GradientTransformation")

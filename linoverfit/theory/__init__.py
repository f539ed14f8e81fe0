r"""Closed-form theory of catastrophic overtraining in deep linear networks.

Every function computes, without simulating parameters, a quantity the simulation measures; each is
derived in ``docs/theory.md`` and checked against simulation in ``tests/test_theory_*.py``.

At the top level, what a notebook needs most:

* :func:`~linoverfit.theory.mirror.pretrain`, :func:`~linoverfit.theory.mirror.finetune`,
  :func:`~linoverfit.theory.mirror.gaussian`: the simulation's own calls (``lo.pretrain``,
  ``lo.finetune``, ``lo.sensitivity.gaussian``), predicted, returning the same result types
  (:mod:`~linoverfit.theory.mirror`).
* :func:`~linoverfit.theory.perturbation.expected_perturbed_loss`: the exact
  :math:`\mathbb E[L(W + \gamma E)]` of any weights.
* :func:`~linoverfit.theory.curvature.sharpness`, :func:`~linoverfit.theory.curvature.stability_edge`:
  the top Hessian eigenvalue of the loss and :math:`2/\lambda_{max}`, for any weights.
* :func:`~linoverfit.theory.ucurve.u_curve`, :class:`~linoverfit.theory.ucurve.UCurve`: the one
  definition of a U-curve and its turning point.
* :class:`~linoverfit.theory.curvature.PastEdgeWarning`, :class:`~linoverfit.theory.modes.UnderivedWarning`:
  a prediction asked for past the stability edge, a closed form used outside the conditions it was
  derived under.

The spectrum-level closed forms live in the submodules:

* :mod:`~linoverfit.theory.modes`: singular-mode dynamics of balanced aligned gradient flow and GD,
  :math:`\dot s = L s^{2-2/L}(\sigma - s) - L\lambda s`
  (:func:`~linoverfit.theory.modes.mode_trajectory`, :func:`~linoverfit.theory.modes.input_variance`,
  :func:`~linoverfit.theory.modes.gaussian_init_s0`).
* :mod:`~linoverfit.theory.perturbation`: the exact expected loss under Gaussian perturbation for
  any depth, widths and input covariance, and as a function of the learnt spectrum
  (:func:`~linoverfit.theory.perturbation.sensitivity_from_spectrum`).
* :mod:`~linoverfit.theory.curvature`: the sharpness, exact for any weights and in closed form for
  balanced aligned networks (:func:`~linoverfit.theory.curvature.sharpness_from_spectrum`).
* :mod:`~linoverfit.theory.flow`: the function-space flow of balanced networks
  (:func:`~linoverfit.theory.flow.end_to_end_flow`).
* :mod:`~linoverfit.theory.forgetting`: fine-tuning and forgetting predicted from a checkpoint or a
  map (:func:`~linoverfit.theory.forgetting.predict_finetune`,
  :func:`~linoverfit.theory.forgetting.first_order_forgetting`).
* :mod:`~linoverfit.theory.curves`: predicted U-curves over pre-training time
  (:func:`~linoverfit.theory.curves.perturbed_loss_curve`, :func:`~linoverfit.theory.curves.finetune_curve`).
* :mod:`~linoverfit.theory.turning`: their minimiser :math:`T^*` and the per-mode thresholds
  (:func:`~linoverfit.theory.turning.turning_point`, :func:`~linoverfit.theory.turning.perturbation_threshold`).
* :mod:`~linoverfit.theory.ucurve`: :func:`~linoverfit.theory.ucurve.u_curve`, and the turning point of
  any result, measured or predicted (:func:`~linoverfit.theory.ucurve.turning_point`, ``lo.turning_point``).
* :mod:`~linoverfit.theory.mirror`: the simulation's calls, predicted; :mod:`~linoverfit.theory.integrate`:
  scipy's DOP853 as one jitted, vmapped loop.
* Predictions for any network (nonlinear ones included), on the same result types:
  :mod:`~linoverfit.theory.hutchinson`, the second-order sensitivity :math:`\tfrac{\gamma^2}{2}\operatorname{tr}H`
  (:func:`~linoverfit.theory.hutchinson.second_order_sensitivity`), and :mod:`~linoverfit.theory.linearised`,
  fine-tuning of the network linearised at each checkpoint (:func:`~linoverfit.theory.linearised.finetune`).

Conventions are the library's: time :math:`t = \eta\cdot\text{steps}`, loss with the 1/2, Gaussian
perturbation :math:`W_l + \gamma E_l` of all layers. The names this package exported before 0.2.0
(``lo.theory.mode_trajectory``, ``lo.theory.predict_finetune``, ...) still work until 0.3.0, with a
``DeprecationWarning`` naming their submodule (:mod:`linoverfit.deprecation`).
"""

from .. import deprecation as _deprecation
from . import (curvature, curves, flow, forgetting, hutchinson, integrate, linearised, mirror, modes, perturbation,
               turning, ucurve)
from .curvature import PastEdgeWarning, sharpness, stability_edge
from .mirror import finetune, gaussian, pretrain
from .modes import UnderivedWarning
from .perturbation import expected_perturbed_loss
from .ucurve import UCurve, u_curve

__all__ = [
    "pretrain",
    "finetune",
    "gaussian",
    "expected_perturbed_loss",
    "sharpness",
    "stability_edge",
    "u_curve",
    "UCurve",
    "PastEdgeWarning",
    "UnderivedWarning",
]

#: The public submodules: ``dir(lo.theory)`` lists them with :data:`__all__`.
SUBMODULES = (curvature, curves, flow, forgetting, hutchinson, integrate, linearised, mirror, modes, perturbation, turning,
              ucurve)

# the names exported here before 0.2.0, each now in its submodule (one release with a DeprecationWarning)
for _sub, _names in {
    "modes": ("mode_trajectory", "mode_velocity", "mode_asymptote", "input_variance", "gaussian_init_s0"),
    "perturbation": ("perturbation_coefficients", "perturbation_sensitivity", "sensitivity_from_spectrum"),
    "curvature": ("sharpness_from_spectrum",),
    "flow": ("end_to_end_velocity", "end_to_end_flow"),
    "forgetting": ("predict_finetune", "first_order_forgetting", "FinetunePrediction"),
    "curves": ("perturbed_loss_curve", "finetune_curve"),
    # lo.theory.turning_point (the spectrum-level T*) is not lo.turning_point (the turning point of a result)
    "turning": ("perturbation_threshold", "turning_point", "TurningPoint"),
}.items():
    for _name in _names:
        _deprecation.deprecate(f"{__name__}.{_name}", f"{__name__}.{_sub}.{_name}")


def __getattr__(name: str):
    """The deprecated old names (:mod:`linoverfit.deprecation`)."""
    return _deprecation.lookup(__name__, name)


def __dir__() -> list[str]:
    return sorted(__all__ + [m.__name__.rpartition(".")[2] for m in SUBMODULES])

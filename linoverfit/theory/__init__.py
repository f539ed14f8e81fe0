r"""Closed-form theory of catastrophic overtraining in deep linear networks.

Every function computes, without simulating parameters, a quantity the simulation measures; each is
derived in ``docs/theory.md`` and checked against simulation in ``tests/test_theory_*.py``.

* :mod:`~linoverfit.theory.modes`: singular-mode dynamics of balanced aligned gradient flow,
  :math:`\dot s = L s^{2-2/L}(\sigma - s) - L\lambda s` (:func:`mode_trajectory`).
* :mod:`~linoverfit.theory.perturbation`: the exact :math:`\mathbb E[L(W + \gamma E)]` for any
  depth, widths and input covariance (:func:`expected_perturbed_loss`), and as a function of the
  learnt spectrum (:func:`sensitivity_from_spectrum`).
* :mod:`~linoverfit.theory.turning`: predicted U-curves over pre-training time and their
  minimiser :math:`T^*` (:func:`turning_point`), per-mode thresholds.
* :mod:`~linoverfit.theory.ucurve`: the one definition of a U-curve and its turning point (an
  interior minimum followed by a rise of at least a stated depth), used for measured and predicted
  curves alike (:func:`u_curve`).
* :mod:`~linoverfit.theory.curvature`: top Hessian eigenvalue of the loss, exact for any weights
  (:func:`sharpness`, Lanczos on Hessian-vector products) and in closed form for balanced aligned
  networks (:func:`sharpness_from_spectrum`); the stability edge :math:`2/\lambda_{max}`.
* :mod:`~linoverfit.theory.flow`: the function-space flow of balanced networks
  (:func:`end_to_end_flow`), predicted fine-tuning and forgetting (:func:`predict_finetune`,
  :func:`first_order_forgetting`).

Conventions are the library's: time :math:`t = \eta\cdot\text{steps}`, loss with the 1/2, Gaussian
perturbation :math:`W_l + \gamma E_l` of all layers.
"""

from . import curvature, flow, modes, perturbation, turning, ucurve
from .flow import FinetunePrediction, end_to_end_flow, end_to_end_velocity, first_order_forgetting, predict_finetune
from .modes import UnderivedWarning, gaussian_init_s0, input_variance, mode_asymptote, mode_trajectory, mode_velocity
from .perturbation import (
    expected_perturbed_loss,
    perturbation_coefficients,
    perturbation_sensitivity,
    sensitivity_from_spectrum,
)
from .curvature import PastEdgeWarning, sharpness, sharpness_from_spectrum, stability_edge
from .turning import TurningPoint, finetune_curve, perturbation_threshold, perturbed_loss_curve, turning_point
from .ucurve import UCurve, u_curve

__all__ = [
    "mode_trajectory",
    "mode_velocity",
    "mode_asymptote",
    "input_variance",
    "gaussian_init_s0",
    "UnderivedWarning",
    "perturbation_coefficients",
    "perturbation_sensitivity",
    "expected_perturbed_loss",
    "sensitivity_from_spectrum",
    "perturbed_loss_curve",
    "finetune_curve",
    "perturbation_threshold",
    "turning_point",
    "TurningPoint",
    "u_curve",
    "UCurve",
    "end_to_end_velocity",
    "end_to_end_flow",
    "predict_finetune",
    "first_order_forgetting",
    "FinetunePrediction",
    "sharpness",
    "sharpness_from_spectrum",
    "stability_edge",
    "PastEdgeWarning",
]

"""The paper figures F1-F13, one module each, run by ``linoverfit figures``.

Every module is a thin layer over the public API (``lo.pretrain``, ``lo.finetune``,
``lo.sensitivity``, ``lo.theory``, ``lo.plotting``) with its parameters in one ``CONFIG`` block
at the top, ``QUICK`` overrides for tests, and ``run(out_dir, quick, seed, config, progress)``
that writes ``F<n>_<name>.png`` and ``.npz`` (the plotted data) and returns the figure's
headline numbers. Each is also a script: ``python -m linoverfit.experiments.f3_perturbation``
(or ``python experiments/F3_perturbation.py`` in a checkout), and can be copied and edited.
"""

from __future__ import annotations

import importlib

__all__ = ["FIGURES", "load"]

#: Figure number -> module name, in order.
FIGURES = {
    "F1": "f1_incremental",
    "F2": "f2_sensitivity",
    "F3": "f3_perturbation",
    "F4": "f4_finetuning",
    "F5": "f5_regularisation",
    "F6": "f6_tuned_lr",
    "F7": "f7_phase_diagram",
    "F8": "f8_depth",
    "F9": "f9_schedule_optimizer",
    "F10": "f10_noise_data",
    "F11": "f11_early_exposure",
    "F12": "f12_nonlinear",
    "F13": "f13_springer",
}


def load(number: str):
    """The module of figure ``number`` (``"F1"`` ... ``"F13"``)."""
    key = str(number).upper()
    if key not in FIGURES:
        raise ValueError(f"unknown figure {number!r}; choose from {', '.join(FIGURES)}")
    return importlib.import_module(f"{__name__}.{FIGURES[key]}")

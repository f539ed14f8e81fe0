"""linoverfit: catastrophic overtraining in deep linear networks, simulated and in closed form.

Quick map::

    lo.tasks          teachers, input covariances, shifted fine-tuning tasks
    lo.DeepLinear     deep linear networks as plain tuples of matrices
    lo.MLP, lo.Model  nonlinear networks (an MLP, or your own init/apply pair) through the same sweeps
    lo.pretrain       one compiled pre-training run, every checkpoint kept (lr schedules, online SGD)
    lo.finetune       every checkpoint x learning rate x seed fine-tuned in one compiled call
    lo.sensitivity    Monte Carlo sensitivity to Gaussian weight noise
    lo.theory         the same calls predicted in closed form (theory.pretrain/finetune/gaussian),
                      and the spectrum-level closed forms in its submodules
    lo.springer       Springer et al.'s setting: shared singular vectors, exp(-T) I init, rank-i checkpoints
    lo.turning_point  the turning point of a measured or predicted result
    lo.sweep          the one seam from a single-run function to a laid-out sweep (lo.Layout)
    lo.optimizers     momentum, Adam, SAM, hyperparameters traced (no recompiles)
    lo.errors         every error and warning the sweeps raise
    lo.plotting       the house figure style and plotting helpers
"""

from importlib import metadata as _metadata

from . import deprecation as _deprecation
from . import errors, optimizers, sensitivity, springer, tasks
from .checkpoints import linear_checkpoints, log_checkpoints
from .finetuning import finetune
from .models import MLP, Model
from .networks import DeepLinear
from .pretraining import pretrain
from .result_types import FinetuneResult, PretrainResult, SensitivityResult
from .sweeps import Layout, sweep
from .tasks import Dataset, Task

try:  # the one version source is pyproject.toml, read from the installed metadata
    __version__ = _metadata.version("linoverfit")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

#: Submodules loaded on first attribute access: ``theory`` (scipy.integrate), ``plotting``
#: (matplotlib), ``explorer`` (ipywidgets), ``parallel``, ``experiments`` and ``cli``, so that
#: ``import linoverfit`` costs little more than ``import jax``.
_LAZY_MODULES = ("theory", "plotting", "explorer", "parallel", "experiments", "cli")
#: Lazy functions: ``lo.explore`` (ipywidgets is needed only when it is called) and ``lo.turning_point``.
_LAZY_FUNCTIONS = {"explore": "linoverfit.explorer.explore", "turning_point": "linoverfit.theory.ucurve.turning_point"}

for _old, _new in {
    "end_to_end": "linoverfit.networks.end_to_end",
    "ResultFileError": "linoverfit.errors.ResultFileError",
    "MemoryBudgetError": "linoverfit.errors.MemoryBudgetError",
    "DivergenceError": "linoverfit.errors.DivergenceError",
    "DivergenceWarning": "linoverfit.errors.DivergenceWarning",
}.items():
    _deprecation.deprecate(f"{__name__}.{_old}", _new)

__all__ = [
    "tasks",
    "springer",
    "theory",
    "sensitivity",
    "optimizers",
    "errors",
    "plotting",
    "DeepLinear",
    "MLP",
    "Model",
    "Task",
    "Dataset",
    "pretrain",
    "finetune",
    "sweep",
    "Layout",
    "turning_point",
    "log_checkpoints",
    "linear_checkpoints",
    "PretrainResult",
    "FinetuneResult",
    "SensitivityResult",
    "explore",
]


def __getattr__(name: str):
    """Lazy attributes (:data:`_LAZY_MODULES`, :data:`_LAZY_FUNCTIONS`) and the deprecated old names."""
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_FUNCTIONS:
        return _deprecation.replacement(_LAZY_FUNCTIONS[name])
    return _deprecation.lookup(__name__, name)


def __dir__() -> list[str]:
    return sorted(__all__)

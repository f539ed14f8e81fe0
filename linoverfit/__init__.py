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
from typing import TYPE_CHECKING

from . import deprecation as _deprecation

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first access (below)
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

#: Every submodule and public name loads on first attribute access, so that ``import linoverfit``
#: imports neither JAX nor scipy, matplotlib or ipywidgets: ``linoverfit --version`` answers in
#: about 0.1 s. ``lo.tasks`` (or any name below) imports JAX and the modules it needs, once.
_LAZY_MODULES = ("tasks", "springer", "sensitivity", "optimizers", "errors", "theory", "plotting", "explorer",
                 "parallel", "experiments", "cli", "tuned")
#: Lazy names: ``name -> "module.attr"`` (``lo.explore`` needs ipywidgets only when it is called).
_LAZY_FUNCTIONS = {
    "DeepLinear": "linoverfit.networks.DeepLinear",
    "MLP": "linoverfit.models.MLP",
    "Model": "linoverfit.models.Model",
    "Task": "linoverfit.tasks.Task",
    "Dataset": "linoverfit.tasks.Dataset",
    "pretrain": "linoverfit.pretraining.pretrain",
    "finetune": "linoverfit.finetuning.finetune",
    "sweep": "linoverfit.sweeps.sweep",
    "Layout": "linoverfit.sweeps.Layout",
    "log_checkpoints": "linoverfit.checkpoints.log_checkpoints",
    "linear_checkpoints": "linoverfit.checkpoints.linear_checkpoints",
    "PretrainResult": "linoverfit.result_types.PretrainResult",
    "FinetuneResult": "linoverfit.result_types.FinetuneResult",
    "SensitivityResult": "linoverfit.result_types.SensitivityResult",
    "explore": "linoverfit.explorer.explore",
    "turning_point": "linoverfit.theory.ucurve.turning_point",
}

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
        value = _deprecation.replacement(_LAZY_FUNCTIONS[name])
        globals()[name] = value  # later accesses are plain attribute lookups
        return value
    return _deprecation.lookup(__name__, name)


def __dir__() -> list[str]:
    return sorted(__all__)

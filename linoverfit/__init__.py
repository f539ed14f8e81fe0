"""linoverfit: catastrophic overtraining in deep linear networks, simulated and in closed form.

Quick map::

    lo.tasks        teachers, input covariances, shifted fine-tuning tasks
    lo.DeepLinear   deep linear networks as plain tuples of matrices
    lo.pretrain     one compiled pre-training run, every checkpoint kept (lr schedules, online SGD)
    lo.optimizers   momentum, Adam, SAM for pre-training, hyperparameters traced (no recompiles)
    lo.finetune     every checkpoint x learning rate fine-tuned in one compiled call
    lo.sensitivity  Monte Carlo sensitivity to Gaussian weight noise
    lo.theory       the closed forms (mode dynamics, exact perturbed loss, turning point, flows)
    lo.plotting     the house figure style and plotting helpers
"""

from importlib import metadata as _metadata
from typing import Any

from . import checkpoints, networks, optimizers, sensitivity, tasks, training
from .checkpoints import linear_checkpoints, log_checkpoints
from .networks import DeepLinear, end_to_end
from .tasks import Dataset, Task
from .training import (
    DivergenceError,
    DivergenceWarning,
    FinetuneResult,
    PretrainResult,
    finetune,
    pretrain,
)
from .sensitivity import SensitivityResult
from .results import ResultFileError
from .memory import MemoryBudgetError

try:  # the one version source is pyproject.toml, read from the installed metadata
    __version__ = _metadata.version("linoverfit")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

#: Submodules loaded on first attribute access: ``theory`` (scipy.integrate), ``plotting``
#: (matplotlib), ``explorer`` (ipywidgets), ``parallel`` and ``experiments``, so that
#: ``import linoverfit`` costs little more than ``import jax``.
_LAZY_MODULES = ("theory", "plotting", "explorer", "parallel", "experiments", "cli")


def __getattr__(name: str) -> Any:
    """Lazy attributes: the submodules of :data:`_LAZY_MODULES`, and ``lo.explore`` (ipywidgets is
    needed only when it is called)."""
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "explore":
        return importlib.import_module(f"{__name__}.explorer").explore
    raise AttributeError(f"module 'linoverfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES) | {"explore"})


__all__ = [
    "checkpoints",
    "networks",
    "optimizers",
    "sensitivity",
    "tasks",
    "training",
    "theory",
    "plotting",
    "DeepLinear",
    "end_to_end",
    "Task",
    "Dataset",
    "pretrain",
    "finetune",
    "log_checkpoints",
    "linear_checkpoints",
    "PretrainResult",
    "FinetuneResult",
    "SensitivityResult",
    "DivergenceError",
    "DivergenceWarning",
    "ResultFileError",
    "MemoryBudgetError",
]

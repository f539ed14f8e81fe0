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

from . import plotting, theory

__version__ = "0.1.0"


def __getattr__(name):
    """Lazy attributes: ``lo.explore`` (and its module ``lo.explorer``) need the optional ipywidgets only when called."""
    if name in ("explore", "explorer"):
        import importlib

        explorer = importlib.import_module(f"{__name__}.explorer")
        return explorer.explore if name == "explore" else explorer
    raise AttributeError(f"module 'linoverfit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"explore", "explorer"})

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
]

"""Deprecated module: its contents moved in 0.2.0 (see :mod:`linoverfit.deprecation`).

``pretrain`` is in :mod:`linoverfit.pretraining`, ``finetune`` in :mod:`linoverfit.finetuning`, the
result classes and errors in :mod:`linoverfit.result_types`; all are at the top level (``lo.pretrain``, ...).
Each old name still works until the removal release, with one ``DeprecationWarning`` naming its replacement.
"""

from . import deprecation as _deprecation

for _old, _new in {
    "pretrain": "linoverfit.pretraining.pretrain",
    "finetune": "linoverfit.finetuning.finetune",
    "DIVERGENCE_FACTOR": "linoverfit.pretraining.DIVERGENCE_FACTOR",
    "PretrainResult": "linoverfit.result_types.PretrainResult",
    "FinetuneResult": "linoverfit.result_types.FinetuneResult",
    "DivergenceError": "linoverfit.result_types.DivergenceError",
    "DivergenceWarning": "linoverfit.result_types.DivergenceWarning",
}.items():
    _deprecation.deprecate(f"{__name__}.{_old}", _new)


def __getattr__(name: str):
    return _deprecation.lookup(__name__, name)

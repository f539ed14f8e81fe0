"""Every error and warning the sweeps raise, in one namespace (``lo.errors``).

* :class:`DivergenceError`: pre-training diverged (``.step``, ``.seed``, ``.checkpoint``).
* :class:`DivergenceWarning`: some fine-tuning runs diverged (marked in ``result.diverged``).
* :class:`NonFiniteWarning`: some Monte Carlo sensitivity estimates overflowed.
* :class:`MemoryBudgetError`: a sweep would not fit in the available memory (names the sizes and the fix).
* :class:`ResultFileError`: a result file is missing, unreadable or inconsistent (names the file).

The theory's warnings live with it: :class:`linoverfit.theory.PastEdgeWarning` (a learning rate
past GD's stability edge) and :class:`linoverfit.theory.UnderivedWarning` (an approximation
without a derivation, quoting its measured error).
"""

from .memory import MemoryBudgetError
from .result_types import DivergenceError, DivergenceWarning, NonFiniteWarning
from .results import ResultFileError

__all__ = ["DivergenceError", "DivergenceWarning", "NonFiniteWarning", "MemoryBudgetError", "ResultFileError"]

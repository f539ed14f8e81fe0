#!/usr/bin/env python
"""F9: regenerate ``paper_figs/F9_schedule_optimizer.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f9_schedule_optimizer.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F9_schedule_optimizer.py                  # full size, into paper_figs/
    python experiments/F9_schedule_optimizer.py --quick --out tmp
    python experiments/F9_schedule_optimizer.py --show-config    # the parameters
    python experiments/F9_schedule_optimizer.py --set sam_rho=0.02   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f9_schedule_optimizer.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f9_schedule_optimizer

if __name__ == "__main__":
    f9_schedule_optimizer.main()

#!/usr/bin/env python
"""F1: regenerate ``paper_figs/F1_incremental.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f1_incremental.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F1_incremental.py                  # full size, into paper_figs/
    python experiments/F1_incremental.py --quick --out tmp
    python experiments/F1_incremental.py --show-config    # the parameters
    python experiments/F1_incremental.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f1_incremental.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f1_incremental

if __name__ == "__main__":
    f1_incremental.main()

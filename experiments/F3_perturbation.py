#!/usr/bin/env python
"""F3: regenerate ``paper_figs/F3_perturbation.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f3_perturbation.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F3_perturbation.py                  # full size, into paper_figs/
    python experiments/F3_perturbation.py --quick --out tmp
    python experiments/F3_perturbation.py --show-config    # the parameters
    python experiments/F3_perturbation.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f3_perturbation.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f3_perturbation

if __name__ == "__main__":
    f3_perturbation.main()

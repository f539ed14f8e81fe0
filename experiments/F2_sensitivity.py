#!/usr/bin/env python
"""F2: regenerate ``paper_figs/F2_sensitivity.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f2_sensitivity.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F2_sensitivity.py                  # full size, into paper_figs/
    python experiments/F2_sensitivity.py --quick --out tmp
    python experiments/F2_sensitivity.py --show-config    # the parameters
    python experiments/F2_sensitivity.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f2_sensitivity.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f2_sensitivity

if __name__ == "__main__":
    f2_sensitivity.main()

#!/usr/bin/env python
"""F12: regenerate ``paper_figs/F12_nonlinear.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f12_nonlinear.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F12_nonlinear.py                  # full size, into paper_figs/
    python experiments/F12_nonlinear.py --quick --out tmp
    python experiments/F12_nonlinear.py --show-config    # the parameters
    python experiments/F12_nonlinear.py --set samples=256   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f12_nonlinear.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f12_nonlinear

if __name__ == "__main__":
    f12_nonlinear.main()

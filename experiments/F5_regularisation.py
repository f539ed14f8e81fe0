#!/usr/bin/env python
"""F5: regenerate ``paper_figs/F5_regularisation.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f5_regularisation.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F5_regularisation.py                  # full size, into paper_figs/
    python experiments/F5_regularisation.py --quick --out tmp
    python experiments/F5_regularisation.py --show-config    # the parameters
    python experiments/F5_regularisation.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f5_regularisation.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f5_regularisation

if __name__ == "__main__":
    f5_regularisation.main()

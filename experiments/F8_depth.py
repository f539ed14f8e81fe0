#!/usr/bin/env python
"""F8: regenerate ``paper_figs/F8_depth.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f8_depth.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F8_depth.py                  # full size, into paper_figs/
    python experiments/F8_depth.py --quick --out tmp
    python experiments/F8_depth.py --show-config    # the parameters
    python experiments/F8_depth.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f8_depth.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f8_depth

if __name__ == "__main__":
    f8_depth.main()

#!/usr/bin/env python
"""F6: regenerate ``paper_figs/F6_tuned_lr.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f6_tuned_lr.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F6_tuned_lr.py                  # full size, into paper_figs/
    python experiments/F6_tuned_lr.py --quick --out tmp
    python experiments/F6_tuned_lr.py --show-config    # the parameters
    python experiments/F6_tuned_lr.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f6_tuned_lr.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f6_tuned_lr

if __name__ == "__main__":
    f6_tuned_lr.main()

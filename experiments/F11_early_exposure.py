#!/usr/bin/env python
"""F11: regenerate ``paper_figs/F11_early_exposure.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f11_early_exposure.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F11_early_exposure.py                  # full size, into paper_figs/
    python experiments/F11_early_exposure.py --quick --out tmp
    python experiments/F11_early_exposure.py --show-config    # the parameters
    python experiments/F11_early_exposure.py --set ft_steps=200   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f11_early_exposure.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f11_early_exposure

if __name__ == "__main__":
    f11_early_exposure.main()

#!/usr/bin/env python
"""F10: regenerate ``paper_figs/F10_noise_data.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f10_noise_data.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F10_noise_data.py                  # full size, into paper_figs/
    python experiments/F10_noise_data.py --quick --out tmp
    python experiments/F10_noise_data.py --show-config    # the parameters
    python experiments/F10_noise_data.py --set seeds=8   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f10_noise_data.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f10_noise_data

if __name__ == "__main__":
    f10_noise_data.main()

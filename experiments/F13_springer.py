#!/usr/bin/env python
"""F13: regenerate ``paper_figs/F13_springer.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f13_springer.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F13_springer.py                    # full size, into paper_figs/
    python experiments/F13_springer.py --quick --out tmp
    python experiments/F13_springer.py --show-config      # the parameters
    python experiments/F13_springer.py --set gaps="(1.0, 3.0)"   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f13_springer.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f13_springer

if __name__ == "__main__":
    f13_springer.main()

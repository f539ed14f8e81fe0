#!/usr/bin/env python
"""F4: regenerate ``paper_figs/F4_finetuning.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f4_finetuning.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F4_finetuning.py                  # full size, into paper_figs/
    python experiments/F4_finetuning.py --quick --out tmp
    python experiments/F4_finetuning.py --show-config    # the parameters
    python experiments/F4_finetuning.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f4_finetuning.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f4_finetuning

if __name__ == "__main__":
    f4_finetuning.main()

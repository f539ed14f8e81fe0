#!/usr/bin/env python
"""F7: regenerate ``paper_figs/F7_phase_diagram.png`` and ``.npz`` (the plotted data), and print its headline numbers.

The figure code and its parameters (the ``CONFIG`` block at the top) live in
``linoverfit/experiments/f7_phase_diagram.py``, so that ``linoverfit figures`` can run it from any
directory after ``pip install .``. This script runs that module::

    python experiments/F7_phase_diagram.py                  # full size, into paper_figs/
    python experiments/F7_phase_diagram.py --quick --out tmp
    python experiments/F7_phase_diagram.py --show-config    # the parameters
    python experiments/F7_phase_diagram.py --set width=24   # change one number (any CONFIG key)

To make your own variant, copy ``linoverfit/experiments/f7_phase_diagram.py`` (it only uses the public API)
and edit its ``CONFIG`` block.
"""

from linoverfit.experiments import f7_phase_diagram

if __name__ == "__main__":
    f7_phase_diagram.main()

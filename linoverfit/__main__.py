"""``python -m linoverfit``: the ``linoverfit`` command line (see :mod:`linoverfit.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

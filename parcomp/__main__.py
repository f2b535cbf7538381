"""``python -m parcomp``: the same as the ``parcomp`` command."""

import sys

from parcomp.front.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m webiml`` is the ``webiml`` command."""

import sys

from webiml.cli import main

if __name__ == "__main__":
    sys.exit(main())

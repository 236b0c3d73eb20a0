"""``python -m threadstore``: the ``threadstore`` command."""

import sys

from threadstore.cli import main

if __name__ == "__main__":
    sys.exit(main())

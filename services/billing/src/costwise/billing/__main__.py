"""``python -m costwise.billing``: run the billing service (or ``report`` / ``budget``, see ``--help``)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())

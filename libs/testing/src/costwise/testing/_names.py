from __future__ import annotations

import itertools
import os

__all__ = ["unique_token"]

_counter = itertools.count()


def unique_token(prefix: str = "t") -> str:
    """A subject-token-safe name unique within this machine's test run (pid + counter)."""
    return f"{prefix}{os.getpid()}x{next(_counter)}"

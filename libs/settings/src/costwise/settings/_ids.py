from __future__ import annotations

import os
import socket

__all__ = ["process_id"]


def process_id() -> str:
    """``<host>-<pid>``: names this process (a worker's id in completions and usage events) unless configured."""
    return f"{socket.gethostname()}-{os.getpid()}"

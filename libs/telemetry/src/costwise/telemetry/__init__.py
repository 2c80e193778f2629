"""OpenTelemetry setup and W3C trace-context helpers; nothing here is module-global state."""

from ._attributes import record_result
from ._propagation import extract, inject
from ._setup import setup

__all__ = ["extract", "inject", "record_result", "setup"]

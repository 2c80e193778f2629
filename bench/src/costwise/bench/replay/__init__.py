"""``costwise-bench replay`` (issue 13): a workload file driven through the running stack, like any client, and
one JSON object of what it cost (billing's ledger), what it served and how well (the workload's recorded outcomes).

Starts ``costwise up`` on the catalog (``deploy/catalog.replay.toml`` by default) unless ``--nats`` names a
running stack, plus one recording server on the port the catalog's loopback backends name; publishes each line at
its ``arrival`` (``--speed``) or on a seeded Poisson clock (``--rate``); waits for every result; exits non-zero when a
request got no result (``lost``) or two (``duplicates``). The parts a test or another tool reuses are here; the
rest is imported when a replay runs.
"""

from ._cli import add_parser, run
from ._lines import Line, ReplayLine, load, schedule
from ._stack import ReplayError, Stack, loopback_port, wait_ready

__all__ = [
    "Line",
    "ReplayError",
    "ReplayLine",
    "Stack",
    "add_parser",
    "load",
    "loopback_port",
    "run",
    "schedule",
    "wait_ready",
]

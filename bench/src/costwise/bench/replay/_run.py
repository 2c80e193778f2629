"""One replay from start to end: the workload read, the stack and recording server up, the lines driven through
the queue, the ledger read once billing settled, everything accounted in one JSON object."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as Nats

from costwise.catalog import Catalog, CatalogError, load_catalog
from costwise.messaging import connect

from ._account import Judge, cascade_checks, latency
from ._chaos import Chaos
from ._drive import Observed, drive, duplicates, error_codes, error_samples, lost, request_id
from ._ledger import read_costs
from ._lines import BadLine, Workload, load, schedule
from ._settings import effective_router_settings
from ._stack import ReplayError, Stack, durables, ledger_url, loopback_port, recordings, unready, wait_ready

__all__ = ["Options", "replay"]


@dataclass(frozen=True)
class Options:
    """``costwise-bench replay``'s options (see ``add_parser``)."""

    workload: Path
    catalog: Path
    rate: float | None = None
    speed: float | None = None
    limit: int | None = None
    chaos: bool = False
    nats: str | None = None
    timeout: float = 600.0
    data_dir: Path | None = None
    ledger: str | None = None
    seed: int = 0
    startup_timeout: float = 900.0
    settle_timeout: float = 120.0
    progress: bool = True
    tokens_per_s: float | None = None
    """Pace the recording server's answers (per answer stream); ``None``: answer at once."""
    chaos_interval_s: float = 15.0
    env: dict[str, str] | None = None
    """Settings for the started stack on top of this process's environment."""


def _say(text: str) -> None:
    print(f"costwise-bench replay: {text}", file=sys.stderr, flush=True)


def _check(options: Options) -> None:
    if any(x is not None and x <= 0 for x in (options.rate, options.speed, options.tokens_per_s)):
        raise ReplayError("--rate, --speed and --tokens-per-s must be > 0")
    if options.chaos_interval_s <= 0:
        raise ReplayError("--chaos-interval must be > 0")
    if options.chaos and options.nats:
        raise ReplayError("--chaos kills the workers of the replay's own stack: not with --nats")
    if not options.workload.is_file():
        raise ReplayError(f"no workload file at {options.workload}")


@dataclass
class _Session:
    """What one replay set up: its inputs, the stack it drives and what it learned about it."""

    options: Options
    catalog: Catalog
    workload: Workload
    data_dir: Path
    ledger: str
    own: Stack | None = None
    served: str | None = None
    ready_s: float | None = None


def _prepare(options: Options) -> _Session:
    _check(options)
    try:
        catalog = load_catalog(options.catalog)
    except CatalogError as exc:
        raise ReplayError(str(exc)) from None
    workload = load(options.workload, limit=options.limit)
    for bad in workload.bad:
        _say(f"{options.workload}:{bad.number}: skipped, {bad.reason}")
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="costwise-replay-"))
    return _Session(options, catalog, workload, data_dir, ledger_url(options.ledger, data_dir))


async def replay(options: Options) -> dict[str, Any]:
    """Run the replay; raises :class:`ReplayError` with one line when it cannot."""
    session = _prepare(options)
    async with contextlib.AsyncExitStack() as stack:
        nc = await _open(session, stack)
        observed, chaos = await _drive(nc, session.workload, options, session.own)
        for bad in observed.refused:
            _say(f"{options.workload}:{bad.number}: not sent, {bad.reason}")
        costs = await read_costs(session.ledger, observed, timeout=options.settle_timeout)
    out = _summary(session, observed) | costs.summary()
    if chaos is not None:
        out["chaos"] = chaos.summary()
    out["exit_code"] = 1 if out["lost"] or out["duplicates"] else 0
    return out


async def _open(session: _Session, stack: contextlib.AsyncExitStack) -> Nats:
    """The recording server first (the pools' engine), then the stack (or ``--nats``'s), connected and serving."""
    options, catalog = session.options, session.catalog
    port = loopback_port(catalog)
    served = recordings(options.workload, catalog, port, tokens_per_s=options.tokens_per_s)
    session.served = await stack.enter_async_context(served)
    if port is not None and session.served is None:
        _say(f"something already answers on 127.0.0.1:{port}: it stands in for the recording server")
    if options.nats:
        nc = await connect(options.nats, name="costwise-bench-replay", patient=False)
        stack.push_async_callback(nc.drain)
        for name in await unready(nc.jetstream(), durables(catalog)):
            _say(f"warning: consumer {name} has no pull waiting (its service or worker is not running?)")
        return nc
    own = session.own = Stack.start(options.catalog, session.data_dir, session.ledger, env=options.env)
    stack.push_async_callback(asyncio.to_thread, own.stop)
    _say(f"starting the stack (costwise up; log {own.log})")
    await own.wait_listening()
    nc = await connect(own.url, name="costwise-bench-replay")
    stack.push_async_callback(nc.drain)
    session.ready_s = await wait_ready(nc.jetstream(), catalog, own, options.startup_timeout)
    return nc


async def _drive(nc: Nats, workload: Workload, options: Options, own: Stack | None) -> tuple[Observed, Chaos | None]:
    lines = workload.lines
    run = uuid.uuid4().hex[:8]
    ids = [request_id(workload.digest, run, item.number) for item in lines]
    offsets = schedule(lines, speed=options.speed, rate=options.rate, seed=options.seed)
    chaos = Chaos(own, options.seed, options.chaos_interval_s) if options.chaos and own is not None else None
    stop = asyncio.Event()
    monkey = asyncio.create_task(chaos.run(stop)) if chaos is not None else None
    try:
        observed = await drive(nc, lines, offsets, ids, timeout=options.timeout, progress=options.progress)
    finally:
        stop.set()
        if monkey is not None:
            await monkey
    return observed, chaos


def _bad(items: list[BadLine]) -> list[dict[str, Any]]:
    return [{"line": b.number, "reason": b.reason[:500]} for b in sorted(items, key=lambda b: b.number)]


def _summary(session: _Session, observed: Observed) -> dict[str, Any]:
    options, workload, own = session.options, session.workload, session.own
    judge = Judge(session.catalog, observed, {item.number: item for item in workload.lines}, workload.digest)
    return {
        "benchmark": "replay",
        "workload": str(options.workload),
        "catalog": str(options.catalog),
        "requests": len(observed.sent),
        "completed": len(observed.results),
        "errors": error_codes(observed),
        "error_samples": error_samples(observed),
        "lost": lost(observed),
        "duplicates": duplicates(observed),
        "skipped_lines": _bad(workload.bad + observed.refused),
        **judge.cache(),
        **judge.routing(),
        **judge.quality(),
        **judge.strong_calls_spent(),
        **judge.by_source(),
        **judge.by_router_split(),
        "latency": latency(observed),
        "cascade_checks": cascade_checks(observed),
        "timing": {
            "rate": options.rate,
            "speed": options.speed,
            "seed": options.seed,
            "publish_lag_max_s": round(max(observed.publish_lag_s, default=0.0), 3),
        },
        "stack": {
            "own": own is not None,
            "nats": options.nats or (own.url if own else None),
            "data_dir": str(session.data_dir),
            "ready_s": None if session.ready_s is None else round(session.ready_s, 1),
            "recording_server": session.served,
            # the operating point: every COSTWISE_ROUTER_* the started router saw (given or inherited); {} = shipped
            "router_settings": effective_router_settings(own.env) if own is not None else None,
        },
    }

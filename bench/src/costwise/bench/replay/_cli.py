"""The ``replay`` and ``recording-server`` subcommands of ``costwise-bench``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Options

__all__ = ["add_parser", "run"]

DEFAULT_CATALOG = Path("deploy/catalog.replay.toml")


def add_parser(sub: Any) -> None:
    """``costwise-bench replay`` and ``recording-server`` (``sub``: the CLI's subparsers)."""
    parser = sub.add_parser(
        "replay",
        help="drive a workload file through the stack (issue 13): cost vs baseline, quality, lost, duplicates",
        description="Replay a workload file through the queue; print one JSON object; exit 1 if any request was "
        "lost or answered twice.",
    )
    parser.add_argument("--workload", type=Path, required=True, default=argparse.SUPPRESS, help="JSON lines")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="the catalog the stack runs (%(default)s)"
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--rate", type=float, help="re-time the lines to a Poisson process at this many req/s")
    timing.add_argument("--speed", type=float, help="play the lines' own arrival times this many times faster")
    parser.add_argument("--limit", type=int, help="replay only the first N good lines")
    parser.add_argument("--chaos", action="store_true", help="SIGTERM/SIGKILL pool workers at random meanwhile")
    parser.add_argument(
        "--chaos-interval", type=float, default=15.0, help="mean seconds between two kills (%(default)s)"
    )
    parser.add_argument("--tokens-per-s", type=float, help="pace the recording server's answers (default: at once)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object (the default output)")
    parser.add_argument("--nats", help="drive this running stack instead of starting one")
    parser.add_argument(
        "--router-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run the started stack's router with this setting (a field of RouterSettings, e.g. route_quality=0.88; "
        "repeatable; recorded in the JSON's stack.router_settings; default: the shipped settings)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for results after the last publish (%(default)s)"
    )
    parser.add_argument("--data-dir", type=Path, help="the started stack's data dir (default: a new temp dir)")
    parser.add_argument(
        "--ledger",
        help="billing's database URL (default: $COSTWISE_BILLING_DATABASE_URL, else the data dir's SQLite ledger)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds --rate's clock and --chaos's choices (%(default)s)")
    parser.add_argument(
        "--startup-timeout", type=float, default=900.0, help="seconds for the stack to serve (%(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--plot", type=Path, help="also write the savings waterfall here (SVG)")
    parser.set_defaults(module="replay", call=lambda run, a: run(a))
    server = sub.add_parser(
        "recording-server",
        help="an OpenAI-compatible server answering from a workload's recorded responses (until Ctrl-C)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server.add_argument("--workload", type=Path, required=True, default=argparse.SUPPRESS)
    server.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="maps a request's model to its tier")
    server.add_argument("--port", type=int, required=True, default=argparse.SUPPRESS)
    server.add_argument("--tokens-per-s", type=float, help="pace answers like an engine (default: at once)")
    server.set_defaults(direct=_recording_server)


def _recording_server(args: argparse.Namespace) -> int:
    from costwise.bench.recording import run as serve

    return serve(args.workload, args.catalog, args.port, args.tokens_per_s)


def options_from(args: argparse.Namespace) -> Options:
    from ._run import Options  # imported when a replay runs: the other benchmarks' CLI stays light
    from ._settings import router_env

    if args.limit is not None and args.limit < 1:
        raise SystemExit("costwise-bench replay: --limit must be ≥ 1")
    if args.router_setting and args.nats:
        raise SystemExit("costwise-bench replay: --router-setting sets the started stack's router: not with --nats")
    try:
        env = router_env(args.router_setting)
    except ValueError as exc:
        raise SystemExit(f"costwise-bench replay: {exc}") from None
    return Options(
        workload=args.workload,
        catalog=args.catalog,
        rate=args.rate,
        speed=args.speed,
        limit=args.limit,
        chaos=args.chaos,
        nats=args.nats,
        timeout=args.timeout,
        data_dir=args.data_dir,
        ledger=args.ledger,
        seed=args.seed,
        startup_timeout=args.startup_timeout,
        progress=not args.no_progress,
        tokens_per_s=args.tokens_per_s,
        chaos_interval_s=args.chaos_interval,
        env=env or None,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from ._run import replay
    from ._stack import ReplayError

    try:
        out = await replay(options_from(args))
    except (ReplayError, OSError) as exc:  # a stack that will not start, a file that cannot be read: one line
        raise SystemExit(f"costwise-bench replay: {exc}") from None
    if args.plot is not None:
        from ._plot import write_waterfall

        write_waterfall(out, args.plot)
    return out

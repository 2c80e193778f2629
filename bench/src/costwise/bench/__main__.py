"""``costwise-bench <benchmark> [options]``: prints one JSON object per run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="costwise-bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    batching = sub.add_parser("batching", help="tokens/s at several in-flight levels, queue vs direct engine")
    batching.add_argument("--model", default="builtin:tiny-llama")
    batching.add_argument("--levels", default="1,4,16")
    batching.add_argument("--requests-per-slot", type=int, default=4)
    batching.add_argument("--max-tokens", type=int, default=128)
    overhead = sub.add_parser("overhead", help="latency and CPU costwise adds outside the engine; pass-through req/s")
    overhead.add_argument("--model", default="builtin:tiny-llama")
    overhead.add_argument("--requests", type=int, default=200, help="requests at one in flight (0: skip)")
    overhead.add_argument("--passthrough", type=int, default=5000, help="requests per pass-through round (0: skip)")
    overhead.add_argument("--rounds", type=int, default=3, help="pass-through rounds; the median is reported")
    overhead.add_argument("--routers", type=int, default=1, help="router processes in the pass-through run")
    preemption = sub.add_parser("preemption", help="requeue latency and regenerated tokens after SIGTERM/SIGKILL")
    preemption.add_argument("--model", default="builtin:tiny-llama")
    preemption.add_argument("--trials", type=int, default=5)
    preemption.add_argument("--ack-wait", type=float, default=5.0)
    preemption.add_argument("--after-tokens", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.bench == "batching":
        from .batching import run

        levels = [int(x) for x in args.levels.split(",")]
        out = asyncio.run(run(args.model, levels, args.requests_per_slot, args.max_tokens))
    elif args.bench == "preemption":
        from .preemption import run as run_preemption

        out = asyncio.run(run_preemption(args.model, args.trials, args.ack_wait, args.after_tokens))
    else:
        from .overhead import run as run_overhead

        out = asyncio.run(run_overhead(args.model, args.requests, args.passthrough, args.rounds, args.routers))
    out["machine"] = _machine()
    out["command"] = "costwise-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

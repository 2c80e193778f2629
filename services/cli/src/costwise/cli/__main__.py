"""``costwise publish|result|watch|invalidate|cache|report|budget|up`` (also ``python -m costwise.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys

import msgspec

from costwise.client import Client

DEFAULT_URL = "nats://127.0.0.1:4222"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="costwise", description=__doc__)
    parser.add_argument("--nats", default=os.environ.get("COSTWISE_NATS_URL", DEFAULT_URL), help="NATS URL")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="publish one request; prints its request id (and its result with --wait)")
    pub.add_argument("prompt")
    pub.add_argument("--tenant", default="demo")
    pub.add_argument("--model", default="auto")
    pub.add_argument("--max-tokens", type=int, default=64)
    pub.add_argument("--request-id")
    pub.add_argument("--callback-url")
    pub.add_argument("--wait", action="store_true", help="wait for the result and print it as JSON")
    pub.add_argument("--stream", action="store_true", help="print the answer's tokens as they are generated")
    pub.add_argument("--timeout", type=float, default=120)
    res = sub.add_parser("result", help="wait for one request's result and print it as JSON")
    res.add_argument("request_id")
    res.add_argument("--tenant", default="demo")
    res.add_argument("--timeout", type=float, default=120)
    watch = sub.add_parser("watch", help="print a tenant's results as they arrive (one JSON per line)")
    watch.add_argument("--tenant", default="demo")
    watch.add_argument("--all", action="store_true", help="start with the stored results")
    inv = sub.add_parser("invalidate", help="make the cache forget one answer (--request-id) or all of a tenant's")
    inv.add_argument("--tenant", required=True)
    inv.add_argument("--request-id", help="the request whose cached answer to forget (default: every answer)")
    inv.add_argument("--reason", default="")
    cache = sub.add_parser("cache", help="tell the cache about its answers (cache wrong --help)")
    wrong = cache.add_subparsers(dest="cache_command", required=True).add_parser(
        "wrong", help="report a cache hit's answer wrong: the cache forgets it and tightens the tenant's threshold"
    )
    wrong.add_argument("--tenant", required=True)
    wrong.add_argument("--request-id", required=True, help="the request the wrong cached answer was served to")
    wrong.add_argument("--reason", default="")
    # Billing owns its ledger; these run its CLI (services never import each other).
    sub.add_parser(
        "report", help="cost per query, savings per lever (python -m costwise.billing report --help)", add_help=False
    )
    sub.add_parser(
        "budget",
        help="set or show a tenant's or an API key's budget (python -m costwise.billing budget --help)",
        add_help=False,
    )
    sub.add_parser(
        "nats-config", help="print the nats.conf accounts section (costwise nats-config --help)", add_help=False
    )
    up = sub.add_parser("up", help="run the embedded stack (nats-server + every service) until Ctrl-C")
    up.add_argument("--data-dir", default=os.environ.get("COSTWISE_DATA_DIR", "var"))
    up.add_argument("--port", type=int, default=4222)
    up.add_argument("--model", default=os.environ.get("COSTWISE_WORKER_MODEL", "builtin:smollm2"))
    up.add_argument("--catalog", default=os.environ.get("COSTWISE_CATALOG"), help="catalog TOML for every service")
    up.add_argument("--gateway-port", type=int, default=8080)
    up.add_argument("--tracing-port", type=int, default=6006, help="tracing UI (Phoenix) port; 0 turns tracing off")
    return parser


def _print(struct: msgspec.Struct) -> None:
    sys.stdout.write(msgspec.json.encode(struct).decode() + "\n")
    sys.stdout.flush()


async def _stream(client: Client, args: argparse.Namespace) -> int:
    """``publish --stream``: the answer as it is generated on stdout, then a newline; a failure on stderr (exit 1)."""
    ask = {"tenant": args.tenant, "prompt": args.prompt, "model": args.model, "max_tokens": args.max_tokens}
    async for delta in client.stream(**ask, request_id=args.request_id, timeout=args.timeout):
        sys.stdout.write(delta.text)
        sys.stdout.flush()
        if delta.error is not None:
            print(f"\n{delta.error.code}: {delta.error.message}", file=sys.stderr)
            return 1
    print(flush=True)
    return 0


async def _client_command(args: argparse.Namespace) -> int:
    async with await Client.connect(args.nats, patient=False) as client:
        if args.command == "cache":
            await client.report_wrong_hit(args.tenant, args.request_id, reason=args.reason)
            print(f"wrong cache hit {args.request_id} of {args.tenant} reported", flush=True)
            return 0
        if args.command == "publish" and args.stream:
            return await _stream(client, args)
        if args.command == "publish":
            rid = await client.publish(
                tenant=args.tenant,
                prompt=args.prompt,
                model=args.model,
                max_tokens=args.max_tokens,
                request_id=args.request_id,
                callback_url=args.callback_url,
            )
            print(rid, flush=True)
            if args.wait:
                _print(await client.result(args.tenant, rid, timeout=args.timeout))
        elif args.command == "invalidate":
            await client.invalidate(args.tenant, args.request_id, reason=args.reason)
            print(f"cache invalidation for {args.tenant} stored", flush=True)
        elif args.command == "result":
            _print(await client.result(args.tenant, args.request_id, timeout=args.timeout))
        else:
            async for result in client.results(args.tenant, since_start=args.all):
                _print(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nats-config"]:
        from ._nats_config import main as nats_config

        return nats_config(argv[1:])
    if argv[:1] in (["report"], ["budget"]):
        return subprocess.call([sys.executable, "-m", "costwise.billing", *argv])
    args = _parser().parse_args(argv)
    if args.command == "up":
        from ._up import run_stack

        return run_stack(args)
    try:
        return asyncio.run(_client_command(args))
    except (TimeoutError, ValueError, LookupError, OSError) as exc:
        print(f"costwise: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

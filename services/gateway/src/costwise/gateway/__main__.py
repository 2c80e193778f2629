"""``python -m costwise.gateway``: serve the HTTP API until SIGTERM/SIGINT.

``python -m costwise.gateway keys create --tenant T`` prints a new API key (once; only its hash is kept),
``keys revoke KEY_ID`` revokes one, ``openapi`` writes the committed OpenAPI document. Bad configuration
(settings, catalog) is one line on stderr and exit code 2, as for every service.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import msgspec

from costwise.messaging import connect, run, run_command
from costwise.telemetry import setup

from . import openapi
from .app import GatewayApp, build
from .settings import load_settings

NAME = "costwise-gateway"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m costwise.gateway")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (the default)")
    commands.add_parser("openapi", help="write services/gateway/openapi.json")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key for a tenant and print it (shown only once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--label", default="")
    revoke = keys.add_parser("revoke", help="revoke a key by its id (the 16 hex digits after 'cw-')")
    revoke.add_argument("key_id")
    return parser


async def _serve() -> GatewayApp:
    settings = load_settings()
    return await build(settings, tracer_provider=setup(NAME, otlp_endpoint=settings.otlp_endpoint))


async def _keys(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        try:
            settings = load_settings()
            nc = await connect(settings.nats_url, name=f"{NAME}-keys", patient=False)
            stack.push_async_callback(nc.close)
            gateway = await build(settings, nc=nc)
        except ValueError as exc:  # the same answer to bad configuration as ``run`` gives
            print(f"{NAME}: {exc}", file=sys.stderr)
            return 2
        stack.push_async_callback(gateway.close)
        return await _key_action(gateway, args)


async def _key_action(gateway: GatewayApp, args: argparse.Namespace) -> int:
    store = gateway.gateway.keys
    if args.action == "create":
        try:
            key = await store.create(args.tenant, label=args.label)
        except msgspec.ValidationError as exc:  # the tenant is no subject token
            print(f"invalid tenant: {exc}", file=sys.stderr)
            return 2
        print(
            f"key id: {key.key_id}\ntenant: {key.tenant}\nkey:    {key.secret}\n(store it now: it is not shown again)"
        )
        return 0
    found = await store.revoke(args.key_id)
    print("revoked" if found else f"no key {args.key_id!r}", file=sys.stdout if found else sys.stderr)
    return 0 if found else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (default: serve); the process's exit code."""
    args = _parser().parse_args(argv)
    if args.command == "openapi":
        print(f"wrote {openapi.write()}")
        return 0
    if args.command == "keys":
        return run_command(_keys(args), name=NAME)
    return run(_serve, name=NAME)


if __name__ == "__main__":
    sys.exit(main())

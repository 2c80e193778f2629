"""``python -m costwise.gateway``: serve the HTTP API until SIGTERM/SIGINT.

``python -m costwise.gateway keys create --tenant T`` prints a new API key (once; only its hash is kept),
``keys revoke KEY_ID`` revokes one, ``openapi`` writes the committed OpenAPI document.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from costwise.settings import load
from costwise.telemetry import setup

from . import openapi
from .app import GatewayApp, build
from .settings import GatewaySettings


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


async def _keys(gateway: GatewayApp, args: argparse.Namespace) -> int:
    store = gateway.gateway.keys
    try:
        if args.action == "create":
            key = await store.create(args.tenant, label=args.label)
            print(
                f"key id: {key.key_id}\ntenant: {key.tenant}\nkey:    {key.secret}\n(store it now: it is not shown again)"
            )
            return 0
        found = await store.revoke(args.key_id)
        print("revoked" if found else f"no key {args.key_id!r}", file=sys.stdout if found else sys.stderr)
        return 0 if found else 1
    except msgspec.ValidationError as exc:
        print(f"invalid tenant: {exc}", file=sys.stderr)
        return 2
    finally:
        await gateway.close()


async def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "openapi":
        print(f"wrote {openapi.write()}")
        return 0
    settings = load(GatewaySettings, "COSTWISE_GATEWAY_")
    tracer_provider = setup("costwise-gateway", otlp_endpoint=settings.otlp_endpoint)
    gateway = await build(settings, tracer_provider=tracer_provider)
    if args.command == "keys":
        return await _keys(gateway, args)
    await gateway.serve_until_signalled()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""``python -m costwise.webhooks``: run the service until SIGTERM/SIGINT.

``python -m costwise.webhooks replay --tenant T [--request-id R]``: re-send one request's result, or every
dead-lettered one of tenant T (the running service delivers them).

``python -m costwise.webhooks secret create|rotate|revoke|show --tenant T``: a tenant's signing secrets (create
and rotate print the new ``whsec_…`` once; ``rotate --previous-ttl S`` retires the old one after S seconds,
``revoke --previous`` at once; ``revoke`` removes them all).
"""

from __future__ import annotations

import argparse
import logging
import sys

from costwise.messaging import connect, ensure_streams, run, run_command
from costwise.settings import load
from costwise.telemetry import setup

from . import Webhooks, build
from .replay import replay
from .secret import secret_command
from .settings import WebhooksSettings


async def serve() -> Webhooks:
    """The service from the environment (bad settings, secrets or allow-list: ``run`` prints one line)."""
    settings = load(WebhooksSettings, "COSTWISE_WEBHOOKS_")
    # httpx logs every request URL at INFO; callback URLs may carry the receiver's tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return await build(settings, tracer_provider=setup("costwise-webhooks", otlp_endpoint=settings.otlp_endpoint))


async def replay_command(settings: WebhooksSettings, tenant: str, request_id: str | None) -> int:
    nc = await connect(settings.nats_url, name="webhooks-replay", patient=False)
    try:
        await ensure_streams(nc.jetstream())
        queued = await replay(nc.jetstream(), tenant, request_id, ack_wait_s=settings.ack_wait_s)
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        await nc.close()
    print(f"queued {len(queued)} result(s) of tenant {tenant} for delivery: {' '.join(queued)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m costwise.webhooks")
    commands = parser.add_subparsers(dest="command")
    again = commands.add_parser("replay", help="re-send a request's result or all dead-lettered ones of a tenant")
    again.add_argument("--tenant", required=True)
    again.add_argument("--request-id")
    secret = commands.add_parser("secret", help="create, rotate or revoke a tenant's webhook signing secrets")
    secret.add_argument("action", choices=["create", "rotate", "revoke", "show"])
    secret.add_argument("--tenant", required=True)
    secret.add_argument("--previous", action="store_true", help="revoke: only the secret(s) a rotation replaced")
    secret.add_argument("--previous-ttl", type=float, help="rotate: the replaced secret signs this many seconds more")
    args = parser.parse_args(argv)
    if args.command == "secret":
        settings = load(WebhooksSettings, "COSTWISE_WEBHOOKS_")
        return run_command(
            secret_command(
                settings, args.action, args.tenant, previous=args.previous, previous_ttl_s=args.previous_ttl
            ),
            name="costwise-webhooks",
        )
    if args.command == "replay":
        settings = load(WebhooksSettings, "COSTWISE_WEBHOOKS_")
        return run_command(replay_command(settings, args.tenant, args.request_id), name="costwise-webhooks")
    return run(serve, name="costwise-webhooks")


if __name__ == "__main__":
    sys.exit(main())

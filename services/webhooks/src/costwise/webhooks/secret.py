"""``python -m costwise.webhooks secret create|rotate|revoke --tenant T``: a tenant's signing secrets, kept in the
``WEBHOOK_SECRETS`` bucket (read by the running service within ``secrets_cache_s``; no restart)."""

from __future__ import annotations

import sys
from typing import Literal

from costwise.callbacks import SecretStore
from costwise.contracts.subjects import WEBHOOK_SECRETS
from costwise.messaging import connect, ensure_key_value

from .settings import WebhooksSettings

__all__ = ["secret_command"]

Action = Literal["create", "rotate", "revoke", "show"]


async def secret_command(
    settings: WebhooksSettings,
    action: Action,
    tenant: str,
    *,
    previous: bool = False,
    previous_ttl_s: float | None = None,
) -> int:
    """Run one secret command; prints a new secret once (stdout) and nothing secret otherwise. Exit status."""
    nc = await connect(settings.nats_url, name="webhooks-secret", patient=False)
    try:
        js = nc.jetstream()
        await ensure_key_value(js, WEBHOOK_SECRETS)
        store = SecretStore(await js.key_value(WEBHOOK_SECRETS.bucket))
        if action == "create":
            print(await store.create(tenant))
            print(f"created the webhook secret of tenant {tenant}: it is shown only now", file=sys.stderr)
        elif action == "rotate":
            print(await store.rotate(tenant, previous_ttl_s=previous_ttl_s))
            until = f"for {previous_ttl_s:g} s" if previous_ttl_s is not None else "until `revoke --previous`"
            print(f"rotated: the previous secret of tenant {tenant} keeps signing {until}", file=sys.stderr)
        elif action == "revoke":
            removed = await store.revoke(tenant, previous=previous)
            what = "previous secret(s)" if previous else "secret(s)"
            print(f"revoked {removed} {what} of tenant {tenant}")
        else:
            record = await store.get(tenant)
            if record is None:
                print(f"tenant {tenant} has no entry in the secrets bucket (the service's env secrets apply)")
            else:
                for s in record.secrets:
                    expiry = "" if s.expires_ms is None else f", expires_ms={s.expires_ms}"
                    print(f"created_ms={s.created_ms}{expiry}")
    except ValueError as exc:  # an invalid tenant, nothing to rotate, a secret already there
        print(exc, file=sys.stderr)
        return 1
    finally:
        await nc.close()
    return 0

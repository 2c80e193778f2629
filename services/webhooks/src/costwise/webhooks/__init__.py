"""The webhooks service: signed (Standard Webhooks) POSTs of results to their callback URLs, retried
with backoff through JetStream redelivery, in completion order per tenant, behind an SSRF guard."""

from .app import Webhooks, build
from .guard import CallbackRefused, Guard, system_resolver
from .replay import replay
from .secret import secret_command
from .settings import WebhooksSettings
from .signing import Signer, webhook_id

__all__ = [
    "CallbackRefused",
    "Guard",
    "Signer",
    "Webhooks",
    "WebhooksSettings",
    "build",
    "replay",
    "secret_command",
    "system_resolver",
    "webhook_id",
]

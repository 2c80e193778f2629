"""Callback URLs and their signing secrets, shared by the gateway (checks at submission) and the webhooks
service (checks again and signs at delivery): the SSRF policy and the ``WEBHOOK_SECRETS`` bucket."""

from .guard import CallbackRefused, Guard, Resolver, Target, system_resolver
from .secrets import SecretStore, TenantSecrets, WebhookSecret, decode_secret, new_secret

__all__ = [
    "CallbackRefused",
    "Guard",
    "Resolver",
    "SecretStore",
    "Target",
    "TenantSecrets",
    "WebhookSecret",
    "decode_secret",
    "new_secret",
    "system_resolver",
]

"""Composition root of the webhooks service: the only place it connects to anything."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable

import httpx
from nats.aio.client import Client
from opentelemetry.trace import TracerProvider

from costwise.callbacks import SecretStore
from costwise.contracts import Clock
from costwise.contracts.subjects import WEBHOOK_SECRETS, WEBHOOKS_RESULTS
from costwise.messaging import own_connection, provision

from ._service import SERVICE, Webhooks
from .delivery import Delivery
from .guard import Guard, Resolver, system_resolver
from .sender import make_client
from .settings import WebhooksSettings, env_secrets, load_secrets
from .signing import Signer

__all__ = ["SERVICE", "Webhooks", "build"]


async def build(
    settings: WebhooksSettings,
    *,
    nc: Client | None = None,
    resolver: Resolver = system_resolver,
    http: httpx.AsyncClient | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
    rng: Callable[[], float] = random.random,
) -> Webhooks:
    """Load the secrets and the allow-list (ValueError when bad, before connecting anywhere), provision the
    service's streams and consumer, copy env secrets into the secrets bucket for tenants with no entry there,
    and wire it (call ``start()``). An injected ``nc`` or ``http`` client
    belongs to the caller: ``stop()`` never closes it."""
    keys, guard = load_secrets(settings), Guard(settings.allow, resolver)
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=SERVICE)
        await provision(nc.jetstream(), (WEBHOOKS_RESULTS,))
        store = SecretStore(await nc.jetstream().key_value(WEBHOOK_SECRETS.bucket), clock=clock)
        signer = Signer(keys, store, cache_s=settings.secrets_cache_s)
        await signer.seed(env_secrets(settings))
        if http is None:
            http = make_client(settings)
            stack.push_async_callback(http.aclose)
        owned = stack.pop_all()
    tracer = tracer_provider.get_tracer("costwise.webhooks") if tracer_provider else None
    delivery = Delivery(
        settings, nc.jetstream(), signer=signer, guard=guard, client=http, tracer=tracer, clock=clock, rng=rng
    )
    return Webhooks(settings, nc, delivery, tracer=tracer, owned=owned)

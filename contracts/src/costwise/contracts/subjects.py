"""Every NATS subject, stream and consumer name costwise uses, defined once.

Subjects carry the contract's major version (``costwise.v1.…``) so a v2 can run beside v1.
Tenant and pool names become subject tokens, which is why their patterns in ``messages`` are strict.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from ._specs import ConsumerSpec, KeyValueSpec, StreamSpec

__all__ = [
    "ADVISORIES",
    "ALL_KEY_VALUES",
    "ALL_STREAMS",
    "BILLING_RESULTS",
    "BILLING_USAGE",
    "BUDGETS",
    "CACHE_CONTROL",
    "CACHE_EXACT",
    "CACHE_FEEDBACK",
    "CACHE_REQUESTS",
    "CACHE_RESULTS",
    "COMPLETIONS",
    "CONTROL",
    "DEAD_LETTERS",
    "GATEWAY_KEYS",
    "GATEWAY_REQUESTS",
    "INBOX",
    "JOBS",
    "JOB_MAX_DELIVERIES",
    "REQUESTS",
    "RESULTS",
    "ROUTE",
    "ROUTER_ADVISORIES",
    "ROUTER_COMPLETIONS",
    "ROUTER_HEADS",
    "ROUTER_ROUTE",
    "USAGE",
    "WEBHOOKS",
    "WEBHOOKS_RESULTS",
    "WEBHOOK_FAILED",
    "WEBHOOK_SECRETS",
    "WORKER_OWN_JOBS",
    "ConsumerSpec",
    "KeyValueSpec",
    "StreamSpec",
    "cache_control",
    "completions",
    "dead_letters",
    "dedup_id",
    "deltas",
    "jobs",
    "matches",
    "payload_type",
    "requests",
    "results",
    "route",
    "stream_of",
    "tenant_inbox",
    "tenant_of",
    "tenant_results",
    "usage",
    "webhook_dead_letters",
    "webhook_failed",
    "webhooks",
    "webhooks_tenant",
    "worker_jobs",
    "worker_own",
    "worker_own_jobs",
    "worker_own_owner",
    "worker_token",
]

PREFIX = "costwise.v1"


def requests(tenant: str) -> str:
    """Where applications (or the gateway) publish an :class:`InferenceRequest`."""
    return f"{PREFIX}.requests.{tenant}"


def route(tenant: str) -> str:
    """Where the cache forwards an :class:`InferenceRequest` it could not answer, for the router."""
    return f"{PREFIX}.route.{tenant}"


def tenant_of(subject: str) -> str | None:
    """The tenant a tenant-scoped subject names (requests, route, results, usage, cache control, webhook
    outbox), even when its payload can't be read; ``None`` for subjects that name no tenant (jobs, completions).

    The subject is the authority on the tenant: NATS permissions are per subject, a payload is whatever the
    publisher wrote.
    """
    for head in _TENANT_LAST:
        if subject.startswith(head):
            rest = subject[len(head) :]
            return rest if rest and "." not in rest else None
    if subject.startswith(_RESULTS_HEAD):
        tenant, dot, request_id = subject[len(_RESULTS_HEAD) :].partition(".")
        return tenant if tenant and dot and request_id and "." not in request_id else None
    return None


def jobs(pool: str) -> str:
    """Where the router publishes a :class:`Job` for one worker pool."""
    return f"{PREFIX}.jobs.{pool}"


def worker_token(worker_id: str) -> str:
    """``worker_id`` (``<host>-<pid>`` by default; host names have dots) as one subject token.

    Idempotent, so a token read back from a subject names the same worker. Characters a token cannot hold
    become ``_``; an over-long id keeps a readable head and a hash of the whole.
    """
    token = re.sub(r"[^A-Za-z0-9_-]", "_", worker_id) or "_"
    if len(token) <= 64:
        return token
    return f"{token[:40]}-{hashlib.blake2b(worker_id.encode(), digest_size=8).hexdigest()}"


def worker_own_jobs(pool: str, worker_id: str) -> str:
    """Jobs for one worker of ``pool`` only: the router sends a job here when that worker served the job's
    prefix last (its prefix cache is warm) and is pulling right now."""
    return f"{PREFIX}.jobs.{pool}.w.{worker_token(worker_id)}"


WORKER_OWN_JOBS = f"{PREFIX}.jobs.*.w.*"
"""Every worker's own job queue (the router's sweeper looks for queues whose worker is gone)."""


def worker_own_owner(subject: str) -> tuple[str, str] | None:
    """``(pool, worker token)`` of a :func:`worker_own_jobs` subject, else ``None``."""
    if not matches(WORKER_OWN_JOBS, subject):
        return None
    _, _, _, pool, _, token = subject.split(".")
    return pool, token


def completions(pool: str) -> str:
    """Where a worker of ``pool`` publishes each :class:`Completion`."""
    return f"{PREFIX}.completions.{pool}"


def results(tenant: str, request_id: str) -> str:
    """Where the final :class:`Result` of one request lands (success or typed error).

    One subject per request lets a client wait for exactly its result, even one published
    before it started listening, with a filtered consumer and no scan.
    """
    return f"{PREFIX}.results.{tenant}.{request_id}"


def deltas(tenant: str, request_id: str) -> str:
    """Where a worker publishes the :class:`StreamDelta` messages of a streamed request: core NATS, captured by no
    stream (a reader subscribes before it publishes the request; the result carries the whole text anyway)."""
    return f"{PREFIX}.deltas.{tenant}.{request_id}"


def tenant_results(tenant: str) -> str:
    """Wildcard over every result of ``tenant``."""
    return f"{PREFIX}.results.{tenant}.>"


INBOX = "_INBOX"
"""NATS's default inbox prefix (replies, push deliveries): what every service user connects with."""


def tenant_inbox(tenant: str) -> str:
    """The inbox prefix a tenant's own connection must use (nats-py ``inbox_prefix``): the only inbox its NATS
    user may subscribe to, so replies and result deliveries to it reach no other tenant."""
    return f"{INBOX}_{tenant}"


def usage(tenant: str) -> str:
    """Where every :class:`UsageEvent` (tokens and engine time spent) is published."""
    return f"{PREFIX}.usage.{tenant}"


def cache_control(tenant: str) -> str:
    """Where a :class:`CacheInvalidation` or a :class:`CacheWrongHit` for ``tenant`` is published."""
    return f"{PREFIX}.control.cache.{tenant}"


def dead_letters(service: str) -> str:
    """Where ``service`` files a :class:`DeadLetter` for a message it could not handle."""
    return f"{PREFIX}.dlq.{service}"


def webhooks(tenant: str) -> str:
    """The webhooks service's per-tenant outbox: each :class:`Result` with a callback, in completion order."""
    return f"{PREFIX}.webhooks.{tenant}"


def webhook_failed(tenant: str) -> str:
    """Where a :class:`WebhookFailed` event lands when a result could not be delivered to its callback."""
    return f"{PREFIX}.webhook_failed.{tenant}"


def webhook_dead_letters(tenant: str) -> str:
    """Dead letters of the webhooks service for one tenant (a tenant's replay reads only its own)."""
    return f"{dead_letters('webhooks')}.{tenant}"


def dedup_id(tenant: str, key: str, *suffix: str) -> str:
    """The ``Nats-Msg-Id`` for a message about ``key`` (a request or job id) of ``tenant``.

    JetStream deduplicates per stream, not per subject, and two tenants may well pick the same
    request id: without the tenant in it, one tenant's result would silently swallow another's.
    """
    return ".".join((tenant, key, *suffix))


def _all(kind: str) -> str:
    return f"{PREFIX}.{kind}.>"


# Subject heads whose last token is the tenant, and the results head (tenant, then request id): tenant_of's table.
_TENANT_LAST = tuple(kind("") for kind in (requests, route, usage, cache_control, webhooks))
_RESULTS_HEAD = tenant_results("").removesuffix(".>")

REQUESTS = StreamSpec(name="COSTWISE_REQUESTS", subjects=(_all("requests"),))
# Requests the cache could not answer. Its own stream because JetStream deduplicates per stream:
# the forwarded copy keeps the request's Nats-Msg-Id.
ROUTE = StreamSpec(name="COSTWISE_ROUTE", subjects=(_all("route"),))
# Work-queue retention: a job is removed once a worker acks it, and each pool's
# subject has exactly one consumer, shared by the pool's workers; each worker's own subject
# (``jobs.<pool>.w.<worker>``, prefix affinity) has exactly one consumer, that worker's.
JOBS = StreamSpec(name="COSTWISE_JOBS", subjects=(_all("jobs"),), retention="workqueue")
COMPLETIONS = StreamSpec(name="COSTWISE_COMPLETIONS", subjects=(_all("completions"),))
RESULTS = StreamSpec(name="COSTWISE_RESULTS", subjects=(_all("results"),), duplicate_window_s=3600)
USAGE = StreamSpec(name="COSTWISE_USAGE", subjects=(_all("usage"),), max_age_s=90 * 24 * 3600)
DEAD_LETTERS = StreamSpec(name="COSTWISE_DLQ", subjects=(_all("dlq"),), max_age_s=30 * 24 * 3600)
# JetStream's own advisory when a job has used up max_deliver (e.g. its worker was SIGKILLed on the
# last attempt): kept in a stream so the router hears of it even if it was down at that moment.
JOB_MAX_DELIVERIES = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS.name}.*"
ADVISORIES = StreamSpec(name="COSTWISE_ADVISORIES", subjects=(JOB_MAX_DELIVERIES,), duplicate_window_s=60)
# Results waiting for their webhook, one subject per tenant. Work-queue retention: a delivered (or
# dead-lettered) result is removed; each tenant's subject has exactly one consumer (``webhooks_tenant``).
WEBHOOKS = StreamSpec(
    name="COSTWISE_WEBHOOKS", subjects=(_all("webhooks"),), retention="workqueue", duplicate_window_s=3600
)
WEBHOOK_FAILED = StreamSpec(
    name="COSTWISE_WEBHOOK_FAILED", subjects=(_all("webhook_failed"),), max_age_s=30 * 24 * 3600
)
# Operator commands to services (cache invalidation, ...): rare, small, kept a day.
CONTROL = StreamSpec(name="COSTWISE_CONTROL", subjects=(_all("control"),), max_age_s=24 * 3600)
ALL_STREAMS = (
    REQUESTS,
    ROUTE,
    JOBS,
    COMPLETIONS,
    RESULTS,
    USAGE,
    DEAD_LETTERS,
    ADVISORIES,
    WEBHOOKS,
    WEBHOOK_FAILED,
    CONTROL,
)

# Exact-cache answers, keyed by tenant and the hash of the canonical request, and per request
# (``<tenant>.r.<request_id>``) where its answer goes: written on a miss, read when the result comes back.
# Read on every request: a stale read (a cluster replica behind) is a miss, or an answer not stored.
CACHE_EXACT = KeyValueSpec(bucket="costwise-cache-exact", max_age_s=30 * 24 * 3600, direct_reads=True)
# The gateway's API keys: key id → tenant + sha256 of the key (never the key itself). 0 = never expire.
GATEWAY_KEYS = KeyValueSpec(bucket="costwise-gateway-keys", max_age_s=0, max_value_size=4 << 10)
# Requests the gateway accepted (``<tenant>.<request_id>``), so a status poll can tell "pending" from
# "unknown"; kept as long as results are.
GATEWAY_REQUESTS = KeyValueSpec(bucket="costwise-gateway-requests", max_age_s=RESULTS.max_age_s, max_value_size=4 << 10)
# Per-tenant budget state (limit, period, settled spend, open reservations), keyed by tenant. Written with
# compare-and-set only (costwise.budget), read by every service that admits spend.
BUDGETS = KeyValueSpec(bucket="costwise-budgets", max_age_s=0)  # 1 MiB: ~15k open reservations per tenant
# The router's online per-tenant corrections of the learned router, keyed by tenant (last writer wins: see
# costwise.router); an entry not rewritten for 90 days expires and the tenant starts from the shipped weights.
ROUTER_HEADS = KeyValueSpec(bucket="costwise-router-heads", max_age_s=90 * 24 * 3600, max_value_size=64 << 10)
# Each tenant's webhook signing secrets (``whsec_…``, one or two live while rotating), keyed by tenant: written by
# ``python -m costwise.webhooks secret …``, read by the webhooks service when signing and by the gateway when a
# request names a callback. Unlike API keys they are stored as they are (an HMAC key must be known to sign).
WEBHOOK_SECRETS = KeyValueSpec(bucket="costwise-webhook-secrets", max_age_s=0, max_value_size=8 << 10)
# Wrong-hit feedback per tenant (``<tenant>.hit.<id>`` what a semantic hit matched, ``<tenant>.wrong.<id>`` the
# reported pairs, ``<tenant>.floor`` the tenant's similarity floor); only the cache reads it.
CACHE_FEEDBACK = KeyValueSpec(bucket="costwise-cache-feedback", max_age_s=90 * 24 * 3600, max_value_size=64 << 10)
ALL_KEY_VALUES = (
    CACHE_EXACT,
    CACHE_FEEDBACK,
    GATEWAY_KEYS,
    GATEWAY_REQUESTS,
    BUDGETS,
    ROUTER_HEADS,
    WEBHOOK_SECRETS,
)

CACHE_REQUESTS = ConsumerSpec(durable="cache-requests", stream=REQUESTS.name, filter_subject=_all("requests"))
CACHE_RESULTS = ConsumerSpec(durable="cache-results", stream=RESULTS.name, filter_subject=_all("results"))
CACHE_CONTROL = ConsumerSpec(durable="cache-control", stream=CONTROL.name, filter_subject=cache_control("*"))
ROUTER_ROUTE = ConsumerSpec(durable="router-route", stream=ROUTE.name, filter_subject=_all("route"))
ROUTER_ADVISORIES = ConsumerSpec(durable="router-advisories", stream=ADVISORIES.name, filter_subject=JOB_MAX_DELIVERIES)
ROUTER_COMPLETIONS = ConsumerSpec(
    durable="router-completions", stream=COMPLETIONS.name, filter_subject=_all("completions")
)
# Billing never gives up on an event by redelivery count (max_deliver=-1): a failing ledger commit is retried
# until the database is back; an event it cannot price is dead-lettered explicitly instead.
BILLING_USAGE = ConsumerSpec(durable="billing-usage", stream=USAGE.name, filter_subject=_all("usage"), max_deliver=-1)
BILLING_RESULTS = ConsumerSpec(
    durable="billing-results", stream=RESULTS.name, filter_subject=_all("results"), max_deliver=-1
)
# One at a time, so results enter the tenants' webhook outboxes in completion order; never given up on.
WEBHOOKS_RESULTS = ConsumerSpec(
    durable="webhooks-results", stream=RESULTS.name, filter_subject=_all("results"), max_deliver=-1, max_ack_pending=1
)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a trailing ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or token not in ("*", sub[i]):
            return False
    return len(pat) == len(sub)


def stream_of(subject: str) -> StreamSpec:
    """The stream that captures ``subject`` (every costwise subject is captured by exactly one)."""
    for spec in ALL_STREAMS:
        if any(matches(pattern, subject) for pattern in spec.subjects):
            return spec
    raise KeyError(f"no costwise stream captures {subject!r}")


def payload_type(subject: str) -> type[msgspec.Struct]:
    """The wire type carried on ``subject``."""
    from . import messages  # late: messages is the heavier module and does not need subjects

    kinds: dict[str, type[msgspec.Struct]] = {
        REQUESTS.name: messages.InferenceRequest,
        ROUTE.name: messages.InferenceRequest,
        JOBS.name: messages.Job,
        COMPLETIONS.name: messages.Completion,
        RESULTS.name: messages.Result,
        USAGE.name: messages.UsageEvent,
        DEAD_LETTERS.name: messages.DeadLetter,
        ADVISORIES.name: messages.MaxDeliveriesAdvisory,
        CONTROL.name: messages.CacheInvalidation,
        WEBHOOKS.name: messages.Result,
        WEBHOOK_FAILED.name: messages.WebhookFailed,
    }
    return kinds[stream_of(subject).name]


def worker_jobs(pool: str, *, ack_wait_s: float = 30.0, max_deliver: int = 5) -> ConsumerSpec:
    """The consumer all workers of ``pool`` share; short ack_wait + heartbeats make SIGKILL recovery fast."""
    return ConsumerSpec(
        durable=f"worker-{pool}",
        stream=JOBS.name,
        filter_subject=jobs(pool),
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
    )


def worker_own(
    pool: str, worker_id: str, *, ack_wait_s: float = 30.0, max_deliver: int = 5, idle_s: float = 10.0
) -> ConsumerSpec:
    """The consumer of one worker's own queue (:func:`worker_own_jobs`), beside its pool's shared one.

    ``@`` cannot occur in a pool or a token, so no pool's shared durable can be mistaken for a worker's.
    The server deletes it after ``idle_s`` without a pull or a job in flight (a running job's heartbeats
    count), so worker churn leaves no consumers behind; a live worker that was merely full recreates it.
    """
    return ConsumerSpec(
        durable=f"worker-{pool}@{worker_token(worker_id)}",
        stream=JOBS.name,
        filter_subject=worker_own_jobs(pool, worker_id),
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
        inactive_threshold_s=idle_s,
    )


def webhooks_tenant(tenant: str, *, ack_wait_s: float = 60.0) -> ConsumerSpec:
    """The consumer of one tenant's webhook outbox, shared by every webhooks instance.

    ``max_ack_pending=1``: while the head result is failing (and waiting for its delayed redelivery) nothing
    behind it is delivered, so a receiver that comes back gets the tenant's results in completion order.
    ``max_deliver=-1``: the service gives up by its retry window, never JetStream by a count.
    """
    return ConsumerSpec(
        durable=f"webhooks-tenant-{tenant}",
        stream=WEBHOOKS.name,
        filter_subject=webhooks(tenant),
        ack_wait_s=ack_wait_s,
        max_deliver=-1,
        max_ack_pending=1,
    )

"""The JetStream topology: every stream, key-value bucket and durable consumer, and which wire type each
stream carries (behind ``subjects``)."""

from __future__ import annotations

import msgspec

from ._names import (
    _all,
    cache_control,
    jobs,
    matches,
    webhooks,
    worker_own_jobs,
    worker_token,
)
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
    "payload_type",
    "stream_of",
    "webhooks_tenant",
    "worker_jobs",
    "worker_own",
]

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

"""Subject names: where each kind of message is published, per tenant, pool or worker (behind ``subjects``)."""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "INBOX",
    "WORKER_OWN_JOBS",
    "cache_control",
    "completions",
    "dead_letters",
    "dedup_id",
    "deltas",
    "entry",
    "jobs",
    "matches",
    "requests",
    "results",
    "route",
    "tenant_inbox",
    "tenant_of",
    "tenant_results",
    "usage",
    "webhook_dead_letters",
    "webhook_failed",
    "webhooks",
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


def entry(tenant: str, *, bypass_cache: bool = False) -> str:
    """Where a client publishes a request: the cache's queue (:func:`requests`), or, for a request whose cache
    mode is ``bypass`` (nothing to look up, nothing to keep), the router's (:func:`route`): one JetStream hop less
    before its first token. A bypass request published to :func:`requests` is forwarded as usual."""
    return route(tenant) if bypass_cache else requests(tenant)


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


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a trailing ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or token not in ("*", sub[i]):
            return False
    return len(pat) == len(sub)

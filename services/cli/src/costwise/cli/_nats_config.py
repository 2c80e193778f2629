"""``costwise nats-config``: the ``accounts`` section of ``nats.conf`` — one user per service role, one per tenant.

Every costwise subject, stream, consumer and bucket name comes from :mod:`costwise.contracts.subjects`; the only
names spelled here are NATS's own (``$JS.API``, ``$KV``). ``costwise.client`` reads results the way this file
allows a tenant to (below), so a tenant's own credentials work with it.

How a tenant reads its results (the choice the permissions rest on): a subject permission can only constrain
what is *in* an API subject. ``$JS.API.CONSUMER.CREATE.<stream>`` (what nats-py's ordered consumers send) carries
no filter, so allowing it would let a tenant create a consumer on every tenant's results. A *named* consumer
with one filter is created on ``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`` and the server refuses a
config whose filter differs from the one in the subject, so a tenant may create consumers on
``COSTWISE_RESULTS`` whose filter lies under its own ``results.<tenant>.>`` and nothing else. They must be push
consumers delivering to the tenant's own inbox prefix (``subjects.tenant_inbox``, the only inbox it may read):
a pull (``MSG.NEXT``) subject names a consumer but not its filter, so pulling would let a tenant drain the
services' durables. The services' durables on the results stream are denied by name, so a create-or-update
cannot retarget them. What a subject permission cannot constrain is a push consumer's deliver subject: a tenant
could have its *own* results delivered onto another subject; every service refuses a payload whose tenant
differs from its subject's (``tenant_mismatch`` in ``costwise.messaging.Consumer``) or whose type is not the
subject's (``malformed_message``), so that is noise, never a read. Per-tenant accounts were the alternative:
they isolate fully but need a JetStream export/import (and a sourced stream) per tenant — worth it when tenants
are untrusted parties at scale; this one-account layout is what one generated file can hold.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from costwise.contracts import subjects
from costwise.contracts.subjects import INBOX, ConsumerSpec, KeyValueSpec, StreamSpec, tenant_inbox

__all__ = ["ACCOUNT", "Permissions", "User", "main", "password_variable", "render", "service_users", "tenant_user"]

ACCOUNT = "COSTWISE"
SYSTEM_ACCOUNT = "SYS"
# NATS's own names (not costwise's): the JetStream API, acks, key-value subjects and streams. The inbox names
# (``INBOX``, ``tenant_inbox``) are in ``subjects``: a tenant's client connects with them too.
JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
JS_FLOW_CONTROL = "$JS.FC"
KV_SUBJECTS = "$KV"
KV_STREAM = "KV_"
# Tenants are subject tokens (contracts' Token): letters, digits, '_' and '-'.
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PASSWORD_ENV = "COSTWISE_NATS_PASSWORD_"
_WORKERS = ("worker", "provider")  # the services (dead-letter names) that run as svc-worker


@dataclass(frozen=True)
class Permissions:
    """Subject permissions of one NATS user (``deny`` wins over ``allow``)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    """One NATS user of the costwise account."""

    name: str
    permissions: Permissions | None  # None: the whole account (operators)
    password: str = field(repr=False)


def _streams_consumed(streams: Iterable[StreamSpec]) -> list[str]:
    """Create, read and ack consumers of ``streams`` (durables, the workers' own queues, ordered readers)."""
    out: list[str] = []
    for s in streams:
        name = s.name
        out += [f"{JS_API}.CONSUMER.*.{name}", f"{JS_API}.CONSUMER.*.{name}.>", f"{JS_API}.CONSUMER.*.*.{name}.>"]
        out += [f"{JS_ACK}.{name}.>", f"{JS_FLOW_CONTROL}.{name}.>"]  # acks; ordered consumers' flow control
    return out


def _buckets(buckets: Iterable[KeyValueSpec], *, purge: bool = False) -> list[str]:
    """Read, write and watch key-value ``buckets`` (and purge their stream by subject when ``purge``)."""
    out: list[str] = []
    for kv in buckets:
        stream = f"{KV_STREAM}{kv.bucket}"
        out += [f"{KV_SUBJECTS}.{kv.bucket}.>", f"{JS_API}.DIRECT.GET.{stream}", f"{JS_API}.DIRECT.GET.{stream}.>"]
        out += [f"{JS_API}.STREAM.MSG.GET.{stream}"]
        out += _streams_consumed([StreamSpec(name=stream, subjects=())])
        if purge:
            out.append(f"{JS_API}.STREAM.PURGE.{stream}")
    return out


def _provisioning() -> list[str]:
    """Every service provisions every stream and bucket at start (``messaging.provision``): info, create, update."""
    names = [s.name for s in subjects.ALL_STREAMS] + [f"{KV_STREAM}{kv.bucket}" for kv in subjects.ALL_KEY_VALUES]
    return [f"{JS_API}.INFO", f"{JS_API}.STREAM.NAMES"] + [
        f"{JS_API}.STREAM.{verb}.{name}" for name in names for verb in ("INFO", "CREATE", "UPDATE")
    ]


def _service(
    publish: Sequence[str], consumes: Sequence[StreamSpec], kv: Sequence[str], subscribe: Sequence[str] = ()
) -> Permissions:
    # Services read through pull consumers and ordered readers: replies and deliveries come to their inboxes.
    grants = (*_provisioning(), *publish, *_streams_consumed(consumes), *kv)
    return Permissions(publish=tuple(dict.fromkeys(grants)), subscribe=(f"{INBOX}.>", *subscribe))


def _roles() -> dict[str, Permissions]:
    """What each service's job needs: the subjects it writes, the streams it consumes, the buckets it keeps."""
    s = subjects
    every_result = s.results("*", "*")  # any service may answer a request with a typed error result
    return {
        "cache": _service(
            # usage: semantic lookups and wrong-hit reports are billed; MSG.GET reads a reported request's result.
            [
                s.route("*"),
                every_result,
                s.usage("*"),
                s.dead_letters("cache"),
                f"{JS_API}.STREAM.MSG.GET.{s.RESULTS.name}",
            ],
            [s.REQUESTS, s.RESULTS, s.CONTROL],
            _buckets([s.CACHE_EXACT], purge=True) + _buckets([s.CACHE_FEEDBACK]),
        ),
        "router": _service(
            [*s.JOBS.subjects, every_result, s.dead_letters("router")],
            [s.ROUTE, s.COMPLETIONS, s.ADVISORIES, s.JOBS],
            _buckets([s.BUDGETS, s.ROUTER_HEADS]),
        ),
        # Workers and provider workers share a role: a job may go back to its pool (spot notice) or be refused.
        "worker": _service(
            [
                *s.JOBS.subjects,
                s.completions("*"),
                s.usage("*"),
                every_result,
                *map(s.dead_letters, _WORKERS),
                s.deltas("*", "*"),
            ],
            [s.JOBS],
            [],
        ),
        "billing": _service([every_result, s.dead_letters("billing")], [s.USAGE, s.RESULTS], _buckets([s.BUDGETS])),
        "gateway": _service(
            [s.requests("*"), s.route("*"), s.dead_letters("gateway")],
            [s.RESULTS],
            _buckets([s.GATEWAY_KEYS, s.GATEWAY_REQUESTS, s.BUDGETS, s.WEBHOOK_SECRETS]),
            (s.deltas("*", "*"),),
        ),
        "webhooks": _service(
            [
                s.webhooks("*"),
                s.webhook_failed("*"),
                s.webhook_dead_letters("*"),
                every_result,
                s.dead_letters("webhooks"),
            ],
            [s.RESULTS, s.WEBHOOKS, s.DEAD_LETTERS],
            _buckets([s.WEBHOOK_SECRETS]),
        ),
    }


def _service_durables_on(stream: StreamSpec) -> list[str]:
    """The services' durable consumers on ``stream``, as named in ``subjects`` (a tenant must never update them)."""
    specs = [v for v in vars(subjects).values() if isinstance(v, ConsumerSpec)]
    return sorted({spec.durable for spec in specs if spec.stream == stream.name})


def tenant_permissions(tenant: str) -> Permissions:
    """Publish its own requests (to the cache, or with cache ``bypass`` to the router: ``subjects.entry``); read its own results (live, or stored through its own filtered consumers)."""
    if not _TENANT.match(tenant):
        raise ValueError(f"tenant {tenant!r} is not a subject token (letters, digits, '_', '-')")
    results = subjects.RESULTS.name
    create = f"{JS_API}.CONSUMER.CREATE.{results}"
    return Permissions(
        publish=(subjects.requests(tenant), subjects.route(tenant), f"{create}.*.{subjects.tenant_results(tenant)}"),
        subscribe=(subjects.tenant_results(tenant), f"{tenant_inbox(tenant)}.>", subjects.deltas(tenant, "*")),
        publish_deny=tuple(f"{create}.{durable}.>" for durable in _service_durables_on(subjects.RESULTS)),
    )


def password_variable(user: str) -> str:
    """The environment variable holding ``user``'s password (``COSTWISE_NATS_PASSWORD_<USER>``): read by
    ``nats-config`` and, in a file rendered with ``--password-refs``, by nats-server itself."""
    return _PASSWORD_ENV + re.sub(r"[^A-Za-z0-9]", "_", user).upper()


def _password(user: str, env: dict[str, str]) -> str:
    return env.get(password_variable(user)) or secrets.token_urlsafe(24)


def service_users(env: dict[str, str] | None = None) -> list[User]:
    """One user per service role (``svc-<role>``) and ``admin`` (the whole account: CLI, provisioning by hand)."""
    env = dict(os.environ) if env is None else env
    users = [User(f"svc-{role}", perms, _password(f"svc-{role}", env)) for role, perms in _roles().items()]
    return [*users, User("admin", None, _password("admin", env))]


def tenant_user(tenant: str, env: dict[str, str] | None = None) -> User:
    """The NATS user of one tenant (``tenant-<tenant>``)."""
    env = dict(os.environ) if env is None else env
    return User(f"tenant-{tenant}", tenant_permissions(tenant), _password(f"tenant-{tenant}", env))


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a quoted nats.conf string; '$' inside quotes is no variable


def _list(key: str, values: Sequence[str]) -> list[str]:
    return [f"{key}: [", *(f"  {_q(v)}" for v in values), "]"]


def _secret(user: str, password: str, refs: bool) -> str:
    # A bare $NAME is a nats.conf variable, which nats-server resolves from its environment at start.
    return f"${password_variable(user)}" if refs else _q(password)


def _user_block(user: User, refs: bool) -> list[str]:
    """One user as nats.conf lines (a list's items on lines of their own, so a diff shows what changed)."""
    head = f"{{user: {_q(user.name)}, password: {_secret(user.name, user.password, refs)}"
    p = user.permissions
    if p is None:
        return [head + "}"]
    publish = _list("allow", p.publish) + (_list("deny", p.publish_deny) if p.publish_deny else [])
    body = ["publish: {", *(f"  {line}" for line in publish), "}"]
    body += ["subscribe: {", *(f"  {line}" for line in _list("allow", p.subscribe)), "}"]
    return [head, "  permissions: {", *(f"    {line}" for line in body), "  }", "}"]


_HEADERS = {
    False: "# Generated by `costwise nats-config`: it holds passwords, keep it secret (mode 0600, a Kubernetes Secret).",
    True: "# Generated by `costwise nats-config --password-refs` (do not edit): passwords from nats-server's environment.",
}


def render(users: Sequence[User], *, system_password: str, refs: bool = False) -> str:
    """The ``accounts`` section (and ``system_account``) to include in every node's ``nats.conf``; with ``refs``
    every password is its :func:`password_variable` instead of a literal, so the file holds no secret."""
    lines = [
        _HEADERS[refs],
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        *(f"      {line}" for u in users for line in _user_block(u, refs)),
        "    ]",
        "  }",
        f"  {SYSTEM_ACCOUNT} {{ users: [{{user: {_q('sys')}, password: {_secret('sys', system_password, refs)}}}] }}",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``costwise nats-config --tenants a,b [--out FILE]``: print (or write, mode 0600) the accounts section."""
    parser = argparse.ArgumentParser(prog="costwise nats-config", description=main.__doc__)
    parser.add_argument("--tenants", default="", help="comma-separated tenants that get their own NATS user")
    parser.add_argument("--out", type=Path, help="write here (mode 0600) instead of stdout")
    parser.add_argument(
        "--password-refs",
        action="store_true",
        help="write each password as $COSTWISE_NATS_PASSWORD_<USER>, which nats-server reads from its environment",
    )
    args = parser.parse_args(argv)
    tenants = [t for t in args.tenants.split(",") if t]
    env = dict(os.environ)
    try:
        users = service_users(env) + [tenant_user(t, env) for t in tenants]
    except ValueError as exc:
        print(f"costwise nats-config: {exc}", file=sys.stderr)
        return 2
    text = render(users, system_password=_password("sys", env), refs=args.password_refs)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    # Names only: the passwords are in the file (or came from COSTWISE_NATS_PASSWORD_<USER>), never on a terminal.
    print(f"wrote {len(users)} users to {args.out}: {', '.join(u.name for u in users)}", file=sys.stderr)
    return 0

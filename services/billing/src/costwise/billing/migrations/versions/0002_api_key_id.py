"""Per-API-key billing: the request's key on every line.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it is a metadata-only change on PostgreSQL and SQLite alike.
    op.add_column("ledger", sa.Column("api_key_id", sa.String(64), nullable=True))
    op.create_index("ix_ledger_tenant_key_ts", "ledger", ["tenant", "api_key_id", "ts_ms"])


def downgrade() -> None:
    op.drop_index("ix_ledger_tenant_key_ts", "ledger")
    op.drop_column("ledger", "api_key_id")

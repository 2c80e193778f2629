"""Alembic environment: runs on the connection the ledger hands over (``config.attributes["connection"]``)."""

from alembic import context

from costwise.billing._schema import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

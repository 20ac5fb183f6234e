"""Alembic environment: runs on the engine mailflow passes in (no alembic.ini needed)."""

from alembic import context
from sqlmodel import SQLModel

from mailflow.adapters import tables  # noqa: F401

config = context.config
engine = config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

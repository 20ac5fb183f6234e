"""The Alembic migrations build exactly the schema the models describe, on both engines, idempotently."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from mailflow.adapters.db import make_engine, migrate


def test_migrations_match_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    first = migrate(engine)
    assert migrate(engine) == first  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    engine.dispose()

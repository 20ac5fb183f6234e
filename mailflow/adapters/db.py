"""The SQL adapter: engine (SQLite embedded default, PostgreSQL for several instances), sessions, migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session

from mailflow.adapters import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailflow.errors import ConfigError, MailflowError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseError(MailflowError):
    """The database cannot be reached or is not initialised: run `mailflow init` or check database.url."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (CLI) run beside the daemon's writes
    cur.execute("PRAGMA busy_timeout=30000")  # wait for a writer instead of 'database is locked'
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA secure_delete=ON")  # erased personal data must not survive in free pages
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"setting 'database.url': not a valid SQLAlchemy URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            parent = Path(parsed.database).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError(f"setting 'database.url': folder {parent} does not exist")
        # Reused connections (SQLAlchemy's QueuePool): with NullPool every short transaction opened a connection
        # (pragmas, schema read, cold page cache) and closing the last one checkpointed the WAL with an fsync and
        # deleted it -- half of the lifecycle pass's time (BENCHMARKS.md). Erasure compacts explicitly (privacy.compact).
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # SQLite: take the write lock at BEGIN so two writers queue instead of failing mid-transaction.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        event.listen(engine, "connect", lambda c, r: setattr(c, "isolation_level", None))
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    raise ConfigError(f"setting 'database.url': unsupported database {parsed.get_backend_name()!r} (sqlite or postgresql)")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> str:
    """Create or upgrade the schema to the latest revision (idempotent). Returns the revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    try:
        command.upgrade(_alembic_config(engine), "head")
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision() or ""
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None


def check_schema(engine: Engine) -> None:
    """An empty database is created on first use; a foreign one is refused with a clear message."""
    try:
        names = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None
    if "pairs" in names:
        return
    if names - {"alembic_version"}:
        raise DatabaseError("the database holds other tables but not mailflow's: check database.url, or run `mailflow init`")
    migrate(engine)

"""Who may run: one instance per SQLite file (a lock file the kernel frees when the process dies);
on PostgreSQL any number of instances, with one leader at a time (a session advisory lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from mailflow.config import Settings
from mailflow.errors import MailflowError

LEADER_LOCK_KEY = 0x6D61696C666C6F77 & 0x7FFFFFFFFFFFFFFF  # "mailflow"


class AlreadyRunning(MailflowError):
    """Another mailflow instance is running on this database."""


def sqlite_lock_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser().resolve().with_suffix(".lock")


@contextmanager
def instance_lock(engine: Engine, settings: Settings) -> Iterator[None]:
    """SQLite: exclusive, non-blocking; a dead holder never blocks (the kernel drops flock locks)."""
    path = sqlite_lock_path(settings.database.url)
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another mailflow instance (pid {holder}) is running on this SQLite database; "
                "stop it first, or use PostgreSQL to run several instances"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


class Leadership:
    """PostgreSQL: the instance holding the advisory lock runs the inbox, lifecycle and digests.

    The lock belongs to one dedicated connection; if the process dies, PostgreSQL ends its session
    and frees the lock, so another instance takes over at its next try. SQLite: always leader.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_pg = engine.dialect.name == "postgresql"
        self._conn: Any = None
        self.held = not self.is_pg

    def try_acquire(self) -> bool:
        if not self.is_pg:
            return True
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            if not self.held:
                self.held = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY}).scalar())
                self._conn.commit()
            else:
                self._conn.execute(text("SELECT 1"))  # the session (and so the lock) is still alive
                self._conn.commit()
        except Exception:
            self.drop()
            raise
        return self.held

    def drop(self) -> None:
        conn, self._conn, self.held = self._conn, None, not self.is_pg
        if conn is not None:
            with contextlib.suppress(Exception):  # the connection is already gone
                conn.invalidate()

    def release(self) -> None:
        if self._conn is not None and self.held and self.is_pg:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_KEY})
                self._conn.commit()
                self._conn.close()
            except Exception:  # noqa: S110
                pass
        self._conn, self.held = None, not self.is_pg

"""Shared fixtures: real servers on free loopback ports (see tests/support/)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dovecot import DovecotServer, dovecot_binary
from tests.support.postgres import PostgresCluster, postgres_bindir
from tests.support.smtp import RecordingSMTPServer

SMTP_USERS = {"bot": "pw"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> None:
    """Skip locally when a server is not installed; fail in CI, where it must be."""
    reason = f"{what} not installed (run scripts/install-test-deps.sh)"
    if in_ci():
        pytest.fail(f"{reason}; CI must not skip it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A running Dovecot (IMAP, IMAPS, LMTP) shared by the session; use new_user() to isolate."""
    if dovecot_binary() is None:
        missing("dovecot (dovecot-imapd, dovecot-lmtpd)")
    server = DovecotServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running throwaway PostgreSQL cluster shared by the session."""
    if postgres_bindir() is None:
        missing("PostgreSQL server binaries (package postgresql)")
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database (dropped after the test)."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailflow.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def smtp_server_factory(tmp_path: Path) -> Iterator[Callable[..., RecordingSMTPServer]]:
    """Build more recording relays: factory(tls="starttls", users=..., auth_required=...).

    Each is started, has `cafile` written (when TLS is on) and is stopped after the test.
    """
    servers: list[RecordingSMTPServer] = []

    def factory(**kwargs: Any) -> RecordingSMTPServer:
        kwargs.setdefault("users", SMTP_USERS)
        server = RecordingSMTPServer(**kwargs)
        server.write_cafile(str(tmp_path / f"smtp-ca-{len(servers)}.pem"))
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(
    smtp_server_factory: Callable[..., RecordingSMTPServer],
) -> RecordingSMTPServer:
    """A plain (no TLS) recording relay; AUTH offered (user bot / pw), not required."""
    return smtp_server_factory()

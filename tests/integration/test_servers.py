"""Smoke tests: each real-server fixture starts, answers, and survives a restart."""

from __future__ import annotations

import imaplib
import smtplib
import ssl

import psycopg
import sqlalchemy

from tests.support.dovecot import DovecotServer
from tests.support.postgres import PostgresCluster
from tests.support.smtp import RecordingSMTPServer


def test_postgres_creates_a_database_and_survives_restart(postgres_cluster: PostgresCluster) -> None:
    name = postgres_cluster.create_database()
    try:
        with psycopg.connect(postgres_cluster.dsn(name)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        postgres_cluster.restart()
        with psycopg.connect(postgres_cluster.dsn(name)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        postgres_cluster.drop_database(name)


def test_pg_url_is_a_fresh_database_for_sqlalchemy(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE schemaname='public'"))
            assert tables.scalar() == 0
    finally:
        engine.dispose()


def test_db_url_works_for_each_backend(db_url: str) -> None:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
            assert conn.execute(sqlalchemy.text("SELECT x FROM t")).scalar() == 1
    finally:
        engine.dispose()


def test_dovecot_imap_imaps_lmtp_and_restart(dovecot: DovecotServer) -> None:
    user, password = dovecot.new_user()
    dovecot.append(b"Subject: a\r\n\r\nappended\r\n", user=user)
    dovecot.lmtp_deliver(b"Subject: b\r\n\r\ndelivered\r\n", rcpt=f"{user}@example.test")
    messages = dovecot.list_folder(user=user)
    assert len(messages) == 2 and messages[1].endswith(b"delivered\r\n")
    context = ssl.create_default_context(cafile=dovecot.cafile)
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=15) as imaps:
        assert imaps.login(user, password)[0] == "OK"
    dovecot.restart()
    assert dovecot.running
    assert len(dovecot.list_folder(user=user)) == 2  # mail survives the restart
    assert dovecot.list_folder("NoSuchFolder", user=user) == []


def test_smtp_server_records_and_counts(smtp_server: RecordingSMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=15) as client:
        client.login("bot", "pw")
        client.sendmail("a@example.test", ["b@example.test"], b"Subject: s\r\n\r\nx\r\n")
    [got] = smtp_server.messages
    assert (got.mail_from, got.rcpt_tos, got.data) == ("a@example.test", ("b@example.test",), b"Subject: s\r\n\r\nx\r\n")
    assert smtp_server.connections == 1 and smtp_server.logins == ["bot"]

"""IMAP faults: refused, cut mid-FETCH, MOVE lost after the commit, silent partition during IDLE, Dovecot
and PostgreSQL restarted under the daemon. A reply is applied exactly once when the fault clears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from mailflow.queries import show_pair
from tests.support.dovecot import DovecotServer
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PostgresCluster
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

T0, T1, T2 = "2026-09-01T09:00", "2026-09-02T10:00", "2026-09-02T10:05"


def replies(world: World, ref: str = "P01") -> list[dict]:
    with Session(world.engine) as s:
        return [e for e in show_pair(s, ref)["events"] if e["kind"] == "reply"]


def state(world: World, ref: str = "P01") -> str:
    with Session(world.engine) as s:
        return str(show_pair(s, ref)["state"])


@pytest.fixture
async def proxied(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> Iterator[tuple[World, FaultProxy]]:
    with FaultProxy(dovecot.host, dovecot.imap_port) as proxy:
        world = World(f"sqlite:///{tmp_path / 'imap.db'}", smtp_server, dovecot, MAILFLOW_IMAP__PORT=str(proxy.port),
                      MAILFLOW_IMAP__TIMEOUT_S="2")  # fmt: skip
        world.import_rows([pair_row(1)])
        await world.run_once(T0)
        (intro,) = world.sent("introduction", to="mentee1@example.net")
        world.deliver(world.reply_to(intro, "Premier rendez-vous fait, merci !"))
        yield world, proxy


@pytest.mark.parametrize(
    "fault",
    ["refuse", "blackhole", "cut mid-FETCH", "MOVE never reaches the server", "MOVE reply lost", "slower than the timeout"],
)
async def test_fault_then_exactly_once(proxied: tuple[World, FaultProxy], fault: str) -> None:
    world, proxy = proxied
    {
        "refuse": proxy.refuse,
        "blackhole": proxy.blackhole,
        "cut mid-FETCH": lambda: proxy.lose_reply(b"BODY[] {"),
        "MOVE never reaches the server": lambda: proxy.lose_reply(b"UID MOVE", direction="up"),
        "MOVE reply lost": lambda: proxy.lose_reply(b"Move completed"),
        "slower than the timeout": lambda: proxy.delay(2.5),
    }[fault]()
    report = await world.run_once(T1)
    assert report.inbox_error  # the fault is reported; the rest of the pass ran
    committed = fault.startswith("MOVE")
    assert len(replies(world)) == (1 if committed else 0)  # effects commit before the move
    proxy.heal()
    await world.run_once(T2)
    assert len(replies(world)) == 1 and state(world) == "active"
    assert world.folder("INBOX") == [] and len(world.folder("Processed")) == 1


def start_daemon(env: dict[str, str], log: Path, now: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")} | env
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mailflow", "--now", now, "run"], env=full, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def test_daemon_survives_a_silent_partition_during_idle(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    with FaultProxy(dovecot.host, dovecot.imap_port) as proxy:
        world = World(f"sqlite:///{tmp_path / 'idle.db'}", smtp_server, dovecot, MAILFLOW_IMAP__PORT=str(proxy.port),
                      MAILFLOW_IMAP__TIMEOUT_S="2", MAILFLOW_IMAP__IDLE_TIMEOUT_S="3")  # fmt: skip
        world.import_rows([pair_row(1)])
        log = tmp_path / "d.log"
        proc = start_daemon(world.env, log, T0)
        try:
            assert wait_for(lambda: len(world.sent("introduction")) == 2, 20), log.read_text()
            time.sleep(1)
            proxy.blackhole()  # the IDLE connection goes silent: no FIN, no RST
            (intro,) = world.sent("introduction", to="mentee1@example.net")
            world.deliver(world.reply_to(intro, "Premier rendez-vous fait !"))
            time.sleep(3)
            proxy.heal()
            assert wait_for(lambda: len(replies(world)) == 1, 30), log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    assert len(replies(world)) == 1


def test_daemon_rides_out_dovecot_and_postgres_restarts(
    tmp_path: Path, pg_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer, postgres_cluster: PostgresCluster
) -> None:
    world = World(pg_url, smtp_server, dovecot, MAILFLOW_IMAP__TIMEOUT_S="3")
    world.import_rows([pair_row(1), pair_row(2)])
    log = tmp_path / "d.log"
    proc = start_daemon(world.env, log, T0)
    try:
        assert wait_for(lambda: len(world.sent("introduction")) == 4, 30), log.read_text()
        dovecot.stop()
        time.sleep(2)
        dovecot.start()
        (intro,) = world.sent("introduction", to="mentee1@example.net")
        world.deliver(world.reply_to(intro, "Premier rendez-vous fait !"))
        assert wait_for(lambda: len(replies(world)) == 1, 40), log.read_text()
        world.engine.dispose()
        postgres_cluster.stop()
        time.sleep(2)
        postgres_cluster.start()
        (intro2,) = world.sent("introduction", to="mentee2@example.net")
        world.deliver(world.reply_to(intro2, "Premier rendez-vous fait !"))
        assert wait_for(lambda: len(replies(world, "P02")) == 1, 60), log.read_text()
    finally:
        if not dovecot.running:
            dovecot.start()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        world.engine.dispose()
    assert code == 0, log.read_text()[-3000:]
    assert len(replies(world)) == 1 and len(replies(world, "P02")) == 1
    assert world.folder("INBOX") == []

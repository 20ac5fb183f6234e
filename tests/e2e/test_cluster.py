"""Three daemons on one PostgreSQL with Dovecot and aiosmtpd, a simulated month in fast-forward:
one killed with SIGKILL mid-run, one frozen with SIGSTOP. Every due email goes out exactly once
(any resend carries the same Message-ID), every reply is applied once, one digest per referent per day."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import InboundMessage, OutboxMessage, PairEvent
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

START = "2026-09-01T07:30"


def spawn(world: World, speed: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env.update(world.env, MAILFLOW_CLOCK_SPEED=str(speed))
    return subprocess.Popen([sys.executable, "-m", "mailflow", "--now", START, "run"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip


class ReplyDriver:
    """Plays the participants: answers some of the emails they receive, once each."""

    def __init__(self, world: World, seed: int) -> None:
        self.world, self.rng = world, random.Random(seed)
        self.seen = 0
        self.delivered: list[str] = []

    def step(self) -> None:
        messages = self.world.sent()
        for msg in messages[self.seen :]:
            kind, to = msg["X-Mailflow-Kind"], msg["To"].addresses[0].addr_spec
            if kind in ("introduction", "followup") and to.startswith("mentee") and self.rng.random() < 0.5:
                raw = self.world.reply_to(msg, self.rng.choice(["1", "Merci, tout va bien.", "On s'est appelés, c'est parti !"]))
                self.world.deliver(raw)
                self.delivered.append(raw.split(b"Message-ID: ", 1)[1].split(b"\n", 1)[0].strip().decode())
        self.seen = len(messages)


def run_cluster(world: World, tmp_path: Path, *, days: int, speed: int, freeze_s: float) -> ReplyDriver:
    log = tmp_path / "cluster.log"
    procs = [spawn(world, speed, log) for _ in range(3)]
    driver = ReplyDriver(world, seed=7)
    real_total = days * 86400 / speed
    t0 = time.monotonic()
    killed = frozen = False
    try:
        while time.monotonic() - t0 < real_total:
            driver.step()
            elapsed = time.monotonic() - t0
            if not killed and elapsed > real_total * 0.3:
                procs[1].kill()  # SIGKILL mid-run
                procs[1].wait()
                procs[1] = spawn(world, speed, log)  # restarted at once: no stale lock or lease blocks it
                killed = True
            if not frozen and elapsed > real_total * 0.5:
                procs[2].send_signal(signal.SIGSTOP)
                frozen_at = time.monotonic()
                frozen = True
            if frozen and procs[2].returncode is None and time.monotonic() - frozen_at > freeze_s:
                procs[2].send_signal(signal.SIGCONT)
                frozen_at = float("inf")
            time.sleep(0.2)
        driver.step()
        time.sleep(3)  # let the last replies be read and the last emails leave
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0, 0, 0], log.read_text()[-3000:]
    return driver


def check_invariants(world: World, driver: ReplyDriver) -> None:
    received = Counter(m["Message-ID"] for m in world.sent())
    with Session(world.engine) as s:
        rows = list(s.exec(select(OutboxMessage)))
        reply_events = list(s.exec(select(PairEvent).where(PairEvent.kind == "reply")))
        inbound = {i.id: i for i in s.exec(select(InboundMessage))}
    by_id = {r.message_id: r for r in rows}
    # every received email is one of our rows (no stray Message-ID: no email sent under two ids)
    assert set(received) <= set(by_id)
    # every row that is due was delivered, once (a resend after a crash keeps its Message-ID)
    unsent = [r for r in rows if r.state != "sent"]
    assert all(r.not_before > max(x.not_before for x in rows) - timedelta(days=1) for r in unsent), [(r.kind, r.state) for r in unsent]
    for r in rows:
        if r.state == "sent":
            assert received[r.message_id] >= 1
    resends = {mid: n for mid, n in received.items() if n > 1}
    assert len(resends) <= 6, resends  # only the few in flight when a daemon was killed or frozen
    # digests: at most one per referent per day (the idempotency key), each sent under one Message-ID
    digests = Counter((r.person_id, r.slot) for r in rows if r.kind == "digest")
    assert digests and max(digests.values()) == 1
    # every delivered reply applied exactly once
    applied = Counter(inbound[e.inbound_id].dedup_key for e in reply_events if e.inbound_id in inbound)
    outcomes = {i.dedup_key: (i.outcome, i.kind, i.problem) for i in inbound.values()}
    missing = [(mid, outcomes.get(mid)) for mid in driver.delivered if applied[mid] != 1]
    assert not missing, (missing, len(driver.delivered), len(world.folder("INBOX")))
    print(
        f"cluster: {len(rows)} emails queued, {sum(received.values())} received at the relay under {len(received)} "
        f"Message-IDs ({len(resends)} resent with the same id), {len(digests)} digests, "
        f"{len(driver.delivered)} replies delivered and applied once, {len(unsent)} not yet due"
    )
    assert world.folder("INBOX") == []


def make_world(pg_url: str, smtp: RecordingSMTPServer, dovecot: DovecotServer, pairs: int) -> World:
    world = World(pg_url, smtp, dovecot, MAILFLOW_DIGEST__ENABLED="true", MAILFLOW_SMTP__MAX_CONNECTIONS="2")
    world.import_rows([pair_row(i, referent=i % 5) for i in range(1, pairs + 1)], at=START)
    return world


def test_three_daemons_share_postgresql(pg_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer, tmp_path: Path) -> None:
    world = make_world(pg_url, smtp_server, dovecot, pairs=60)
    driver = run_cluster(world, tmp_path, days=8, speed=14400, freeze_s=8)
    try:
        check_invariants(world, driver)
    except AssertionError:
        print((tmp_path / "cluster.log").read_text()[-8000:])
        raise


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_daemons_a_month_500_pairs(pg_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer, tmp_path: Path) -> None:
    world = make_world(pg_url, smtp_server, dovecot, pairs=500)
    driver = run_cluster(world, tmp_path, days=30, speed=14400, freeze_s=60)
    check_invariants(world, driver)

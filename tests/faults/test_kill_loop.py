"""The daemon killed with SIGKILL at random points, again and again, with replies arriving in between.

Each run: `mailflow --now T run` on the continuing world, kill -9 after a random 0.2-3 s, restart at
once (the SQLite instance lock is an flock: a dead holder never blocks), let it settle, SIGTERM.
Invariants after each run:
- no email lost: every outbox row ends `sent`; every Message-ID of a sent row is at the relay;
- no duplicate beyond the documented resend: per (pair, kind, recipient, slot) one Message-ID;
  a Message-ID received twice is the crash resend (counted);
- no reply lost or applied twice: one REPLY event per delivered reply Message-ID; INBOX empty;
- no pair in an impossible state: state in the vocabulary; closed/ended pairs have no participant
  email queued after the state change except the closure.
Counts are printed (run with -s) so they can be quoted.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import InboundMessage, OutboxMessage, Pair, PairEvent, ServiceState
from mailflow.locks import sqlite_lock_path
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

STATES = {"awaiting_first_contact", "active", "closed", "ended_no_contact"}
START = "2026-09-01T09:00"
REPLIES = ("Bonjour, on s'est appelés hier, premier rendez-vous fait.", "Tout va bien, merci.", "1", "On continue !")


def start_daemon(world: World, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env.update(world.env)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mailflow", "--now", START, "run"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def settled(world: World, pid: int) -> bool:
    """The daemon `pid` has reported in, every pair got its introductions, all sent, INBOX empty."""
    with Session(world.engine) as s:
        alive = any(k.endswith(f":{pid}") for k in s.exec(select(ServiceState.key)))
        intros = len(list(s.exec(select(OutboxMessage.id).where(OutboxMessage.kind == "introduction"))))
        open_rows = s.exec(select(OutboxMessage.id).where(OutboxMessage.state != "sent")).first()
        pairs = len(list(s.exec(select(Pair.id))))
    return alive and intros == 2 * pairs and open_rows is None and world.folder("INBOX") == []


class Ledger:
    """What the test did (replies delivered) and what it found, across runs."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.delivered: set[str] = set()  # reply Message-IDs delivered to INBOX

    def check(self, world: World) -> None:
        with Session(world.engine) as s:
            rows = list(s.exec(select(OutboxMessage)))
            pairs = list(s.exec(select(Pair)))
            events = list(s.exec(select(PairEvent)))
            inbound = {m.id: m.dedup_key for m in s.exec(select(InboundMessage))}
        # no email lost
        lost = [r.id for r in rows if r.state != "sent"]
        at_relay = collections.Counter(m["Message-ID"] for m in world.sent())
        lost += [r.id for r in rows if r.state == "sent" and r.message_id not in at_relay]
        self.counts["lost emails"] = len(lost)
        assert lost == [], f"emails lost: {lost}"
        # one Message-ID per email; repeats at the relay only with the same Message-ID
        per_email = collections.Counter((r.pair_id, r.kind, r.person_id, r.slot) for r in rows)
        assert max(per_email.values(), default=1) == 1
        assert set(at_relay) <= {r.message_id for r in rows}, "a Message-ID the outbox does not know"
        self.counts["emails checked"] = len(rows)
        self.counts["resends with the same Message-ID"] = sum(n - 1 for n in at_relay.values())
        # replies: each delivered reply applied exactly once
        applied = collections.Counter(inbound[e.inbound_id] for e in events if e.kind == "reply" and e.inbound_id)
        missing = self.delivered - set(applied)
        twice = {k: n for k, n in applied.items() if n > 1}
        self.counts["replies checked"] = len(self.delivered)
        self.counts["replies lost"] = len(missing)
        self.counts["replies applied twice"] = len(twice)
        assert not missing and not twice, (missing, twice)
        assert world.folder("INBOX") == []
        # pairs in possible states only
        by_pair = collections.defaultdict(list)
        for e in sorted(events, key=lambda e: e.id or 0):
            by_pair[e.pair_id].append(e)
        for pair in pairs:
            assert pair.state in STATES
            ended = [e.id for e in by_pair[pair.id] if e.kind == "state_changed" and json.loads(e.data)["to"] in ("closed", "ended_no_contact")]
            if ended:
                late = [e for e in by_pair[pair.id] if e.id > ended[0] and e.kind == "email_queued"
                        and e.who in ("mentor", "mentee") and e.email_kind not in ("closure", "no_contact_notice")]  # fmt: skip
                assert late == [], f"{pair.ref}: emails queued after it ended"


def deliver_some_replies(world: World, ledger: Ledger, rng: random.Random, n: int) -> None:
    candidates = [m for m in world.sent() if m["X-Mailflow-Kind"] in ("introduction", "followup")]
    for msg in rng.sample(candidates, min(n, len(candidates))):
        raw = world.reply_to(msg, rng.choice(REPLIES))
        world.deliver(raw)
        mid = [line for line in raw.split(b"\n") if line.lower().startswith(b"message-id:")][0].split(b":", 1)[1].strip().decode()
        ledger.delivered.add(mid)


def kill_loop(tmp_path: Path, smtp: RecordingSMTPServer, dovecot: DovecotServer, runs: int, seed: int) -> Ledger:
    rng = random.Random(seed)
    world = World(f"sqlite:///{tmp_path / 'kill.db'}", smtp, dovecot, MAILFLOW_DIGEST__ENABLED="true",
                  MAILFLOW_IMAP__IDLE_TIMEOUT_S="5")  # fmt: skip
    world.import_rows([pair_row(i, referent=i % 2) for i in range(1, 7)])
    ledger, log = Ledger(), tmp_path / "daemon.log"
    lock = sqlite_lock_path(world.db_url)
    for run in range(runs):
        if run % 2 == 1:
            deliver_some_replies(world, ledger, rng, 2)
        proc = start_daemon(world, log)
        time.sleep(rng.uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        ledger.counts["SIGKILL"] += 1
        if rng.random() < 0.5:
            deliver_some_replies(world, ledger, rng, 1)  # arrives while no daemon runs
        restarted = start_daemon(world, log)  # at once: the flock died with the killed process
        try:
            assert wait_for(functools.partial(settled, world, restarted.pid), 30), f"run {run} did not settle:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        finally:
            restarted.send_signal(signal.SIGTERM)
            code = restarted.wait(15)
        assert code == 0, f"run {run}: restarted daemon exited {code}:\n{log.read_text()[-3000:]}"
        ledger.counts["runs"] += 1
        ledger.check(world)
    assert lock is not None and lock.exists()
    logs = log.read_text()
    assert "another mailflow instance" not in logs and "Traceback" not in logs
    ledger.counts["emails at relay"] = len(world.sent())
    return ledger


def report(ledger: Ledger) -> None:
    print("\nkill loop:", json.dumps(dict(sorted(ledger.counts.items())), indent=None))


def test_kill_loop_short(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    ledger = kill_loop(tmp_path, smtp_server, dovecot, runs=4, seed=8)
    report(ledger)
    assert ledger.counts["runs"] == 4 and ledger.counts["replies checked"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_loop_long(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    ledger = kill_loop(tmp_path, smtp_server, dovecot, runs=24, seed=int(os.environ.get("KILL_SEED", "20260901")))
    report(ledger)
    assert ledger.counts["runs"] == 24


def test_sending_row_left_by_a_crash_goes_out_again_with_the_same_message_id(
    tmp_path: Path, smtp_server: RecordingSMTPServer
) -> None:
    """A row left `sending` (the daemon died between claim and SMTP) is sent on restart, same Message-ID."""
    from mailflow.outbox import claim

    world = World(f"sqlite:///{tmp_path / 'crash.db'}", smtp_server, None)
    world.import_rows([pair_row(1)])
    from mailflow.scheduler import run_pass
    from mailflow.service import outgoing

    now = world.now(START)
    run_pass(world.engine, now, world.settings.policy(), outgoing(world.settings))
    ids = claim(world.engine, now, "dead-host:1", 10, 600)  # a lease far in the future: only a restart frees it
    with Session(world.engine) as s:
        before = {r.id: (r.state, r.message_id) for r in s.exec(select(OutboxMessage))}
    assert {v[0] for v in before.values()} == {"sending"} and set(ids) == set(before)
    proc = start_daemon(world, tmp_path / "d.log")
    try:
        assert wait_for(lambda: len(world.sent()) == 2, 20), (tmp_path / "d.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert {m["Message-ID"] for m in world.sent()} == {v[1] for v in before.values()}

"""The outbox against a scripted relay: retries, bounces, relay refusals, and a crash between 250 and commit."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import OutboxMessage
from mailflow.outbox import OutboxSender, backoff_s
from mailflow.queries import show_pair
from tests.support.smtp import DROP, RecordingSMTPServer
from tests.support.world import World, pair_row


class Killed(BaseException):
    """Stands for the process dying (asyncio lets SystemExit escape the loop, so not that)."""


@pytest.fixture
def world(db_url: str, smtp_server: RecordingSMTPServer) -> World:
    w = World(db_url, smtp_server, None, MAILFLOW_SMTP__RETRY_FIRST_S="10")
    w.import_rows([pair_row(1)])
    return w


def rows(world: World) -> list[OutboxMessage]:
    with Session(world.engine) as s:
        return list(s.exec(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_451_three_times_then_delivered_once(world: World) -> None:
    world.smtp.script("DATA", "451 4.3.0 try later", "451 4.3.0 try later", "451 4.3.0 try later")
    t = world.now("2026-09-01T09:00")
    await world.run_once("2026-09-01T09:00")  # 2 introductions: both deferred once... then retried
    for minutes in range(1, 30):
        sender = OutboxSender(world.engine, world.settings, "t", lambda m=minutes: t + timedelta(minutes=m))
        await sender.run_once()
    ids = [m["Message-ID"] for m in world.sent()]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert {r.state for r in rows(world)} == {"sent"}
    assert sum(r.attempts for r in rows(world)) == 2 + 3


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n, 10, 1800) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_s(20, 10, 1800) == 1800


async def test_550_fails_at_once_and_flags_a_call(world: World) -> None:
    world.smtp.script("RCPT", "550 5.1.1 no such user")
    await world.run_once("2026-09-01T09:00")
    states = sorted(r.state for r in rows(world))
    assert states == ["failed", "sent"]
    with Session(world.engine) as s:
        pair = show_pair(s, "P01")
    calls = [f for f in pair["flags"] if f["kind"] == "call"]
    assert len(calls) == 1 and calls[0]["reason"] == "bounce"
    (failed,) = [r for r in rows(world) if r.state == "failed"]
    assert failed.role == calls[0]["who"]
    # the bounced person's later mail is held, not sent: nothing more reaches that address
    before = len(world.sent(to=failed.to_address))
    for day in ("2026-09-08T09:00", "2026-09-15T09:00", "2026-09-22T09:00"):
        await world.run_once(day)
    assert len(world.sent(to=failed.to_address)) == before == 0
    assert len(world.sent()) > 1  # the other person's mail went on


async def test_535_pauses_sending_without_flags(world: World) -> None:
    w = World(world.db_url, world.smtp, None, MAILFLOW_SMTP__USERNAME="bot", MAILFLOW_SMTP__PASSWORD="wrong")
    report = await w.run_once("2026-09-01T09:00")
    assert report.sent.paused and "535" in report.sent.paused
    assert {r.state for r in rows(w)} == {"pending"}
    with Session(w.engine) as s:
        assert show_pair(s, "P01")["flags"] == []
    assert w.smtp.messages == []


async def test_554_for_all_pauses(world: World) -> None:
    world.smtp.script("MAIL", "554 5.7.1 relay refuses you")
    report = await world.run_once("2026-09-01T09:00")
    assert report.sent.paused
    # the refused email waits (pending, no flag); a concurrent connection may still have got through
    assert "pending" in {r.state for r in rows(world)} and "failed" not in {r.state for r in rows(world)}
    with Session(world.engine) as s:
        assert show_pair(s, "P01")["flags"] == []


async def test_pause_releases_the_rest_of_the_claim_untouched(db_url: str, smtp_server: RecordingSMTPServer) -> None:
    """Sending pauses on the first row; the claim's other rows go back to pending, no attempt counted."""
    world = World(db_url, smtp_server, None, MAILFLOW_SMTP__MAX_CONNECTIONS="1")
    world.import_rows([pair_row(i) for i in range(1, 4)])  # 6 introductions, one connection
    world.smtp.script("MAIL", "554 5.7.1 relay refuses you")
    report = await world.run_once("2026-09-01T09:00")
    assert report.sent.paused and world.smtp.messages == []
    assert [(r.state, r.attempts, r.lease_owner, r.lease_until) for r in rows(world)] == [("pending", 0, None, None)] * 6


async def test_dropped_connection_is_retried(world: World) -> None:
    world.smtp.script("DATA", DROP)
    t = world.now("2026-09-01T09:00")
    await world.run_once("2026-09-01T09:00")
    await OutboxSender(world.engine, world.settings, "t", lambda: t + timedelta(minutes=5)).run_once()
    assert {r.state for r in rows(world)} == {"sent"}
    assert len({m["Message-ID"] for m in world.sent()}) == 2


async def test_crash_between_250_and_commit_resends_same_message_id(db_url: str, smtp_server: RecordingSMTPServer) -> None:
    """The relay accepted the message, then the process died before recording `sent`."""
    from mailflow import outbox as outbox_module

    world = World(db_url, smtp_server, None, MAILFLOW_SMTP__MAX_CONNECTIONS="1")
    world.import_rows([pair_row(1)])

    real_flush = outbox_module.SentMarks.flush
    crashed: list[int] = []

    def dying_flush(self):  # type: ignore[no-untyped-def]
        if self._rows or crashed:  # dead: nothing is recorded any more
            crashed.append(1)
            raise Killed("killed between 250 and commit")
        return real_flush(self)

    outbox_module.SentMarks.flush = dying_flush  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            await world.run_once("2026-09-01T09:00")
    finally:
        outbox_module.SentMarks.flush = real_flush  # type: ignore[method-assign]
    first = [m["Message-ID"] for m in world.sent()]
    assert len(first) == 1
    # restart: on SQLite the start-up releases every `sending` row; on PostgreSQL the lease expires
    t = world.now("2026-09-01T09:00")
    from mailflow.outbox import release_stale

    release_stale(world.engine, t, all_sending=True)
    await OutboxSender(world.engine, world.settings, "t2", lambda: t + timedelta(seconds=1)).run_once()
    ids = [m["Message-ID"] for m in world.sent()]
    assert len(ids) == 3  # the interrupted one again + the other introduction, once
    assert ids.count(first[0]) == 2
    assert len(set(ids)) == 2
    assert {r.state for r in rows(world)} == {"sent"}


async def test_group_commit_crash_leaves_at_most_one_unrecorded_message_per_connection(db_url: str, smtp_server: RecordingSMTPServer) -> None:
    """4 connections share each `sent` commit; a crash in one loses at most one record per connection."""
    from mailflow import outbox as outbox_module

    world = World(db_url, smtp_server, None, MAILFLOW_SMTP__MAX_CONNECTIONS="4")
    world.import_rows([pair_row(i) for i in range(1, 9)])  # 16 introductions
    real_flush = outbox_module.SentMarks.flush
    commits: list[int] = []

    def dying_flush(self):  # type: ignore[no-untyped-def]
        if self._rows:
            commits.append(len(self._rows))
        if len(commits) >= 3:  # dead from the third grouped commit on: nothing more is recorded
            raise Killed("killed during a grouped commit")
        return real_flush(self)

    outbox_module.SentMarks.flush = dying_flush  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            await world.run_once("2026-09-01T09:00")
    finally:
        outbox_module.SentMarks.flush = real_flush  # type: ignore[method-assign]
    delivered = [m["Message-ID"] for m in world.sent()]
    recorded = {r.message_id for r in rows(world) if r.state == "sent"}
    unrecorded = [mid for mid in delivered if mid not in recorded]
    assert delivered and 1 <= len(unrecorded) <= 4  # at most one per connection
    t = world.now("2026-09-01T09:00")
    outbox_module.release_stale(world.engine, t, all_sending=True)
    await OutboxSender(world.engine, world.settings, "t2", lambda: t + timedelta(seconds=1)).run_once()
    ids = [m["Message-ID"] for m in world.sent()]
    assert {r.state for r in rows(world)} == {"sent"} and len(set(ids)) == 16  # every row, its own Message-ID
    assert len(ids) - 16 == len(unrecorded)  # only the unrecorded ones went twice
    assert {mid for mid in ids if ids.count(mid) == 2} == set(unrecorded)


async def test_headers_and_one_recipient(world: World) -> None:
    report = await world.run_once("2026-09-01T09:00")
    assert (report.lifecycle.pairs, report.lifecycle.actions) == (1, 2)  # two introductions queued
    for received in world.smtp.messages:
        assert len(received.rcpt_tos) == 1
        assert received.mail_from.startswith("mentorat+") and received.mail_from.endswith("@example.org")
    for msg in world.sent():
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["X-Auto-Response-Suppress"] == "All"
        assert msg["X-Mailflow-Kind"] == "introduction"
        assert msg["Reply-To"].addresses[0].addr_spec.startswith("mentorat+")
        assert msg["Message-ID"].endswith("@example.org>")
        other = "mentee1@example.net" if "mentor1" in str(msg["To"]) else "mentor1@example.org"
        for header in ("To", "Cc", "Reply-To", "From"):
            assert other not in str(msg.get(header, ""))
    json.dumps([r.message_id for r in rows(world)])


async def test_corrected_address_gets_the_bounced_email_again(db_url: str, smtp_server: RecordingSMTPServer) -> None:
    from tests.support.cli import run_cli

    world = World(db_url, smtp_server, None, MAILFLOW_SMTP__MAX_CONNECTIONS="1")
    world.import_rows([pair_row(1)])
    world.smtp.script("RCPT", "550 5.1.1 no such user", "550 5.1.1 no such user")  # both introductions bounce
    await world.run_once("2026-09-01T09:00")
    with Session(world.engine) as s:
        pair = show_pair(s, "P01")
    assert ("call", "mentee", "bounce") in {(f["kind"], f["who"], f["reason"]) for f in pair["flags"]}
    failed = [r for r in rows(world) if r.state == "failed" and r.role == "mentee"]
    assert len(failed) == 1 and len([r for r in rows(world) if r.state == "failed"]) == 2
    result = run_cli("--now", "2026-09-02T09:00", "people", "set-email", "mentee1@example.net", "mentee1@example.org", env=world.env)
    assert result.code == 0, result.err
    await world.run_once("2026-09-02T09:00")
    again = world.sent("introduction", to="mentee1@example.org")
    assert len(again) == 1 and again[0]["Message-ID"] == failed[0].message_id
    with Session(world.engine) as s:
        pair = show_pair(s, "P01")
    assert [f["who"] for f in pair["flags"] if f["kind"] == "call"] == ["mentor"]  # the mentee's cleared
    assert any(e["kind"] == "address_corrected" for e in pair["events"])
    assert world.sent(to="mentor1@example.org") == []


async def test_rows_of_a_dead_instance_on_this_host_are_released_at_once(world: World) -> None:
    import os
    import socket
    import subprocess

    from mailflow.outbox import claim, release_dead_owners

    await OutboxSender(world.engine, world.settings, "x", lambda: world.now("2026-09-01T07:00")).run_once()  # outside the window
    from mailflow.scheduler import run_pass
    from mailflow.service import outgoing

    run_pass(world.engine, world.now("2026-09-01T09:00"), world.settings.policy(), outgoing(world.settings))
    proc = subprocess.Popen(["true"])
    proc.wait()
    owner = f"{socket.gethostname()[:40]}:{proc.pid}"
    alive = f"{socket.gethostname()[:40]}:{os.getpid()}"
    claimed = claim(world.engine, world.now("2026-09-01T09:00"), owner, 1, 3600)
    claim(world.engine, world.now("2026-09-01T09:00"), alive, 1, 3600)
    assert len(claimed) == 1
    assert release_dead_owners(world.engine) == 1  # the dead one's row only; the live lease stays
    states = sorted(r.state for r in rows(world))
    assert states == ["pending", "sending"]


@pytest.mark.parametrize(("rate", "timeout_s", "expected"), [(600, 30, 600), (60, 30, 60), (60, 60, 120), (1, 30, 1)])
def test_a_claim_never_leases_more_than_the_rate_sends_in_half_the_lease(
    db_url: str, smtp_server: RecordingSMTPServer, rate: int, timeout_s: int, expected: int
) -> None:
    """Rows still queued when their lease expires could be claimed by another instance and sent twice."""
    from mailflow import outbox as outbox_module
    from mailflow.outbox import claim_limit

    world = World(db_url, smtp_server, None, MAILFLOW_SMTP__RATE_PER_MINUTE=str(rate), MAILFLOW_SMTP__TIMEOUT_S=str(timeout_s))
    sender = OutboxSender(world.engine, world.settings, "t", lambda: world.now("2026-09-01T09:00"))
    assert sender._claim_max == expected == claim_limit(rate, max(60.0, timeout_s * 4))
    assert expected / (rate / 60) <= sender._lease_s / 2  # sending the whole claim takes half the lease at most
    limits: list[int] = []
    real_claim = outbox_module.claim

    def recording_claim(engine, now, owner, limit, lease_s):  # type: ignore[no-untyped-def]
        limits.append(limit)
        return real_claim(engine, now, owner, limit, lease_s)

    outbox_module.claim = recording_claim  # type: ignore[assignment]
    try:
        asyncio.run(sender.run_once())
    finally:
        outbox_module.claim = real_claim  # type: ignore[assignment]
    assert limits == [min(1000, expected)]  # run_once claims with it

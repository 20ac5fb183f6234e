"""Inbound mail against Dovecot: replies applied once, then moved; forged senders change nothing."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from mailflow.queries import show_pair
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row


@pytest.fixture
async def world(db_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> World:
    w = World(db_url, smtp_server, dovecot)
    w.import_rows([pair_row(1), pair_row(2)])
    await w.run_once("2026-09-01T09:00")
    assert len(w.sent("introduction")) == 4
    return w


def pair(world: World, ref: str) -> dict:
    with Session(world.engine) as s:
        return show_pair(s, ref)


async def test_mentee_reply_activates_pair_and_moves_message(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    world.deliver(world.reply_to(intro, "Bonjour, merci ! J'ai bien reçu le message de ma mentore."))
    report = await world.run_once("2026-09-02T10:00")
    assert report.inbox == {"processed": 1}
    p = pair(world, "P01")
    assert p["state"] == "active"
    replies = [e for e in p["events"] if e["kind"] == "reply"]
    assert len(replies) == 1 and replies[0]["who"] == "mentee"
    assert p["last_reply_at"] is not None
    assert world.folder("INBOX") == [] and len(world.folder("Processed")) == 1
    assert pair(world, "P02")["state"] == "awaiting_first_contact"


async def test_same_reply_twice_is_one_event(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentor2@example.org")
    raw = world.reply_to(intro, "On s'est appelés hier, premier rendez-vous fait.")
    world.deliver(raw)
    world.deliver(raw)
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P02")
    assert p["state"] == "active"
    assert [e["intent"] for e in p["events"] if e["kind"] == "reply"] == ["met"]
    assert len(world.folder("Processed")) == 2 and world.folder("INBOX") == []


async def test_forged_sender_changes_nothing_and_raises_review(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    world.deliver(world.reply_to(intro, "3 je veux arrêter", sender="intruder@evil.example"))
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P01")
    assert p["state"] == "awaiting_first_contact"
    assert [(f["kind"], f["reason"]) for f in p["flags"]] == [("review", "sender_mismatch")]
    assert not [e for e in p["events"] if e["kind"] == "reply"]
    assert len(world.folder("Unmatched")) == 1


async def test_auto_reply_is_not_a_reply(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    raw = world.reply_to(intro, "Je suis absente jusqu'au 15 septembre.", subject="Réponse automatique : Votre mise en relation",
                         headers={"Auto-Submitted": "auto-replied"}, quote=False)  # fmt: skip
    world.deliver(raw)
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P01")
    assert p["state"] == "awaiting_first_contact" and p["last_reply_at"] is None
    assert [e["kind"] for e in p["events"] if e["kind"] in ("reply", "auto_reply")] == ["auto_reply"]


async def test_distress_reply_alerts_referent_in_same_pass(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee2@example.net")
    world.deliver(world.reply_to(intro, "Je ne vais pas bien du tout, je pense à en finir, j'ai besoin d'aide."))
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P02")
    assert ("urgent", "mentee", "support_needed") in {(f["kind"], f["who"], f["reason"]) for f in p["flags"]}
    (alert,) = world.sent("urgent_alert")
    assert alert["To"].addresses[0].addr_spec == "referent0@example.org"
    body = alert.get_body(("plain",)).get_content()
    assert "finir" not in body and "pas bien" not in body


async def test_unmatched_and_garbage(world: World) -> None:
    world.deliver(b"From: someone@else.example\r\nTo: mentorat@example.org\r\nSubject: hello\r\nMessage-ID: <x1@else>\r\n\r\nHi\r\n")
    world.deliver(b"\x00\xff garbage without headers")
    report = await world.run_once("2026-09-02T10:00")
    assert sum(report.inbox.values()) == 2
    assert world.folder("INBOX") == []
    assert len(world.folder("Unmatched")) + len(world.folder("Quarantine")) == 2


async def test_reply_json_shape_in_show(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    world.deliver(world.reply_to(intro, "1"))
    await world.run_once("2026-09-02T10:00")
    shown = json.loads(json.dumps(pair(world, "P01")))
    assert {"ref", "state", "flags", "matched_on", "last_reply_at", "events"} <= set(shown)
    (reply,) = [e for e in shown["events"] if e["kind"] == "reply"]
    assert {"at", "kind", "who", "intent"} <= set(reply) and (reply["who"], reply["intent"]) == ("mentee", "ok")


class Killed(BaseException):
    """Stands for the process dying between fetch and commit."""


async def test_killed_after_fetch_before_commit_applies_once_on_restart(world: World) -> None:
    from mailflow import inbox as inbox_module

    (intro,) = world.sent("introduction", to="mentee1@example.net")
    world.deliver(world.reply_to(intro, "Bonjour, tout va bien de mon côté."))
    real = inbox_module.InboxProcessor._apply

    def dying(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(self, *args, **kwargs)  # the effects are computed, the transaction is not committed
        raise Killed

    inbox_module.InboxProcessor._apply = dying  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            await world.run_once("2026-09-02T10:00")
    finally:
        inbox_module.InboxProcessor._apply = real  # type: ignore[method-assign]
    assert pair(world, "P01")["state"] == "awaiting_first_contact"
    assert len(world.folder("INBOX")) == 1  # not moved: nothing was committed
    await world.run_once("2026-09-02T10:05")
    p = pair(world, "P01")
    assert p["state"] == "active" and len([e for e in p["events"] if e["kind"] == "reply"]) == 1
    await world.run_once("2026-09-02T10:10")
    assert len([e for e in pair(world, "P01")["events"] if e["kind"] == "reply"]) == 1


async def test_killed_after_commit_before_move_is_only_moved(world: World) -> None:
    from mailflow.adapters import imap as imap_module

    (intro,) = world.sent("introduction", to="mentee2@example.net")
    world.deliver(world.reply_to(intro, "1"))
    real = imap_module.ImapMailbox.move_many

    async def dying(self, uids, folder):  # type: ignore[no-untyped-def]
        raise Killed

    imap_module.ImapMailbox.move_many = dying  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            await world.run_once("2026-09-02T10:00")
    finally:
        imap_module.ImapMailbox.move_many = real  # type: ignore[method-assign]
    assert len(world.folder("INBOX")) == 1
    await world.run_once("2026-09-02T10:05")
    assert world.folder("INBOX") == [] and len(world.folder("Processed")) == 1
    assert len([e for e in pair(world, "P02")["events"] if e["kind"] == "reply"]) == 1


async def test_bounce_to_verp_address_flags_a_call_and_holds_mail(world: World) -> None:
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    verp = next(m.mail_from for m in world.smtp.messages if "mentee1@example.net" in m.rcpt_tos)
    dsn = (
        f"From: MAILER-DAEMON@relay.example\r\nTo: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn1@relay.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example\r\n\r\n"
        "Final-Recipient: rfc822; mentee1@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {intro['Message-ID']}\r\n\r\n--B--\r\n"
    ).encode()
    world.deliver(dsn)
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P01")
    assert ("call", "mentee", "bounce") in {(f["kind"], f["who"], f["reason"]) for f in p["flags"]}
    assert [e.get("permanent") for e in p["events"] if e["kind"] == "bounce"] == ["true"]
    await world.run_once("2026-09-08T09:00")  # the day-7 reminder is held, not sent to a dead address
    assert world.sent("first_contact_reminder", to="mentee1@example.net") == []
    assert len(world.sent("first_contact_reminder", to="mentee2@example.net")) == 1


async def test_delay_notice_changes_nothing(world: World) -> None:
    verp = next(m.mail_from for m in world.smtp.messages if "mentee1@example.net" in m.rcpt_tos)
    dsn = (
        f"From: MAILER-DAEMON@relay.example\r\nTo: {verp}\r\nSubject: Delayed Mail (still being retried)\r\n"
        "Message-ID: <dsn2@relay.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nStill trying.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example\r\n\r\n"
        "Final-Recipient: rfc822; mentee1@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n--B--\r\n"
    ).encode()
    world.deliver(dsn)
    await world.run_once("2026-09-02T10:00")
    p = pair(world, "P01")
    assert p["flags"] == [] and p["state"] == "awaiting_first_contact"


async def test_dovecot_restart_during_idle_misses_nothing(db_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    import asyncio

    from mailflow.clock import Clock
    from mailflow.runner import Daemon

    w = World(db_url, smtp_server, dovecot)
    w.import_rows([pair_row(1)])
    await w.run_once("2026-09-01T09:00")
    (intro,) = w.sent("introduction", to="mentee1@example.net")
    daemon = Daemon(w.engine, w.settings, Clock(w.now("2026-09-02T10:00")))
    task = asyncio.ensure_future(daemon.run())
    try:
        await asyncio.sleep(1.5)  # reader connected and in IDLE
        await asyncio.to_thread(dovecot.restart)
        w.deliver(w.reply_to(intro, "Merci, c'est noté."))
        for _ in range(100):
            if pair(w, "P01")["state"] == "active":
                break
            await asyncio.sleep(0.2)
        assert pair(w, "P01")["state"] == "active"
        assert w.folder("INBOX") == []
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 15) == 0


@pytest.mark.parametrize(("auth", "applied"), [("dkim=pass header.d=example.net; dmarc=pass", True), ("spf=fail; dmarc=fail", False)])
async def test_fresh_message_needs_our_servers_word_when_configured(
    db_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer, auth: str, applied: bool
) -> None:
    w = World(db_url, smtp_server, dovecot, MAILFLOW_INBOUND__TRUSTED_AUTHSERV_ID="mx.example.org")
    w.import_rows([pair_row(1)])
    await w.run_once("2026-09-01T09:00")
    fresh = (
        f"Authentication-Results: mx.example.org; {auth}\r\nFrom: mentee1@example.net\r\nTo: mentorat@example.org\r\n"
        "Subject: bonjour\r\nMessage-ID: <fresh1@example.net>\r\n\r\nBonjour, j'ai eu mon mentor au téléphone.\r\n"
    ).encode()
    w.deliver(fresh)
    await w.run_once("2026-09-02T10:00")
    p = pair(w, "P01")
    assert (p["state"] == "active") is applied
    assert (("review", "mentee", "sender_mismatch") in {(f["kind"], f["who"], f["reason"]) for f in p["flags"]}) is not applied


async def test_a_full_inbox_of_1200_messages_is_sized_and_listed_in_chunks(dovecot: DovecotServer) -> None:
    """One FETCH answer of ~1,000 lines made aioimaplib recurse too deep; sizes and ids go by chunks of 100."""
    import os
    import pwd

    from mailflow.adapters.imap import ImapConfig, ImapMailbox

    user, password = dovecot.new_user()
    dovecot.append(b"Subject: first\r\nMessage-ID: <bulk-first@else>\r\n\r\nhello\r\n", "INBOX", user=user)  # creates the Maildir
    maildir = next(dovecot.dir.glob(f"mail/{user}/Maildir"))
    mail = pwd.getpwnam("mail")
    for i in range(1199):  # dropped straight into Maildir/new: Dovecot indexes them at SELECT (APPENDs take 15 s)
        path = maildir / "new" / f"1700000000.bulk{i}.test"
        path.write_bytes(f"From: s{i}@else.example\r\nSubject: n{i}\r\nMessage-ID: <bulk{i}@else>\r\n\r\nhello\r\n".encode())
        os.chown(path, mail.pw_uid, mail.pw_gid)
    config = ImapConfig(host=dovecot.host, port=dovecot.imap_port, tls="none", username=user, password=password)
    async with ImapMailbox(config) as mailbox:
        await mailbox.select()
        uids = await mailbox.uids()
        assert len(uids) == 1200
        assert len(await mailbox.sizes(uids)) == 1200
        ids = await mailbox.header_message_ids(uids)
        assert sorted(ids.values())[:2] == ["<bulk-first@else>", "<bulk0@else>"] and len(set(ids.values())) == 1200


# ---- chunks: one transaction per FETCH chunk, one MOVE per folder -------------------------------


def replies_in(world: World, ref: str) -> list[dict]:
    return [e for e in pair(world, ref)["events"] if e["kind"] == "reply"]


@pytest.fixture
def boom_on_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message whose visible text says BOOM fails while it is applied (after its effects are written)."""
    from mailflow.inbound import InboxProcessor

    real = InboxProcessor._apply

    def failing(self, chunk, item, record, now):  # type: ignore[no-untyped-def]
        out = real(self, chunk, item, record, now)
        if "BOOM" in item.parsed.text:
            raise RuntimeError("boom")
        return out

    monkeypatch.setattr(InboxProcessor, "_apply", failing)


async def test_one_failing_message_in_a_chunk_fails_alone_and_is_quarantined_after_max_attempts(
    world: World, boom_on_marker: None, caplog: pytest.LogCaptureFixture
) -> None:
    (intro1,) = world.sent("introduction", to="mentee1@example.net")
    (intro2,) = world.sent("introduction", to="mentee2@example.net")
    (intro3,) = world.sent("introduction", to="mentor2@example.org")
    world.deliver(world.reply_to(intro1, "Bonjour, tout va bien."))
    world.deliver(world.reply_to(intro2, "BOOM: this one fails every time."))
    world.deliver(world.reply_to(intro3, "On s'est appelés hier, premier rendez-vous fait."))
    for attempt, minute in enumerate(("00", "05"), start=1):
        report = await world.run_once(f"2026-09-02T10:{minute}")
        assert report.inbox == ({"processed": 2} if attempt == 1 else {})
        assert len(world.folder("INBOX")) == 1  # the failing one stays, to be read again
    assert len(world.folder("Processed")) == 2
    assert [e["who"] for e in replies_in(world, "P01")] == ["mentee"]
    assert [e["who"] for e in replies_in(world, "P02")] == ["mentor"]  # its BOOM reply left nothing behind
    report = await world.run_once("2026-09-02T10:10")  # the third failure (max_attempts = 3)
    assert report.inbox == {"quarantine": 1}
    assert world.folder("INBOX") == [] and len(world.folder("Quarantine")) == 1
    assert [e["who"] for e in replies_in(world, "P02")] == ["mentor"]
    assert len(replies_in(world, "P01")) == 1  # nothing applied twice across the retries
    assert "@" not in caplog.text


async def test_a_chunk_that_fails_as_a_whole_is_applied_one_message_at_a_time(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailflow.chunk import Chunk

    calls = []
    real = Chunk.read.__func__  # type: ignore[attr-defined]

    def read(cls, session, items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        if len(items) > 1:
            raise RuntimeError("the chunk's reads fail")
        return real(cls, session, items)

    monkeypatch.setattr(Chunk, "read", classmethod(read))
    (intro1,) = world.sent("introduction", to="mentee1@example.net")
    (intro2,) = world.sent("introduction", to="mentee2@example.net")
    world.deliver(world.reply_to(intro1, "Bonjour, tout va bien."))
    world.deliver(world.reply_to(intro2, "Merci, c'est noté."))
    report = await world.run_once("2026-09-02T10:00")
    assert report.inbox == {"processed": 2} and calls == [2, 2, 1, 1]  # fast, with savepoints, then alone
    assert world.folder("INBOX") == [] and len(world.folder("Processed")) == 2
    assert len(replies_in(world, "P01")) == 1 and len(replies_in(world, "P02")) == 1


async def test_killed_after_a_chunk_commit_before_its_moves_only_moves_them(world: World) -> None:
    from mailflow.adapters import imap as imap_module

    for to in ("mentee1@example.net", "mentee2@example.net", "mentor1@example.org"):
        (intro,) = world.sent("introduction", to=to)
        world.deliver(world.reply_to(intro, "Bonjour, tout va bien."))
    world.deliver(b"From: someone@else.example\r\nTo: mentorat@example.org\r\nSubject: hello\r\nMessage-ID: <x9@else>\r\n\r\nHi\r\n")
    real = imap_module.ImapMailbox.move_many

    async def dying(self, uids, folder):  # type: ignore[no-untyped-def]
        raise Killed

    imap_module.ImapMailbox.move_many = dying  # type: ignore[method-assign]
    try:
        with pytest.raises(Killed):
            await world.run_once("2026-09-02T10:00")
    finally:
        imap_module.ImapMailbox.move_many = real  # type: ignore[method-assign]
    assert len(world.folder("INBOX")) == 4  # committed, not moved
    report = await world.run_once("2026-09-02T10:05")
    assert report.inbox == {"duplicate": 4}
    assert world.folder("INBOX") == [] and len(world.folder("Processed")) == 3 and len(world.folder("Unmatched")) == 1
    assert len(replies_in(world, "P01")) == 2 and len(replies_in(world, "P02")) == 1


async def test_messages_are_moved_once_per_folder_per_chunk(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailflow.adapters import imap as imap_module

    moves: list[tuple[list[int], str]] = []
    real = imap_module.ImapMailbox.move_many

    async def recording(self, uids, folder):  # type: ignore[no-untyped-def]
        moves.append((sorted(uids), folder))
        await real(self, uids, folder)

    monkeypatch.setattr(imap_module.ImapMailbox, "move_many", recording)
    (intro1,) = world.sent("introduction", to="mentee1@example.net")
    (intro2,) = world.sent("introduction", to="mentee2@example.net")
    world.deliver(world.reply_to(intro1, "Bonjour, tout va bien."))  # uid 1
    world.deliver(b"From: someone@else.example\r\nTo: mentorat@example.org\r\nSubject: hi\r\nMessage-ID: <u1@else>\r\n\r\nHi\r\n")
    world.deliver(world.reply_to(intro2, "Merci, c'est noté."))  # uid 3
    world.deliver(b"\x00\xff garbage without headers")  # uid 4
    await world.run_once("2026-09-02T10:00")
    assert sorted(moves, key=lambda m: m[1]) == [([1, 3], "Processed"), ([4], "Quarantine"), ([2], "Unmatched")]
    assert world.folder("INBOX") == []


async def test_two_replies_for_one_pair_in_one_chunk_see_each_other(world: World) -> None:
    (to_mentee,) = world.sent("introduction", to="mentee1@example.net")
    (to_mentor,) = world.sent("introduction", to="mentor1@example.org")
    world.deliver(world.reply_to(to_mentee, "Bonjour, merci ! J'ai bien reçu le message."))
    world.deliver(world.reply_to(to_mentor, "On s'est appelés hier, premier rendez-vous fait."))
    report = await world.run_once("2026-09-02T10:00")
    assert report.inbox == {"processed": 2}
    p = pair(world, "P01")
    assert p["state"] == "active"
    assert [e["who"] for e in p["events"] if e["kind"] == "reply"] == ["mentee", "mentor"]
    assert len([e for e in p["events"] if e["kind"] == "state_changed"]) == 1  # the second saw the first's change


async def test_events_of_a_chunk_name_their_own_inbound_rows(world: World) -> None:
    from sqlalchemy import select as sa_select

    from mailflow.adapters.tables import InboundMessage, PairEvent

    for to in ("mentee1@example.net", "mentee2@example.net", "mentor2@example.org"):
        (intro,) = world.sent("introduction", to=to)
        world.deliver(world.reply_to(intro, f"Bonjour, ici {to.split('@')[0]}."))
    world.deliver(b"From: someone@else.example\r\nTo: mentorat@example.org\r\nSubject: hi\r\nMessage-ID: <e1@else>\r\n\r\nHi\r\n")
    await world.run_once("2026-09-02T10:00")
    world.deliver(b"From: other@else.example\r\nTo: mentorat@example.org\r\nSubject: hi\r\nMessage-ID: <e2@else>\r\n\r\nHi\r\n")
    await world.run_once("2026-09-02T10:05")  # rows inserted by a later chunk do not collide with the first one's ids
    with world.engine.connect() as conn:
        inbound = {r.id: r for r in conn.execute(sa_select(InboundMessage.__table__))}  # type: ignore[attr-defined]
        replies = list(conn.execute(sa_select(PairEvent.__table__).where(PairEvent.__table__.c.kind == "reply")))  # type: ignore[attr-defined]
    assert len(inbound) == 5 and sorted(r.outcome for r in inbound.values()) == ["processed"] * 3 + ["unmatched"] * 2
    assert len(replies) == 3
    for event in replies:
        row = inbound[event.inbound_id]
        assert row.pair_id == event.pair_id and row.outcome == "processed" and row.text.startswith("Bonjour, ici")

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
    json.dumps(pair(world, "P01"))

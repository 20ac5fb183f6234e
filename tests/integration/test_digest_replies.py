"""Referents act by replying to their digest: commands applied through the real inbox, forged ones refused."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from mailflow.queries import show_pair
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row


@pytest.fixture
async def world(db_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> World:
    w = World(db_url, smtp_server, dovecot, MAILFLOW_DIGEST__ENABLED="true")
    w.import_rows([pair_row(1, referent=0), pair_row(2, referent=1)])
    await w.run_once("2026-09-01T09:00")
    # activate P01 and raise a call flag on its silent mentee: a followup and seven days of silence
    (intro,) = w.sent("introduction", to="mentor1@example.org")
    w.deliver(w.reply_to(intro, "On s'est appelés, premier rendez-vous fait."))
    await w.run_once("2026-09-02T09:00")
    for day in ("2026-10-02T09:00", "2026-10-06T09:00", "2026-10-09T09:00"):
        await w.run_once(day)
    return w


def flags(world: World, ref: str) -> set[tuple[str, str | None, str]]:
    with Session(world.engine) as s:
        return {(f["kind"], f["who"], f["reason"]) for f in show_pair(s, ref)["flags"]}


async def test_call_done_by_replying_to_the_digest(world: World) -> None:
    assert ("call", "mentee", "no_reply") in flags(world, "P01")
    digest = world.sent("digest", to="referent0@example.org")[-1]
    body = digest.get_body(("plain",)).get_content()
    assert "P01" in body and "Mentee2" not in body  # only the referent's own pairs
    world.deliver(world.reply_to(digest, "appel P01 fait: joint, tout va bien\nblabla pas une commande"))
    await world.run_once("2026-10-09T11:00")
    assert not any(k == "call" for k, _, _ in flags(world, "P01"))
    await world.run_once("2026-10-10T09:00")  # the next digest acknowledges both lines
    nxt = world.sent("digest", to="referent0@example.org")[-1].get_body(("plain",)).get_content()
    assert "P01" in nxt and "blabla pas une commande" in nxt


async def test_forged_digest_reply_changes_nothing(world: World) -> None:
    digest = world.sent("digest", to="referent0@example.org")[-1]
    world.deliver(world.reply_to(digest, "appel P01 fait: joint", sender="intruder@evil.example"))
    await world.run_once("2026-10-09T11:00")
    assert ("call", "mentee", "no_reply") in flags(world, "P01")
    assert len(world.folder("Unmatched")) == 1


async def test_referent_cannot_act_on_another_referents_pair(world: World) -> None:
    digest = world.sent("digest", to="referent0@example.org")[-1]
    world.deliver(world.reply_to(digest, "clôture P02"))
    await world.run_once("2026-10-09T11:00")
    with Session(world.engine) as s:
        assert show_pair(s, "P02")["state"] != "closed"

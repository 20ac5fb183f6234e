"""Outbox rows -> the bytes to send: template context from the database, tokens, threading.

The outbox composes a whole claim at once: `Composer.load` reads the rows' pairs, people and
introduction Message-IDs in a few set-based queries (`Batch`), then `compose` works from memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from mailflow.adapters.tables import OutboxMessage, Pair, Person
from mailflow.config import Settings
from mailflow.core.addresses import plus_address
from mailflow.core.model import EmailKind, Role, Track
from mailflow.core.tokens import TokenPurpose, TokenSigner
from mailflow.render import (
    AlertInfo,
    DigestInfo,
    DigestSection,
    MenteeInfo,
    MentorInfo,
    PairInfo,
    ProgrammeInfo,
    RecipientInfo,
    ReferentInfo,
    Renderer,
    build_message_bytes,
)

_IN_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Composed:
    raw: bytes  # the message as sent (CRLF line endings)
    mail_from: str  # the VERP bounce address
    rcpt_to: str


@dataclass
class Batch:
    """What composing some outbox rows needs, read in bulk: pairs, people, introductions' Message-IDs."""

    pairs: dict[int, Any] = field(default_factory=dict)
    people: dict[int, Any] = field(default_factory=dict)
    intros: dict[tuple[int, int], str] = field(default_factory=dict)  # (pair_id, person_id) -> Message-ID
    bounced: set[int] = field(default_factory=set)  # people whose address bounced since the load


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IN_CHUNK):
        yield unique[start : start + _IN_CHUNK]


def load_batch(session: Session, rows: Sequence[Any]) -> Batch:
    """Read everything `rows` (outbox rows) need to be composed: about 3 queries per 500 rows."""
    batch = Batch()
    pair_ids = {r.pair_id for r in rows if r.pair_id is not None}
    pairs, people = Pair.__table__, Person.__table__  # type: ignore[attr-defined]
    for chunk in _chunks(pair_ids):
        for pair in session.execute(select(pairs).where(pairs.c.id.in_(chunk))):
            batch.pairs[pair.id] = pair
        intro = select(OutboxMessage.pair_id, OutboxMessage.person_id, OutboxMessage.message_id).where(
            col(OutboxMessage.pair_id).in_(chunk), OutboxMessage.kind == EmailKind.INTRODUCTION.value
        )  # fmt: skip
        for pair_id, person_id, message_id in session.execute(intro):
            batch.intros.setdefault((pair_id, person_id), message_id)
    person_ids = {r.person_id for r in rows if r.person_id is not None}
    for pair in batch.pairs.values():
        person_ids.update((pair.mentor_id, pair.mentee_id, pair.referent_id))
    for chunk in _chunks(person_ids):
        for person in session.execute(select(people).where(people.c.id.in_(chunk))):
            batch.people[person.id] = person
    return batch


def outbox_rows_by_id(session: Session, ids: Sequence[int]) -> list[Any]:
    """Outbox rows as plain Core rows (attribute access), in the order of `ids`."""
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    found: dict[int, Any] = {}
    for chunk in _chunks(ids):
        for row in session.execute(select(table).where(table.c.id.in_(chunk))):
            found[row.id] = row
    return [found[i] for i in ids if i in found]


def programme_info(settings: Settings) -> ProgrammeInfo:
    m = settings.mail
    return ProgrammeInfo(
        name=m.programme_name, team_email=m.team_address or m.from_address, survey_url=m.survey_url,
        review_guide_url=m.review_guide_url, team_phone=m.team_phone, website=m.website,
    )  # fmt: skip


def digest_from_payload(payload: dict[str, Any]) -> DigestInfo:
    sections = tuple(DigestSection(s["title"], tuple(s["items"])) for s in payload.get("sections", []))
    base = DigestInfo(date=date.fromisoformat(payload["date"]), sections=sections, counts=payload.get("counts", {}))
    if payload.get("commands_help"):
        base = DigestInfo(base.date, base.sections, base.counts, tuple(payload["commands_help"]))
    return base


class Composer:
    def __init__(self, settings: Settings, renderer: Renderer | None = None) -> None:
        self.settings = settings
        self.renderer = renderer or Renderer(timezone_name=settings.calendar.timezone)
        self.signer = TokenSigner(settings.token_secrets())
        self.programme = programme_info(settings)

    def context(self, batch: Batch, row: Any, recipient: Any | None) -> dict[str, Any]:
        payload = json.loads(row.payload or "{}")
        if recipient is None:  # the team address
            rinfo = RecipientInfo(self.settings.mail.programme_name, "", Role.REFERENT, "fr")
        else:
            rinfo = RecipientInfo(recipient.first_name, recipient.last_name, Role(row.role), recipient.language)
        ctx: dict[str, Any] = {"programme": self.programme, "recipient": rinfo}
        if row.kind == EmailKind.DIGEST.value:
            ctx["digest"] = digest_from_payload(payload)
            return ctx
        pair = batch.pairs[row.pair_id]
        mentor, mentee, referent = (batch.people[i] for i in (pair.mentor_id, pair.mentee_id, pair.referent_id))
        ctx.update(
            pair=PairInfo(ref=pair.ref, track=Track(pair.track), matched_on=pair.matched_on),
            mentor=MentorInfo(first_name=mentor.first_name, job=mentor.job, sector=mentor.sector),
            mentee=MenteeInfo(first_name=mentee.first_name, email=mentee.email, sector=mentee.sector),
            referent=ReferentInfo(name=referent.first_name, email=referent.email),
        )
        if row.kind == EmailKind.URGENT_ALERT.value:
            who = Role(payload.get("who") or "mentee")
            writer = mentor if who is Role.MENTOR else mentee
            at = datetime.fromisoformat(payload["at"]) if payload.get("at") else row.created_at
            ctx["alert"] = AlertInfo(pair.ref, who, writer.first_name, at)
        return ctx

    @staticmethod
    def _thread(batch: Batch, row: Any) -> tuple[str | None, list[str]]:
        """A pair's emails thread under that person's introduction."""
        if row.pair_id is None or row.kind == EmailKind.INTRODUCTION.value or row.person_id is None:
            return None, []
        intro = batch.intros.get((row.pair_id, row.person_id))
        return (intro, [intro]) if intro else (None, [])

    def compose(self, session: Session, row: Any) -> Composed | None:
        """One row, its context read now (the outbox uses load_batch + compose_from for a whole claim)."""
        return self.compose_from(load_batch(session, [row]), row)

    def compose_from(self, batch: Batch, row: Any) -> Composed | None:
        """None when the recipient's address bounced (mail is held until it is corrected)."""
        recipient = batch.people.get(row.person_id) if row.person_id is not None else None
        if recipient is not None and row.role != Role.REFERENT.value and (recipient.bounced or recipient.id in batch.bounced):
            return None
        to_address = recipient.email if recipient is not None else row.to_address
        assert row.id is not None
        rendered = self.renderer.render(EmailKind(row.kind), recipient.language if recipient else "fr", self.context(batch, row, recipient))
        pair_id, person_id = row.pair_id or 0, row.person_id or 0
        from_address = self.settings.mail.from_address
        reply_to = plus_address(from_address, self.signer.sign(TokenPurpose.REPLY, pair_id, person_id, row.id))
        bounce_to = plus_address(from_address, self.signer.sign(TokenPurpose.BOUNCE, pair_id, person_id, row.id))
        in_reply_to, references = self._thread(batch, row)
        name = f"{recipient.first_name} {recipient.last_name}".strip() if recipient else self.settings.mail.programme_name
        raw = build_message_bytes(
            rendered, kind=EmailKind(row.kind), from_name=self.settings.mail.from_name, from_address=from_address,
            to_name=name, to_address=to_address, reply_to=reply_to, message_id=row.message_id, date=row.created_at,
            in_reply_to=in_reply_to, references=references,
        )  # fmt: skip
        return Composed(raw=raw, mail_from=bounce_to, rcpt_to=to_address)

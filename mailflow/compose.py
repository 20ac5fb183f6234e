"""An outbox row -> the EmailMessage to send: template context from the database, tokens, threading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from typing import Any

from sqlmodel import Session, select

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
    build_message,
)


@dataclass(frozen=True)
class Composed:
    message: EmailMessage
    mail_from: str  # the VERP bounce address
    rcpt_to: str


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

    def context(self, session: Session, row: OutboxMessage, recipient: Person | None) -> dict[str, Any]:
        payload = json.loads(row.payload or "{}")
        if recipient is None:  # the team address
            rinfo = RecipientInfo(self.settings.mail.programme_name, "", Role.REFERENT, "fr")
        else:
            rinfo = RecipientInfo(recipient.first_name, recipient.last_name, Role(row.role), recipient.language)
        ctx: dict[str, Any] = {"programme": self.programme, "recipient": rinfo}
        if row.kind == EmailKind.DIGEST.value:
            ctx["digest"] = digest_from_payload(payload)
            return ctx
        assert row.pair_id is not None
        pair = session.get(Pair, row.pair_id)
        assert pair is not None
        mentor, mentee, referent = (session.get(Person, i) for i in (pair.mentor_id, pair.mentee_id, pair.referent_id))
        assert mentor is not None and mentee is not None and referent is not None
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

    def _thread(self, session: Session, row: OutboxMessage) -> tuple[str | None, list[str]]:
        """A pair's emails thread under that person's introduction."""
        if row.pair_id is None or row.kind == EmailKind.INTRODUCTION.value or row.person_id is None:
            return None, []
        intro = session.exec(
            select(OutboxMessage.message_id).where(
                OutboxMessage.pair_id == row.pair_id,
                OutboxMessage.person_id == row.person_id,
                OutboxMessage.kind == EmailKind.INTRODUCTION.value,
            )  # fmt: skip
        ).first()
        return (intro, [intro]) if intro else (None, [])

    def compose(self, session: Session, row: OutboxMessage) -> Composed | None:
        """None when the recipient's address bounced (mail is held until it is corrected)."""
        recipient = session.get(Person, row.person_id) if row.person_id is not None else None
        if recipient is not None and recipient.bounced and row.role != Role.REFERENT.value:
            return None
        to_address = recipient.email if recipient is not None else row.to_address
        assert row.id is not None
        rendered = self.renderer.render(
            EmailKind(row.kind), recipient.language if recipient else "fr", self.context(session, row, recipient)
        )
        pair_id, person_id = row.pair_id or 0, row.person_id or 0
        from_address = self.settings.mail.from_address
        reply_to = plus_address(from_address, self.signer.sign(TokenPurpose.REPLY, pair_id, person_id, row.id))
        bounce_to = plus_address(from_address, self.signer.sign(TokenPurpose.BOUNCE, pair_id, person_id, row.id))
        in_reply_to, references = self._thread(session, row)
        name = f"{recipient.first_name} {recipient.last_name}".strip() if recipient else self.settings.mail.programme_name
        message = build_message(
            rendered, kind=EmailKind(row.kind), from_name=self.settings.mail.from_name, from_address=from_address,
            to_name=name, to_address=to_address, reply_to=reply_to, message_id=row.message_id, date=row.created_at,
            in_reply_to=in_reply_to, references=references,
        )  # fmt: skip
        return Composed(message=message, mail_from=bounce_to, rcpt_to=to_address)

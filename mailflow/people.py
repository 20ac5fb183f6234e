"""Correcting a person's address: bounced mail is released and the lifecycle hears of it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from mailflow.adapters.tables import OutboxMessage, Pair, Person
from mailflow.core.model import EmailKind, Event, EventKind, Role, State
from mailflow.store import event_row

OPEN_STATES = (State.AWAITING_FIRST_CONTACT.value, State.ACTIVE.value)


def correct_address(session: Session, person: Person, new_email: str, now: datetime) -> int:
    """Give `person` a new address; returns how many held or failed emails go out again (same Message-IDs)."""
    assert person.id is not None
    person.email, person.bounced = new_email.strip().lower(), False
    session.add(person)
    released = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.person_id == person.id,  # type: ignore[arg-type]
            col(OutboxMessage.state).in_(("held", "failed")),
            OutboxMessage.kind != EmailKind.DIGEST.value,  # type: ignore[arg-type]
        )
        .values(state="pending", attempts=0, not_before=now, created_at=now, last_error="", to_address=person.email)
    )
    if person.role in (Role.MENTOR.value, Role.MENTEE.value):
        pairs = session.exec(select(Pair).where(or_(Pair.mentor_id == person.id, Pair.mentee_id == person.id), col(Pair.state).in_(OPEN_STATES)))
        for pair in pairs:
            session.add(event_row(pair.id or 0, Event(EventKind.ADDRESS_CORRECTED, now, who=Role(person.role))))
            pair.next_due_at = now
            session.add(pair)
    return int(released.rowcount or 0)  # type: ignore[attr-defined]

"""`pairs import`: validated roster rows -> people and pairs, all or nothing, idempotent per pair_ref."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import Pair, Person
from mailflow.core.model import Event, EventKind, Role, State
from mailflow.core.roster import PairRow, PersonRow, RosterError
from mailflow.people import correct_address
from mailflow.store import event_row


@dataclass(frozen=True)
class ImportResult:
    created: int
    unchanged: int
    corrected: int  # bounced addresses corrected by the new roster


def _person(session: Session, known: dict[str, Person], role: Role, row: PersonRow | None, email: str, name: str, now: datetime) -> Person:
    person = known.get(email)
    if person is not None:
        return person
    if row is None:
        person = Person(email=email, role=role.value, first_name=name, created_at=now)
    else:
        person = Person(
            email=email, role=role.value, first_name=row.first_name, last_name=row.last_name, phone=row.phone,
            language=row.language, job=row.job, sector=row.sector, created_at=now,
        )  # fmt: skip
    session.add(person)
    session.flush()
    known[email] = person
    return person


def _role_conflicts(rows: list[PairRow], known: dict[str, Person]) -> list[str]:
    problems = []
    for row in rows:
        for role, email in (
            (Role.MENTOR, row.mentor.email),
            (Role.MENTEE, row.mentee.email),
            (Role.REFERENT, row.referent.email),
        ):
            person = known.get(email)
            if person is not None and person.role != role.value:
                problems.append(f"line {row.line}, column {role.value}_email: already known as a {person.role}")
    return problems


def _correct_bounced(session: Session, pair: Pair, row: PairRow, known: dict[str, Person], now: datetime) -> int:
    """A re-import that gives a bounced person a new address corrects it (mail was held until then)."""
    corrected = 0
    for person_id, new in ((pair.mentor_id, row.mentor), (pair.mentee_id, row.mentee)):
        person = session.get(Person, person_id)
        if person is None or not person.bounced or person.email == new.email or new.email in known:
            continue
        known.pop(person.email, None)
        correct_address(session, person, new.email, now)
        known[new.email] = person
        corrected += 1
    return corrected


def import_roster(engine: Engine, rows: list[PairRow], now: datetime) -> ImportResult:
    """One transaction: any conflict raises RosterError and nothing is written."""
    with session_scope(engine) as session:
        emails = {e for r in rows for e in (r.mentor.email, r.mentee.email, r.referent.email)}
        known = {p.email: p for p in session.exec(select(Person).where(col(Person.email).in_(emails)))} if emails else {}
        problems = _role_conflicts(rows, known)
        if problems:
            raise RosterError(problems)
        refs = [r.ref for r in rows]
        existing = {p.ref: p for p in session.exec(select(Pair).where(col(Pair.ref).in_(refs)))} if refs else {}
        created = corrected = 0
        for row in rows:
            if row.ref in existing:
                corrected += _correct_bounced(session, existing[row.ref], row, known, now)
                continue
            mentor = _person(session, known, Role.MENTOR, row.mentor, row.mentor.email, "", now)
            mentee = _person(session, known, Role.MENTEE, row.mentee, row.mentee.email, "", now)
            referent = _person(session, known, Role.REFERENT, None, row.referent.email, row.referent.name, now)
            pair = Pair(
                ref=row.ref, mentor_id=mentor.id or 0, mentee_id=mentee.id or 0, referent_id=referent.id or 0,
                track=row.track.value, matched_on=row.matched_on, state=State.AWAITING_FIRST_CONTACT.value,
                next_due_at=min(now, datetime.combine(row.matched_on, time.min, tzinfo=UTC)), created_at=now,
            )  # fmt: skip
            session.add(pair)
            session.flush()
            session.add(event_row(pair.id or 0, Event(EventKind.IMPORTED, now, data={"line": str(row.line)})))
            created += 1
        return ImportResult(created=created, unchanged=len(rows) - created, corrected=corrected)

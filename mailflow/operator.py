"""Operator decisions on a pair (close, pause, resume, call done, reassign): an event, then the lifecycle."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Engine
from sqlmodel import Session, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import Flag, Pair, Person
from mailflow.config import Settings
from mailflow.core.model import Event, EventKind, Role, State
from mailflow.effects import advance
from mailflow.errors import InputError
from mailflow.service import outgoing
from mailflow.store import get_pair


def _apply(engine: Engine, settings: Settings, ref: str, event: Event, now: datetime) -> str:
    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        decision = advance(session, pair, now, settings.policy(), outgoing(settings), [event])
        return decision.state.value


def _advance(session: Session, settings: Settings, pair: Pair, event: Event, now: datetime) -> None:
    advance(session, pair, now, settings.policy(), outgoing(settings), [event])


def close_pair(engine: Engine, settings: Settings, ref: str, now: datetime) -> str:
    with session_scope(engine) as session:
        state = get_pair(session, ref).state
    if state == State.CLOSED.value:
        raise InputError([f"pair {ref} is already closed"])
    if state == State.ENDED_NO_CONTACT.value:
        raise InputError([f"pair {ref} ended without first contact; there is nothing to close"])
    return _apply(engine, settings, ref, Event(EventKind.CLOSED_BY_OPERATOR, now), now)


def pause_pair(engine: Engine, settings: Settings, ref: str, until: date, now: datetime) -> str:
    if until <= now.astimezone(settings.tz).date():
        raise InputError([f"--until {until.isoformat()} is not in the future"])
    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        pair.paused_until = until
        session.add(pair)
        _advance(session, settings, pair, Event(EventKind.PAUSED, now, data={"until": until.isoformat()}), now)
        return pair.state


def resume_pair(engine: Engine, settings: Settings, ref: str, now: datetime) -> str:
    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        if pair.paused_until is None:
            raise InputError([f"pair {ref} is not paused"])
        pair.paused_until = None
        session.add(pair)
        _advance(session, settings, pair, Event(EventKind.RESUMED, now), now)
        return pair.state


def call_done(engine: Engine, settings: Settings, ref: str, who: Role, note: str, now: datetime) -> str:
    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        assert pair.id is not None
        open_call = session.exec(
            select(Flag).where(Flag.pair_id == pair.id, Flag.kind == "call", Flag.who == who.value, Flag.is_open == True)  # noqa: E712
        ).first()
        if open_call is None:
            raise InputError([f"pair {ref} has no open call flag for the {who.value}"])
        open_call.note = note[:1000]
        session.add(open_call)
        _advance(session, settings, pair, Event(EventKind.CALL_DONE, now, who=who, data={"note": note[:1000]}), now)
        return pair.state


def reassign_pair(engine: Engine, settings: Settings, ref: str, referent_email: str, now: datetime) -> str:
    email = referent_email.strip().lower()
    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        person = session.exec(select(Person).where(Person.email == email)).first()
        if person is None or person.role != Role.REFERENT.value:
            raise InputError([f"{referent_email} is not a known referent (import a pair with them first)"])
        pair.referent_id = person.id or 0
        session.add(pair)
        _advance(session, settings, pair, Event(EventKind.REASSIGNED, now, data={"referent_id": str(person.id)}), now)
        return pair.state

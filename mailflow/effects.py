"""Carry out the core's decisions inside the caller's transaction: events, flags, state, outbox rows.

Order inside one transaction (the caller commits once):
  1. the new inbound/operator events are appended to the pair's log;
  2. decide(pair, now, events) runs; each action becomes an event plus its effect
     (SendEmail -> an outbox row with a fixed Message-ID and a UNIQUE idempotency key,
      RaiseFlag/ClearFlag -> the flags projection), the state change is compare-and-set;
  3. next_due_at is stored for the indexed selection of due pairs.
decide() iterates to its own fixed point, so one call per transaction is enough.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select

from mailflow.adapters.tables import OutboxMessage, Pair, Person
from mailflow.core.lifecycle import decide
from mailflow.core.model import Decision, EmailKind, Event, EventKind, RaiseFlag, Role, SendEmail
from mailflow.core.policy import Policy
from mailflow.render import make_message_id
from mailflow.store import apply_flag_action, event_row, events_of, pair_view, people_by_id, to_event


class ConcurrentUpdate(Exception):
    """The pair changed under us (compare-and-set failed): retry the whole transaction."""


@dataclass(frozen=True)
class Outgoing:
    """What queuing an email needs besides the pair: our Message-ID domain and the team address."""

    domain: str
    team_address: str = ""


def idem_key(pair_ref: str, kind: EmailKind, to: Role, slot: str) -> str:
    return f"{pair_ref}:{kind.value}:{to.value}:{slot}"


def queue_email(
    session: Session, *, key: str, pair_id: int | None, person_id: int | None, to_address: str, kind: EmailKind,
    role: Role, slot: str, now: datetime, outgoing: Outgoing, payload: dict[str, str] | None = None,
) -> bool:  # fmt: skip
    """Insert one outbox row unless its idempotency key exists. Returns True when inserted."""
    if session.exec(select(OutboxMessage.id).where(OutboxMessage.idem_key == key)).first() is not None:
        return False
    session.add(
        OutboxMessage(
            idem_key=key,
            pair_id=pair_id,
            person_id=person_id,
            to_address=to_address,
            kind=kind.value,
            role=role.value,
            slot=slot,
            message_id=make_message_id(outgoing.domain),
            payload=json.dumps(payload or {}, ensure_ascii=False),
            not_before=now,
            created_at=now,
        )  # fmt: skip
    )
    return True


def _send(
    session: Session,
    pair: Pair,
    people: dict[int, Person],
    action: SendEmail,
    now: datetime,
    outgoing: Outgoing,
    cause: Event | None,
) -> None:
    person_id = {Role.MENTOR: pair.mentor_id, Role.MENTEE: pair.mentee_id, Role.REFERENT: pair.referent_id}[action.to]
    payload: dict[str, str] = {}
    if action.kind is EmailKind.URGENT_ALERT and cause is not None:
        payload = {"who": cause.who.value if cause.who else "", "at": cause.at.isoformat()}
    key = idem_key(pair.ref, action.kind, action.to, action.slot)
    queue_email(
        session, key=key, pair_id=pair.id, person_id=person_id, to_address=people[person_id].email, kind=action.kind,
        role=action.to, slot=action.slot, now=now, outgoing=outgoing, payload=payload,
    )  # fmt: skip
    if action.kind is EmailKind.URGENT_ALERT and outgoing.team_address:
        # the guide: anyone in the team can help -- the team address gets the alert too
        queue_email(
            session, key=key + ":team", pair_id=pair.id, person_id=None, to_address=outgoing.team_address,
            kind=action.kind, role=Role.REFERENT, slot=action.slot, now=now, outgoing=outgoing, payload=payload,
        )  # fmt: skip


def _record(
    session: Session,
    pair: Pair,
    people: dict[int, Person],
    decision: Decision,
    now: datetime,
    outgoing: Outgoing,
    cause: Event | None,
) -> None:
    assert pair.id is not None
    for action in decision.actions:
        if isinstance(action, SendEmail):
            _send(session, pair, people, action, now, outgoing, cause)
            event = Event(EventKind.EMAIL_QUEUED, now, who=action.to, email_kind=action.kind, slot=action.slot)
        else:
            apply_flag_action(session, pair.id, action, now)
            kind = EventKind.FLAG_RAISED if isinstance(action, RaiseFlag) else EventKind.FLAG_CLEARED
            event = Event(kind, now, who=action.who, flag=action.kind, reason=action.reason)
        session.add(event_row(pair.id, event))
    if decision.state.value != pair.state:
        session.add(event_row(pair.id, Event(EventKind.STATE_CHANGED, now, data={"from": pair.state, "to": decision.state.value})))
        _cas_state(session, pair, decision.state.value, now)


def _cas_state(session: Session, pair: Pair, new_state: str, now: datetime) -> None:
    result = session.execute(
        update(Pair)
        .where(Pair.id == pair.id, Pair.version == pair.version, Pair.state == pair.state)  # type: ignore[arg-type]
        .values(state=new_state, version=pair.version + 1, closed_at=now if new_state == "closed" else pair.closed_at)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentUpdate(pair.ref)
    session.refresh(pair)


def advance(
    session: Session, pair: Pair, now: datetime, policy: Policy, outgoing: Outgoing, new_events: Sequence[Event] = (),
    inbound_id: int | None = None,
) -> Decision:  # fmt: skip
    """Append `new_events`, then decide once (decide settles the pass itself) and record what it asks.

    Returns the final state and next due time, with every action recorded in this call.
    """
    assert pair.id is not None
    for event in new_events:
        session.add(event_row(pair.id, event, inbound_id=inbound_id))
    cause = new_events[-1] if new_events else None
    people = people_by_id(session, (pair.mentor_id, pair.mentee_id, pair.referent_id))
    session.flush()
    # decide() settles the pass itself (it records its own actions on a copy of the log and decides
    # again until nothing changes), so one call gives every action due now and the next due time.
    events = [to_event(r) for r in events_of(session, pair.id)]
    decision = decide(pair_view(pair, people), now, events, policy)
    if decision.actions or decision.state.value != pair.state:
        _record(session, pair, people, decision, now, outgoing, cause)
    pair.next_due_at = decision.next_due_at
    session.add(pair)
    return decision

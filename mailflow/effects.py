"""Carry out the core's decisions inside the caller's transaction: events, flags, state, outbox rows.

Order inside one transaction (the caller commits once):
  1. the new inbound/operator events are appended to the pair's log;
  2. decide(pair, now, events) runs; each action becomes an event plus its effect
     (SendEmail -> an outbox row with a fixed Message-ID and a UNIQUE idempotency key,
      RaiseFlag/ClearFlag -> the flags projection), the state change is compare-and-set;
  3. next_due_at is stored for the indexed selection of due pairs.
decide() iterates to its own fixed point, so one call per transaction is enough.
Events and the pair's columns are written through Core (no ORM object per event; the Pair object gets the
written values as committed state, so a later flush does not write them again); the inbox defers them to
write a whole chunk's at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from mailflow.adapters.tables import OutboxMessage, Pair, PairEvent, Person
from mailflow.core.lifecycle import decide
from mailflow.core.model import Decision, EmailKind, Event, EventKind, RaiseFlag, Role, SendEmail
from mailflow.core.policy import Policy
from mailflow.render import make_message_id
from mailflow.store import Deferred, apply_flag_action, as_read_back, event_logs, event_values, insert_events, pair_view, people_by_id, update_pair


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
    people: Mapping[int, Person],
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
    people: Mapping[int, Person],
    decision: Decision,
    now: datetime,
    outgoing: Outgoing,
    cause: Event | None,
) -> list[Event]:
    """Carry out the decision's actions; returns their events (the caller appends them to the log)."""
    assert pair.id is not None
    events = []
    for action in decision.actions:
        if isinstance(action, SendEmail):
            _send(session, pair, people, action, now, outgoing, cause)
            events.append(Event(EventKind.EMAIL_QUEUED, now, who=action.to, email_kind=action.kind, slot=action.slot))
        else:
            apply_flag_action(session, pair.id, action, now)
            kind = EventKind.FLAG_RAISED if isinstance(action, RaiseFlag) else EventKind.FLAG_CLEARED
            events.append(Event(kind, now, who=action.who, flag=action.kind, reason=action.reason))
    if decision.state.value != pair.state:
        events.append(Event(EventKind.STATE_CHANGED, now, data={"from": pair.state, "to": decision.state.value}))
        _cas_state(session, pair, decision.state.value, now)
    return events


def _cas_state(session: Session, pair: Pair, new_state: str, now: datetime) -> None:
    closed_at = now if new_state == "closed" else pair.closed_at
    result = session.connection().execute(
        update(Pair)
        .where(Pair.id == pair.id, Pair.version == pair.version, Pair.state == pair.state)  # type: ignore[arg-type]
        .values(state=new_state, version=pair.version + 1, closed_at=closed_at)
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(pair.ref)
    # what the row now holds, without a re-read (which would drop the caller's unflushed changes to the pair)
    for name, value in (("state", new_state), ("version", pair.version + 1), ("closed_at", closed_at)):
        set_committed_value(pair, name, value)


def advance(
    session: Session, pair: Pair, now: datetime, policy: Policy, outgoing: Outgoing, new_events: Sequence[Event] = (),
    inbound_id: int | None = None, *, log: list[Event] | None = None, people: Mapping[int, Person] | None = None,
    pair_values: Mapping[str, Any] | None = None, deferred: Deferred | None = None,
) -> Decision:  # fmt: skip
    """Append `new_events`, then decide once (decide settles the pass itself) and record what it asks.

    `log` is the pair's log so far when the caller already holds it (the inbox reads a chunk's logs in one
    query); it is extended in place with every event written here. `people`: the pair's members by id.
    `pair_values`: other columns of the pair to write with next_due_at (one UPDATE). `deferred`: the event rows
    and the pair's columns go there, for the caller to write later in the same transaction.
    Returns the final state and next due time, with every action recorded in this call.
    """
    assert pair.id is not None
    if log is None:
        session.flush()  # events the caller added through the ORM belong to the log
        log = event_logs(session, [pair.id])[pair.id]
    if people is None:
        people = people_by_id(session, (pair.mentor_id, pair.mentee_id, pair.referent_id))
    rows = [event_values(pair.id, event, inbound_id) for event in new_events]
    log.extend(as_read_back(row) for row in rows)
    # decide() settles the pass itself (it records its own actions on a copy of the log and decides
    # again until nothing changes), so one call gives every action due now and the next due time.
    decision = decide(pair_view(pair, people), now, log, policy)
    if decision.actions or decision.state.value != pair.state:
        cause = new_events[-1] if new_events else None
        recorded = [event_values(pair.id, e) for e in _record(session, pair, people, decision, now, outgoing, cause)]
        log.extend(as_read_back(row) for row in recorded)
        rows += recorded
    values = {**(pair_values or {}), "next_due_at": decision.next_due_at}
    if deferred is not None:
        deferred.insert(PairEvent.__table__, rows)  # type: ignore[attr-defined]
        deferred.update_pair(pair, **values)
    else:
        conn = session.connection()
        insert_events(conn, rows)
        update_pair(conn, pair, **values)
    return decision

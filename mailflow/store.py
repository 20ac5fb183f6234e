"""Reading and writing pairs through the SQL adapter, as the core's plain types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import Session, col, select

from mailflow.adapters.tables import Flag, Pair, PairEvent, Person
from mailflow.core.model import (
    ClearFlag,
    EmailKind,
    Event,
    EventKind,
    FlagKind,
    Intent,
    PairView,
    RaiseFlag,
    Role,
    State,
)
from mailflow.errors import NotFoundError


def pair_view(pair: Pair, people: dict[int, Person]) -> PairView:
    return PairView(
        ref=pair.ref,
        state=State(pair.state),
        matched_on=pair.matched_on,
        paused_until=pair.paused_until,
        mentor_bounced=people[pair.mentor_id].bounced,
        mentee_bounced=people[pair.mentee_id].bounced,
    )


def to_event(row: Any) -> Event:
    """A pair_events row (ORM object or Core row) as the core's event."""
    return Event(
        kind=EventKind(row.kind),
        at=row.at,
        who=Role(row.who) if row.who else None,
        intent=Intent(row.intent) if row.intent else None,
        email_kind=EmailKind(row.email_kind) if row.email_kind else None,
        slot=row.slot,
        flag=FlagKind(row.flag) if row.flag else None,
        reason=row.reason,
        data=json.loads(row.data or "{}"),
    )


def event_values(pair_id: int, event: Event, inbound_id: int | None = None) -> dict[str, Any]:
    """The pair_events row of `event`, as column values (for a Core insert)."""
    return {
        "pair_id": pair_id,
        "at": event.at,
        "kind": event.kind.value,
        "who": event.who.value if event.who else None,
        "intent": event.intent.value if event.intent else None,
        "email_kind": event.email_kind.value if event.email_kind else None,
        "slot": event.slot,
        "flag": event.flag.value if event.flag else None,
        "reason": event.reason,
        "data": json.dumps(dict(event.data), ensure_ascii=False, sort_keys=True),
        "inbound_id": inbound_id,
    }


def event_row(pair_id: int, event: Event, inbound_id: int | None = None) -> PairEvent:
    return PairEvent(**event_values(pair_id, event, inbound_id))


def as_read_back(values: dict[str, Any]) -> Event:
    """The event of a row about to be written, exactly as a later read of the log returns it (UTC, JSON data)."""
    return to_event(SimpleNamespace(**{**values, "at": values["at"].astimezone(UTC)}))  # type: ignore[arg-type]


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append event rows in one statement (Core: no ORM object per event)."""
    if rows:
        session.connection().execute(insert(PairEvent.__table__), list(rows))  # type: ignore[attr-defined]


def event_logs(session: Session, pair_ids: Sequence[int]) -> dict[int, list[Event]]:
    """Several pairs' logs (one query), as the core's events, oldest first."""
    return {pid: [to_event(r) for r in rows] for pid, rows in events_by_pair(session, pair_ids).items()}


def get_pair(session: Session, ref: str, *, for_update: bool = False) -> Pair:
    query = select(Pair).where(Pair.ref == ref)
    if for_update:
        query = query.with_for_update()
    pair = session.exec(query).first()
    if pair is None:
        raise NotFoundError(f"no pair with ref {ref!r} (see `mailflow pairs list`)")
    return pair


def people_by_id(session: Session, ids: Iterable[int]) -> dict[int, Person]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {p.id: p for p in session.exec(select(Person).where(col(Person.id).in_(wanted))) if p.id is not None}


def events_of(session: Session, pair_id: int) -> list[PairEvent]:
    return list(session.exec(select(PairEvent).where(PairEvent.pair_id == pair_id).order_by(col(PairEvent.id))))


def events_by_pair(session: Session, pair_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Many pairs' logs at once, READ-ONLY: plain rows with PairEvent's attribute names, not ORM instances.

    Digests, stats and exports read every pair's log; building (and identity-mapping) an ORM object per
    event made a 100,000-pair programme's digests take minutes (BENCHMARKS.md).
    """
    out: dict[int, list[Any]] = {pid: [] for pid in pair_ids}
    if not pair_ids:
        return out
    table = PairEvent.__table__  # type: ignore[attr-defined]
    rows = session.connection().execute(select(table).where(table.c.pair_id.in_(pair_ids)).order_by(table.c.id))
    for row in rows:
        out[row.pair_id].append(row)
    return out


def open_flags(session: Session, pair_ids: Sequence[int] | None = None) -> list[Flag]:
    query = select(Flag).where(Flag.is_open == True)  # noqa: E712
    if pair_ids is not None:
        query = query.where(col(Flag.pair_id).in_(pair_ids))
    return list(session.exec(query.order_by(col(Flag.id))))


def apply_flag_action(session: Session, pair_id: int, action: RaiseFlag | ClearFlag, now: datetime) -> None:
    """Keep the flags table (a projection of the flag events) in step with the event log."""
    who = action.who.value if action.who else None
    current = session.exec(
        select(Flag).where(Flag.pair_id == pair_id, Flag.kind == action.kind.value, Flag.who == who, Flag.is_open == True)  # noqa: E712
    ).first()
    if isinstance(action, RaiseFlag):
        if current is None:
            attempt = 1 + (
                session.exec(
                    select(func.count())
                    .select_from(Flag)
                    .where(Flag.pair_id == pair_id, Flag.kind == action.kind.value, Flag.who == who)
                ).one()
            )
            session.add(Flag(pair_id=pair_id, kind=action.kind.value, who=who, reason=action.reason, since=now, attempt=attempt))
        return
    if current is not None:
        current.is_open = False
        current.closed_at = now
        current.closed_reason = action.reason
        session.add(current)


def flag_json(flag: Flag) -> dict[str, Any]:
    return {"kind": flag.kind, "who": flag.who, "reason": flag.reason, "since": flag.since.isoformat()}

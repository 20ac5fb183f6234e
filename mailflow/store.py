"""Reading and writing pairs through the SQL adapter, as the core's plain types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import case, func, insert, update
from sqlalchemy.orm.attributes import set_committed_value
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
    data = row.data
    return Event(
        kind=_EVENT_KINDS[row.kind],
        at=row.at,
        who=_ROLES[row.who] if row.who else None,
        intent=_INTENTS[row.intent] if row.intent else None,
        email_kind=_EMAIL_KINDS[row.email_kind] if row.email_kind else None,
        slot=row.slot,
        flag=_FLAG_KINDS[row.flag] if row.flag else None,
        reason=row.reason,
        data=json.loads(data) if data and data != "{}" else {},
    )


# value -> member: a dict lookup instead of an Enum call per column of every event read (logs are read whole)
_EVENT_KINDS = {m.value: m for m in EventKind}
_ROLES = {m.value: m for m in Role}
_INTENTS = {m.value: m for m in Intent}
_EMAIL_KINDS = {m.value: m for m in EmailKind}
_FLAG_KINDS = {m.value: m for m in FlagKind}


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
    same = (Flag.pair_id == pair_id, Flag.kind == action.kind.value, Flag.who == who)
    if isinstance(action, ClearFlag):  # at most one is open per (pair, kind, who); objects in the session follow
        values = {"is_open": False, "closed_at": now, "closed_reason": action.reason}
        session.execute(update(Flag).where(*same, Flag.is_open == True).values(**values))  # type: ignore[call-overload]  # noqa: E712
        return
    is_open = case((Flag.is_open == True, 1), else_=0)  # type: ignore[arg-type]  # noqa: E712
    flagged, now_open = session.exec(select(func.count(), func.coalesce(func.sum(is_open), 0)).select_from(Flag).where(*same)).one()
    if not now_open:
        values = {"pair_id": pair_id, "kind": action.kind.value, "who": who, "reason": action.reason, "since": now, "is_open": True,
                  "closed_at": None, "closed_reason": None, "attempt": 1 + flagged, "note": ""}  # fmt: skip
        session.connection().execute(insert(Flag.__table__).values(**values))  # type: ignore[attr-defined]


def update_pair(session: Session, pair: Pair, **values: Any) -> None:
    """Write columns of the pair's row at once (Core) and set them on the object without marking it changed."""
    session.connection().execute(update(Pair).where(Pair.id == pair.id).values(**values))  # type: ignore[arg-type]
    for name, value in values.items():
        set_committed_value(pair, name, value)


def flag_json(flag: Flag) -> dict[str, Any]:
    return {"kind": flag.kind, "who": flag.who, "reason": flag.reason, "since": flag.since.isoformat()}

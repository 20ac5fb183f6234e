"""Reading and writing pairs through the SQL adapter, as the core's plain types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, insert, true, update
from sqlalchemy import select as sa_select
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


def pair_view(pair: Pair, people: Mapping[int, Person]) -> PairView:
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
    return _event(row.at, row.kind, row.who, row.intent, row.email_kind, row.slot, row.flag, row.reason, row.data)


def _event(
    at: datetime, kind: str, who: str | None, intent: str | None, email_kind: str | None, slot: str | None, flag: str | None,
    reason: str | None, data: str | None,
) -> Event:  # fmt: skip
    return Event(
        kind=_EVENT_KINDS[kind],
        at=at,
        who=_ROLES[who] if who else None,
        intent=_INTENTS[intent] if intent else None,
        email_kind=_EMAIL_KINDS[email_kind] if email_kind else None,
        slot=slot,
        flag=_FLAG_KINDS[flag] if flag else None,
        reason=reason,
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
    v = values
    return _event(v["at"].astimezone(UTC), v["kind"], v["who"], v["intent"], v["email_kind"], v["slot"], v["flag"], v["reason"], v["data"])


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append event rows in one statement (Core: no ORM object per event)."""
    if rows:
        conn.execute(_INSERT_EVENT, list(rows))


def event_logs(session: Session, pair_ids: Sequence[int]) -> dict[int, list[Event]]:
    """Several pairs' logs (one query), as the core's events, oldest first."""
    out: dict[int, list[Event]] = {pid: [] for pid in pair_ids}
    if pair_ids:
        t = _EVENTS
        columns = (t.c.pair_id, t.c.at, t.c.kind, t.c.who, t.c.intent, t.c.email_kind, t.c.slot, t.c.flag, t.c.reason, t.c.data)
        query = sa_select(*columns).where(t.c.pair_id.in_(pair_ids)).order_by(t.c.id)
        for pair_id, *values in session.connection().execute(query):  # plain tuples: a pair's log is read whole
            out[pair_id].append(_event(*values))
    return out


_EVENTS = PairEvent.__table__  # type: ignore[attr-defined]
_INSERT_EVENT = insert(_EVENTS)


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
    session.flush()  # Core statements below: flags added through the ORM must be in the table
    who = action.who.value if action.who else None
    params = {"pair_id_": pair_id, "kind_": action.kind.value, "who_": who}
    conn = session.connection()
    if isinstance(action, ClearFlag):  # at most one is open per (pair, kind, who)
        conn.execute(_CLEAR_FLAG[who is None], {**params, "closed_at_": now, "closed_reason_": action.reason})
        for state in list(session.identity_map.all_states()):  # Flag objects already loaded must not show it open
            if state.class_ is Flag and state.dict.get("pair_id") == pair_id:
                session.expire(state.obj())
        return
    flagged, now_open = conn.execute(_COUNT_FLAGS[who is None], params).one()
    if not now_open:
        values = {"pair_id": pair_id, "kind": action.kind.value, "who": who, "reason": action.reason, "since": now, "is_open": True,
                  "closed_at": None, "closed_reason": None, "attempt": 1 + flagged, "note": ""}  # fmt: skip
        conn.execute(_INSERT_FLAG, values)


def _same_flag(who_is_null: bool) -> tuple[Any, ...]:
    t = _FLAGS
    who = t.c.who.is_(None) if who_is_null else t.c.who == bindparam("who_")
    return (t.c.pair_id == bindparam("pair_id_"), t.c.kind == bindparam("kind_"), who)


_FLAGS = Flag.__table__  # type: ignore[attr-defined]
_INSERT_FLAG = insert(_FLAGS)
_CLEAR_FLAG = {
    null: update(_FLAGS)
    .where(*_same_flag(null), _FLAGS.c.is_open == true())
    .values(is_open=False, closed_at=bindparam("closed_at_"), closed_reason=bindparam("closed_reason_"))
    for null in (False, True)
}
_COUNT_FLAGS = {
    null: select(func.count(), func.coalesce(func.sum(case((_FLAGS.c.is_open == true(), 1), else_=0)), 0)).where(*_same_flag(null))
    for null in (False, True)
}


def update_pair(conn: Connection, pair: Pair, **values: Any) -> None:
    """Write columns of the pair's row at once (Core) and set them on the object without marking it changed."""
    conn.execute(_UPDATE_PAIR, {"pair_id_": pair.id, **values})  # the SET clause is the other keys
    for name, value in values.items():
        set_committed_value(pair, name, value)


_PAIRS = Pair.__table__  # type: ignore[attr-defined]
_UPDATE_PAIR = update(_PAIRS).where(_PAIRS.c.id == bindparam("pair_id_"))


@dataclass
class Deferred:
    """Rows to write together later in the same transaction (the inbox's chunk: a few statements, not a few per message).

    A table's rows are inserted together, tables in the order they first came (inbound rows before the events
    naming them); pair columns are merged per pair, the last value winning. The holder writes them before anything reads those tables back.
    """

    inserts: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (table, row)
    pairs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def insert(self, table: Any, rows: Iterable[dict[str, Any]]) -> None:
        self.inserts.extend((table, row) for row in rows)

    def update_pair(self, pair: Pair, **values: Any) -> None:
        assert pair.id is not None
        self.pairs.setdefault(pair.id, {}).update(values)
        for name, value in values.items():
            set_committed_value(pair, name, value)

    def write(self, conn: Connection) -> None:
        by_table: dict[Any, list[dict[str, Any]]] = {}
        for table, row in self.inserts:  # a table's rows together, tables in the order they first came
            by_table.setdefault(table, []).append(row)
        for table, rows in by_table.items():
            conn.execute(insert(table), rows)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for pair_id, values in self.pairs.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({"pair_id_": pair_id, **values})
        for params in by_columns.values():
            conn.execute(_UPDATE_PAIR, params)
        self.inserts.clear()
        self.pairs.clear()


def flag_json(flag: Flag) -> dict[str, Any]:
    return {"kind": flag.kind, "who": flag.who, "reason": flag.reason, "since": flag.since.isoformat()}

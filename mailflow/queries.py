"""Read-only views for operators: pairs list/show and calls list, as the contract's JSON shapes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.tables import Flag, Pair, PairEvent, Person
from mailflow.store import events_of, flag_json, get_pair, open_flags, people_by_id


def _event_json(row: PairEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"at": row.at.isoformat(), "kind": row.kind}
    for key in ("who", "intent", "email_kind", "slot", "flag", "reason"):
        value = getattr(row, key)
        if value is not None:
            out[key] = value
    data = json.loads(row.data or "{}")
    out.update({k: v for k, v in data.items() if k not in out})
    return out


def _pair_json(pair: Pair, flags: list[Flag], people: dict[int, Person]) -> dict[str, Any]:
    mentor, mentee, referent = people[pair.mentor_id], people[pair.mentee_id], people[pair.referent_id]
    return {
        "ref": pair.ref,
        "state": pair.state,
        "flags": [flag_json(f) for f in flags],
        "matched_on": pair.matched_on.isoformat(),
        "last_reply_at": pair.last_reply_at.isoformat() if pair.last_reply_at else None,
        "track": pair.track,
        "paused_until": pair.paused_until.isoformat() if pair.paused_until else None,
        "mentor": {"first_name": mentor.first_name, "last_name": mentor.last_name, "email": mentor.email, "phone": mentor.phone},
        "mentee": {"first_name": mentee.first_name, "last_name": mentee.last_name, "email": mentee.email, "phone": mentee.phone},
        "referent": {"name": referent.first_name, "email": referent.email},
    }


def list_pairs(session: Session, *, state: str | None = None, referent: str | None = None) -> list[dict[str, Any]]:
    query = select(Pair).order_by(col(Pair.ref))
    if state:
        query = query.where(Pair.state == state)
    pairs = list(session.exec(query))
    people = people_by_id(session, {i for p in pairs for i in (p.mentor_id, p.mentee_id, p.referent_id)})
    if referent:
        pairs = [p for p in pairs if people[p.referent_id].email == referent.lower()]
    flags: dict[int, list[Flag]] = {}
    for flag in open_flags(session, [p.id for p in pairs if p.id is not None]):
        flags.setdefault(flag.pair_id, []).append(flag)
    return [_pair_json(p, flags.get(p.id or 0, []), people) for p in pairs]


def show_pair(session: Session, ref: str) -> dict[str, Any]:
    pair = get_pair(session, ref)
    assert pair.id is not None
    people = people_by_id(session, (pair.mentor_id, pair.mentee_id, pair.referent_id))
    out = _pair_json(pair, open_flags(session, [pair.id]), people)
    out["events"] = [_event_json(e) for e in events_of(session, pair.id)]
    return out


def list_calls(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        flags = [f for f in open_flags(session) if f.kind == "call"]
        pairs = {p.id: p for p in session.exec(select(Pair).where(col(Pair.id).in_({f.pair_id for f in flags})))} if flags else {}
        people = people_by_id(session, {i for p in pairs.values() for i in (p.mentor_id, p.mentee_id)})
        out = []
        for flag in flags:
            pair = pairs[flag.pair_id]
            person = people[pair.mentor_id if flag.who == "mentor" else pair.mentee_id]
            out.append({
                "ref": pair.ref, "who": flag.who, "reason": flag.reason, "phone": person.phone,
                "name": person.first_name, "since": flag.since.isoformat(), "attempt": flag.attempt,
            })  # fmt: skip
        return sorted(out, key=lambda c: (c["since"], c["ref"]))

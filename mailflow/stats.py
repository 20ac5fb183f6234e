"""The programme's indicators (`mailflow stats`), computed from the pairs and their event logs.

`pairs_by_state` is today's snapshot of every pair; every other figure counts events whose
programme-local date is inside [from_date, to_date] (either bound may be open). Definitions:
- first contact: days (programme calendar) from the first introduction queued to the
  STATE_CHANGED to `active`; median and p90 (nearest rank) over pairs activated in the period;
- follow-up response: a round is one `followup` queued to one person; it is answered when that
  person sends a human REPLY after it and before their next round; rate = answered / sent;
- closures by reason: STATE_CHANGED to `closed` (closed_by_operator, split by whether a
  closure_requested flag was raised before) and to `ended_no_contact`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.tables import Pair, PairEvent
from mailflow.core.calendar import local_date
from mailflow.core.model import EmailKind, EventKind, FlagKind, Intent, State
from mailflow.core.policy import Policy
from mailflow.store import events_by_pair


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) -- easy to compute by hand."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class _Window:
    def __init__(self, policy: Policy, start: date | None, end: date | None) -> None:
        self.policy, self.start, self.end = policy, start, end

    def __contains__(self, event: PairEvent) -> bool:
        day = local_date(event.at, self.policy)
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)


def _to(event: PairEvent) -> str | None:
    return json.loads(event.data or "{}").get("to") if event.kind == EventKind.STATE_CHANGED.value else None


def _first_contact_days(events: list[PairEvent], w: _Window) -> int | None:
    intro = next((e for e in events if e.kind == EventKind.EMAIL_QUEUED.value and e.email_kind == EmailKind.INTRODUCTION.value), None)
    active = next((e for e in events if e.kind == EventKind.STATE_CHANGED.value and _to(e) == "active"), None)
    if intro is None or active is None or active not in w:
        return None
    return (local_date(active.at, w.policy) - local_date(intro.at, w.policy)).days


def _followup_rounds(events: list[PairEvent], w: _Window) -> tuple[int, int]:
    sent = answered = 0
    for who in ("mentor", "mentee"):
        rounds = [e for e in events if e.kind == EventKind.EMAIL_QUEUED.value and e.email_kind == EmailKind.FOLLOWUP.value and e.who == who]
        replies = [e for e in events if e.kind == EventKind.REPLY.value and e.who == who]
        for i, r in enumerate(rounds):
            if r not in w:
                continue
            nxt = rounds[i + 1].id if i + 1 < len(rounds) else None
            sent += 1
            answered += any((e.id or 0) > (r.id or 0) and (nxt is None or (e.id or 0) < nxt) for e in replies)
    return sent, answered


def _closure(events: list[PairEvent], w: _Window) -> str | None:
    for i, e in enumerate(events):
        if e.kind != EventKind.STATE_CHANGED.value or e not in w:
            continue
        if _to(e) == "ended_no_contact":
            return "ended_no_contact"
        if _to(e) == "closed":
            requested = any(x.kind == EventKind.FLAG_RAISED.value and x.flag == FlagKind.CLOSURE_REQUESTED.value for x in events[:i])
            return "closed_on_request" if requested else "closed_by_operator"
    return None


def _summary(values: list[int]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median": statistics.median(values) if values else None,
        "p90": percentile(values, 0.9),
    }


def compute_stats(source: Session | Engine, from_date: date | None, to_date: date | None, policy: Policy | None = None) -> dict[str, Any]:
    """The indicators as a JSON-ready dict (see the module docstring for each definition)."""
    if isinstance(source, Session):
        return _compute(source, from_date, to_date, policy or Policy())
    with Session(source) as session:
        return _compute(session, from_date, to_date, policy or Policy())


def _compute(session: Session, from_date: date | None, to_date: date | None, policy: Policy) -> dict[str, Any]:
    w = _Window(policy, from_date, to_date)
    pairs = list(session.exec(select(Pair).order_by(col(Pair.id))))
    logs = events_by_pair(session, [p.id for p in pairs if p.id is not None])
    by_state = Counter(p.state for p in pairs)
    first_contact, closures = [], Counter[str]()
    sent = answered = raised = done = reached = 0
    raised_by_reason: Counter[str] = Counter()
    available: set[int] = set()
    for pair in pairs:
        events = logs[pair.id or 0]
        days = _first_contact_days(events, w)
        if days is not None:
            first_contact.append(days)
        s, a = _followup_rounds(events, w)
        sent, answered = sent + s, answered + a
        for e in (e for e in events if e in w):
            if e.kind == EventKind.FLAG_RAISED.value and e.flag == FlagKind.CALL.value:
                raised += 1
                raised_by_reason[e.reason or ""] += 1
            elif e.kind == EventKind.CALL_DONE.value:
                done += 1
            elif e.kind == EventKind.REPLY.value and e.intent == Intent.AVAILABLE.value and e.who == "mentor":
                available.add(pair.mentor_id)
        reached += any(e.kind == EventKind.EMAIL_QUEUED.value and e.email_kind == EmailKind.CHECKPOINT.value and e in w for e in events)
        reason = _closure(events, w)
        if reason:
            closures[reason] += 1
    return {
        "period": {"from": from_date.isoformat() if from_date else None, "to": to_date.isoformat() if to_date else None},
        "pairs_total": len(pairs),
        "pairs_by_state": {s.value: by_state.get(s.value, 0) for s in State},
        "first_contact_days": _summary(first_contact),
        "followup_response": {"rounds_sent": sent, "rounds_answered": answered,
                              "rate": round(answered / sent, 3) if sent else None},  # fmt: skip
        "calls": {"raised": raised, "done": done, "raised_by_reason": dict(sorted(raised_by_reason.items()))},
        "pairs_reaching_6_months": reached,
        "closures_by_reason": {k: closures.get(k, 0) for k in ("closed_by_operator", "closed_on_request", "ended_no_contact")},
        "ended_without_contact": closures.get("ended_no_contact", 0),
        "mentors_available_again": len(available),
    }

"""`mailflow export pairs --csv FILE`: one row per pair for funders' reporting, without identities.

Only what the reporting needs: no names, email addresses or phone numbers (the pair ref is the
key back to our own records). Cells that a spreadsheet would read as a formula (= + - @ TAB CR
at the start) get a leading `'`. The export itself is recorded in the audit log (counts only).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import AuditEvent, Pair, PairEvent, Person
from mailflow.core.model import EmailKind, EventKind
from mailflow.store import events_by_pair, people_by_id

COLUMNS = (
    "pair_ref", "track", "state", "matched_on", "first_contact_on", "ended_on", "end_reason", "followups_sent",
    "replies_mentor", "replies_mentee", "calls_raised", "calls_done", "checkpoint_sent", "mentor_sector", "mentee_sector",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _day(event: PairEvent | None) -> str:
    return event.at.date().isoformat() if event else ""


def _state_change(events: list[PairEvent], to: str) -> PairEvent | None:
    return next((e for e in events if e.kind == EventKind.STATE_CHANGED.value and json.loads(e.data).get("to") == to), None)


def _row(pair: Pair, events: list[PairEvent], people: dict[int, Person]) -> dict[str, Any]:
    def count(kind: EventKind, **match: str) -> int:
        return sum(1 for e in events if e.kind == kind.value and all(getattr(e, k) == v for k, v in match.items()))

    closed, ended = _state_change(events, "closed"), _state_change(events, "ended_no_contact")
    return {
        "pair_ref": pair.ref, "track": pair.track, "state": pair.state, "matched_on": pair.matched_on.isoformat(),
        "first_contact_on": _day(_state_change(events, "active")), "ended_on": _day(closed or ended),
        "end_reason": "closed" if closed else ("ended_no_contact" if ended else ""),
        "followups_sent": len({e.slot for e in events if e.kind == EventKind.EMAIL_QUEUED.value and e.email_kind == EmailKind.FOLLOWUP.value}),
        "replies_mentor": count(EventKind.REPLY, who="mentor"), "replies_mentee": count(EventKind.REPLY, who="mentee"),
        "calls_raised": count(EventKind.FLAG_RAISED, flag="call"), "calls_done": count(EventKind.CALL_DONE),
        "checkpoint_sent": "yes" if count(EventKind.EMAIL_QUEUED, email_kind=EmailKind.CHECKPOINT.value) else "no",
        "mentor_sector": people[pair.mentor_id].sector, "mentee_sector": people[pair.mentee_id].sector,
    }  # fmt: skip


def export_pairs_csv(engine: Engine, path: Path, now: datetime | None = None) -> int:
    """Write the CSV (UTF-8 with BOM, for spreadsheets); returns the number of pairs written."""
    with Session(engine) as session:
        pairs = list(session.exec(select(Pair).order_by(col(Pair.ref))))
        people = people_by_id(session, {i for p in pairs for i in (p.mentor_id, p.mentee_id)})
        logs = events_by_pair(session, [p.id for p in pairs if p.id is not None])
        rows = [_row(p, logs[p.id or 0], people) for p in pairs]
    with Path(path).open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([neutralise(row[c]) for c in COLUMNS])
    if now is not None:
        with session_scope(engine) as session:
            session.add(AuditEvent(at=now, action="export_pairs", detail=json.dumps({"pairs": len(rows)})))
    return len(rows)

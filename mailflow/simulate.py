"""`mailflow simulate`: the real engine on a copy of the data, a virtual clock, nothing sent.

The copy is a throwaway SQLite database (whatever the real engine is), so the simulation can
never touch the live data. Time jumps from one due instant to the next (the same indexed
`next_due_at` the daemon sleeps on), the pass runs there, and queued emails are marked as sent.
Scripted replies (`--replies FILE`, JSON lines `{"at", "ref", "who", "intent"}`) are applied at
their time as if the inbox had read them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from mailflow.adapters.db import make_engine, migrate, session_scope
from mailflow.adapters.tables import Flag, OutboxMessage, Pair, PairEvent, Person
from mailflow.clock import parse_now
from mailflow.config import Settings
from mailflow.core.model import EmailKind, Event, EventKind, Intent, Role
from mailflow.effects import advance
from mailflow.errors import InputError
from mailflow.scheduler import next_due, run_pass
from mailflow.service import outgoing
from mailflow.store import get_pair

COPIED = (Person, Pair, PairEvent, Flag, OutboxMessage)


@dataclass(frozen=True)
class Reply:
    at: datetime
    ref: str
    who: Role
    intent: Intent


def read_replies(path: Path, settings: Settings) -> list[Reply]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
            out.append(Reply(parse_now(item["at"], settings.tz), item["ref"], Role(item["who"]), Intent(item.get("intent", "ok"))))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError([f"{path}: line {number}: expected {{'at', 'ref', 'who', 'intent'}} ({exc})"]) from None
    return sorted(out, key=lambda r: r.at)


def copy_database(source: Engine, folder: Path) -> Engine:
    target = make_engine(f"sqlite:///{folder / 'simulation.db'}")
    migrate(target)
    with Session(source) as src, session_scope(target) as dst:
        for table in COPIED:
            for row in src.exec(select(table)):
                data = row.model_dump()
                if table is PairEvent:
                    data["inbound_id"] = None  # inbound messages are not copied
                dst.add(table(**data))
            dst.flush()
    return target


def _lines(engine: Engine, since_event: int, settings: Settings) -> Iterator[tuple[str, datetime, str]]:
    with Session(engine) as session:
        refs = {p.id: p.ref for p in session.exec(select(Pair))}
        for ev in session.exec(select(PairEvent).where(col(PairEvent.id) > since_event).order_by(col(PairEvent.id))):
            if ev.kind == EventKind.EMAIL_QUEUED.value:
                text = f"email {ev.email_kind} -> {ev.who}"
            elif ev.kind == EventKind.FLAG_RAISED.value:
                text = f"flag {ev.flag}" + (f" ({ev.who})" if ev.who else "") + f" reason={ev.reason}"
            elif ev.kind == EventKind.FLAG_CLEARED.value:
                text = f"flag {ev.flag} cleared" + (f" ({ev.who})" if ev.who else "")
            elif ev.kind == EventKind.STATE_CHANGED.value:
                text = "state -> " + json.loads(ev.data).get("to", "?")
            elif ev.kind == EventKind.REPLY.value:
                text = f"reply from {ev.who} intent={ev.intent}"
            else:
                continue
            yield refs.get(ev.pair_id, "?"), ev.at, text


def simulate(source: Engine, settings: Settings, start: datetime, days: int, replies: list[Reply]) -> dict[str, list[str]]:
    """Per pair, the dated lines of what the engine would do (local time, weekday shown)."""
    end = start + timedelta(days=days)
    policy, out_cfg, tz = settings.policy(), outgoing(settings), settings.tz
    with tempfile.TemporaryDirectory(prefix="mailflow-sim-") as folder:
        engine = copy_database(source, Path(folder))
        with Session(engine) as s:
            first_event = max((e.id or 0 for e in s.exec(select(PairEvent))), default=0)
        with session_scope(engine) as session:  # the simulation starts now for every pair
            session.execute(update(Pair).where(col(Pair.next_due_at).is_not(None)).values(next_due_at=start))
        pending = list(replies)
        now = start
        while now <= end:
            while pending and pending[0].at <= now:
                _apply_reply(engine, settings, pending.pop(0))
            run_pass(engine, now, policy, out_cfg)
            _mark_sent(engine, now)
            due = next_due(engine)
            following = min([t for t in (due, pending[0].at if pending else None) if t is not None], default=None)
            if following is None:
                break
            now = max(following, now + timedelta(seconds=1))
        timeline: dict[str, list[str]] = {}
        for ref, at, text in _lines(engine, first_event, settings):
            local = at.astimezone(tz)
            timeline.setdefault(ref, []).append(f"{local:%Y-%m-%d %a %H:%M %Z}  {text}")
        engine.dispose()
    return dict(sorted(timeline.items()))


def _apply_reply(engine: Engine, settings: Settings, reply: Reply) -> None:
    with session_scope(engine) as session:
        pair = get_pair(session, reply.ref, for_update=True)
        pair.last_reply_at = reply.at
        event = Event(EventKind.REPLY, reply.at, who=reply.who, intent=reply.intent, email_kind=_last_kind(session, pair.id or 0))
        advance(session, pair, reply.at, settings.policy(), outgoing(settings), [event])


def _last_kind(session: Session, pair_id: int) -> EmailKind | None:
    row = session.exec(select(OutboxMessage.kind).where(OutboxMessage.pair_id == pair_id).order_by(col(OutboxMessage.id).desc()).limit(1)).first()
    return EmailKind(row) if row else None


def _mark_sent(engine: Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.state == "pending").values(state="sent", sent_at=now))

"""Referents' digests: queue one per referent per window day, apply their reply commands, preview one.

Exactly once: the outbox key `digest:<referent id>:<local date>` is UNIQUE, so a second pass the
same day, a restart or a second instance adds nothing; after downtime only TODAY's digest is
queued (dates are programme-local, so DST days are ordinary days). A referent's commands are each
recorded as an AuditEvent (`referent_command`, ids and outcome codes only; an unknown line is kept,
truncated, to be answered) and listed in their next digest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import AuditEvent, OutboxMessage, Pair, Person
from mailflow.config import Settings
from mailflow.core import commands as cmd
from mailflow.core.calendar import at_local, in_window, local_date
from mailflow.core.digest import Digest, build_digest
from mailflow.core.model import ClearFlag, EmailKind, Event, EventKind, FlagKind, Role
from mailflow.digest_facts import AUDIT_ACTION, gather, gather_many, referents_due
from mailflow.effects import advance, queue_email
from mailflow.errors import MailflowError, NotFoundError
from mailflow.render import RecipientInfo, RenderedEmail, Renderer
from mailflow.store import apply_flag_action, event_row, get_pair, open_flags

log = logging.getLogger("mailflow.digest")


def digest_key(referent_id: int, day: Any) -> str:
    return f"digest:{referent_id}:{day.isoformat()}"


GATHER_REFERENTS = 50  # referents whose digests are read at once (their pairs are in memory together)


# ---- queueing ----


def digest_is_due(now: datetime, settings: Settings) -> bool:
    policy = settings.policy()
    return in_window(now, policy) and now >= at_local(local_date(now, policy), settings.digest.time, policy)


def queue_digests(engine: Engine, settings: Settings, now: datetime) -> int:
    """Queue today's digest for every referent who has none yet. Returns how many were queued."""
    if not digest_is_due(now, settings):
        return 0
    today = local_date(now, settings.policy())
    with Session(engine) as session:
        referents = referents_due(session)
    queued = 0
    for start in range(0, len(referents), GATHER_REFERENTS):
        queued += _queue_group(engine, settings, referents[start : start + GATHER_REFERENTS], today, now)
    if queued:
        log.info("digests queued", extra={"action": "digests_queued", "count": queued})
    return queued


def _queue_group(engine: Engine, settings: Settings, referents: Sequence[Person], today: Any, now: datetime) -> int:
    """Gather a group of referents' digests at once, then queue each one in its own short transaction."""
    from mailflow.service import outgoing

    policy = settings.policy()
    o = OutboxMessage.__table__  # type: ignore[attr-defined]
    keys = {r.id: digest_key(r.id, today) for r in referents if r.id is not None}
    with Session(engine) as session:
        done = set(session.connection().execute(core_select(o.c.idem_key).where(o.c.idem_key.in_(list(keys.values())))).scalars())
        todo = [r for r in referents if r.id in keys and keys[r.id] not in done]
        inputs = gather_many(session, todo, now, policy) if todo else {}
    queued = 0
    for r in todo:
        assert r.id is not None
        payload = build_digest(inputs[r.id], now, policy).payload()
        try:
            with session_scope(engine) as session:
                queued += queue_email(
                    session, key=keys[r.id], pair_id=None, person_id=r.id, to_address=r.email, kind=EmailKind.DIGEST,
                    role=Role.REFERENT, slot=today.isoformat(), now=now, outgoing=outgoing(settings), payload=payload,
                )  # fmt: skip
        except IntegrityError:  # another instance queued it between our check and insert: exactly once
            continue
    return queued


def build_for(engine: Engine, settings: Settings, referent_email: str, now: datetime) -> tuple[Person, Digest]:
    with Session(engine) as session:
        referent = session.exec(select(Person).where(Person.email == referent_email.strip().lower())).first()
        if referent is None or referent.role != Role.REFERENT.value:
            raise NotFoundError(f"{referent_email} is not a known referent (see `mailflow pairs list`)")
        return referent, build_digest(gather(session, referent, now, settings.policy()), now, settings.policy())


def digest_preview(engine: Engine, settings: Settings, referent_email: str, now: datetime) -> RenderedEmail:
    """The digest this referent would get at `now` (nothing is queued or recorded)."""
    from mailflow.compose import digest_from_payload, programme_info

    referent, digest = build_for(engine, settings, referent_email, now)
    context = {
        "programme": programme_info(settings),
        "recipient": RecipientInfo(referent.first_name, referent.last_name, Role.REFERENT, referent.language),
        "digest": digest_from_payload(digest.payload()),
    }
    return Renderer(timezone_name=settings.calendar.timezone).render(EmailKind.DIGEST, referent.language, context)


# ---- referent commands ----


@dataclass(frozen=True)
class CommandOutcome:
    command: str
    ref: str
    outcome: str  # done | not_your_pair | no_open_call | refused | invalid_date | no_flag | not_understood
    line: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "done"


def _own_pair(engine: Engine, referent_id: int, ref: str) -> str | None:
    """The pair's exact ref when it is this referent's (refs are matched without case)."""
    with Session(engine) as session:
        query = select(Pair.ref).where(func.lower(Pair.ref) == ref.lower(), Pair.referent_id == referent_id)
        return session.exec(query).first()


def _clear(engine: Engine, settings: Settings, ref: str, kind: FlagKind, reason: str, now: datetime) -> str:
    from mailflow.service import outgoing

    with session_scope(engine) as session:
        pair = get_pair(session, ref, for_update=True)
        assert pair.id is not None
        flags = [f for f in open_flags(session, [pair.id]) if f.kind == kind.value]
        for flag in flags:
            action = ClearFlag(kind, Role(flag.who) if flag.who else None, reason)
            apply_flag_action(session, pair.id, action, now)
            session.add(event_row(pair.id, Event(EventKind.FLAG_CLEARED, now, who=action.who, flag=kind, reason=reason)))
        session.flush()
        advance(session, pair, now, settings.policy(), outgoing(settings))
        return "done" if flags else "no_flag"


def _call_done(engine: Engine, settings: Settings, ref: str, c: cmd.CallDone, now: datetime) -> str:
    from mailflow.operator import call_done

    with Session(engine) as session:
        pair = get_pair(session, ref)
        open_calls = [Role(f.who) for f in open_flags(session, [pair.id or 0]) if f.kind == FlagKind.CALL.value and f.who]
    targets = [c.who] if c.who is not None else open_calls
    if not targets or any(t not in open_calls for t in targets):
        return "no_open_call"
    for who in targets:
        call_done(engine, settings, ref, who, c.note, now)
    return "done"


def _run(engine: Engine, settings: Settings, ref: str, c: cmd.Command, now: datetime) -> str:
    from mailflow import operator

    if isinstance(c, cmd.CallDone):
        return _call_done(engine, settings, ref, c, now)
    if isinstance(c, cmd.Close):
        operator.close_pair(engine, settings, ref, now)
    elif isinstance(c, cmd.Pause):
        if c.until is None or c.until <= local_date(now, settings.policy()):
            return "invalid_date"
        operator.pause_pair(engine, settings, ref, c.until, now)
    elif isinstance(c, cmd.Resume):
        operator.resume_pair(engine, settings, ref, now)
    elif isinstance(c, cmd.Read):
        return _clear(engine, settings, ref, FlagKind.REVIEW, "read_by_referent", now)
    elif isinstance(c, cmd.UrgentHandled):
        return _clear(engine, settings, ref, FlagKind.URGENT, "handled_by_referent", now)
    return "done"


def _apply_one(engine: Engine, settings: Settings, referent_id: int, c: cmd.Command, now: datetime) -> CommandOutcome:
    if isinstance(c, cmd.Unknown):
        return CommandOutcome(c.name, "", "not_understood", c.line)
    ref = _own_pair(engine, referent_id, c.ref)
    if ref is None:  # someone else's pair, or no such pair: nothing changes
        return CommandOutcome(c.name, c.ref[:64], "not_your_pair")
    try:
        return CommandOutcome(c.name, ref, _run(engine, settings, ref, c, now))
    except MailflowError:  # closing a closed pair, resuming a pair that is not paused...
        return CommandOutcome(c.name, ref, "refused")


def _audit(engine: Engine, referent_id: int, outcome: CommandOutcome, now: datetime) -> None:
    detail = {"referent_id": referent_id, "pair_ref": outcome.ref, "command": outcome.command, "outcome": outcome.outcome}
    if outcome.line:
        detail["line"] = outcome.line
    with session_scope(engine) as session:
        session.add(AuditEvent(at=now, action=AUDIT_ACTION, detail=json.dumps(detail, ensure_ascii=False)))
    log.info(
        "referent command",
        extra={"action": AUDIT_ACTION, "referent_id": referent_id, "command": outcome.command, "outcome": outcome.outcome},
    )


def apply_referent_reply(engine: Engine, settings: Settings, referent_person_id: int, text: str, now: datetime) -> list[CommandOutcome]:
    """Apply an AUTHENTICATED referent's reply (visible text, quotes stripped), one command per line.

    Each command only touches the referent's own pairs; every line gets an outcome, recorded for
    the next digest. An empty reply records nothing.
    """
    with Session(engine) as session:
        referent = session.get(Person, referent_person_id)
        if referent is None or referent.role != Role.REFERENT.value:
            log.warning("reply from a non-referent ignored", extra={"action": "referent_command_refused"})
            return []
    outcomes = []
    for command in cmd.parse_commands(text, local_date(now, settings.policy())):
        outcome = _apply_one(engine, settings, referent_person_id, command, now)
        _audit(engine, referent_person_id, outcome, now)
        outcomes.append(outcome)
    return outcomes

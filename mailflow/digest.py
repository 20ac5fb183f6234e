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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import AuditEvent, Flag, InboundMessage, OutboxMessage, Pair, PairEvent, Person
from mailflow.config import Settings
from mailflow.core import commands as cmd
from mailflow.core.calendar import at_local, in_window, local_date
from mailflow.core.digest import Ack, Availability, Digest, DigestInput, FlagFacts, PairFacts, PersonFacts, build_digest
from mailflow.core.model import ClearFlag, EmailKind, Event, EventKind, FlagKind, Intent, Role, State
from mailflow.core.policy import Policy
from mailflow.effects import advance, queue_email
from mailflow.errors import MailflowError, NotFoundError
from mailflow.render import RecipientInfo, RenderedEmail, Renderer
from mailflow.store import apply_flag_action, event_row, get_pair, open_flags

log = logging.getLogger("mailflow.digest")
AUDIT_ACTION = "referent_command"
LIVE_STATES = (State.AWAITING_FIRST_CONTACT.value, State.ACTIVE.value)


def digest_key(referent_id: int, day: Any) -> str:
    return f"digest:{referent_id}:{day.isoformat()}"


# ---- gathering one referent's facts ----


def _pairs_of(session: Session, referent_id: int) -> list[Any]:
    """The referent's pairs as plain rows, by ref: the pair's columns the digest shows and its two people's."""
    t = Pair.__table__  # type: ignore[attr-defined]
    people = Person.__table__  # type: ignore[attr-defined]
    mentor, mentee = people.alias("mentor"), people.alias("mentee")
    query = (
        core_select(
            t.c.id,
            t.c.ref,
            t.c.state,
            t.c.matched_on,
            t.c.paused_until,
            mentor.c.first_name.label("mentor_first_name"),
            mentor.c.phone.label("mentor_phone"),
            mentor.c.bounced.label("mentor_bounced"),
            mentee.c.first_name.label("mentee_first_name"),
            mentee.c.phone.label("mentee_phone"),
            mentee.c.bounced.label("mentee_bounced"),
        )  # fmt: skip
        .join(mentor, mentor.c.id == t.c.mentor_id)
        .join(mentee, mentee.c.id == t.c.mentee_id)
        .where(t.c.referent_id == referent_id)
        .order_by(t.c.ref)
    )
    return list(session.connection().execute(query))


def _pair_facts(pair: Any, intro: datetime | None, policy: Policy) -> PairFacts:
    return PairFacts(
        ref=pair.ref, state=State(pair.state), matched_on=pair.matched_on,
        mentor=PersonFacts(first_name=pair.mentor_first_name, phone=pair.mentor_phone, bounced=pair.mentor_bounced),
        mentee=PersonFacts(first_name=pair.mentee_first_name, phone=pair.mentee_phone, bounced=pair.mentee_bounced),
        paused_until=pair.paused_until, intro_on=local_date(intro, policy) if intro else None,
    )  # fmt: skip


def _intros(session: Session, referent_id: int) -> dict[int, datetime]:
    """Per pair: when its first introduction was queued.

    Grouped in SQL over the referent's pairs: one row per pair, not its whole log.
    """
    t = PairEvent.__table__  # type: ignore[attr-defined]
    pairs = Pair.__table__  # type: ignore[attr-defined]
    own = t.c.pair_id.in_(select(pairs.c.id).where(pairs.c.referent_id == referent_id))
    is_intro = and_(t.c.kind == EventKind.EMAIL_QUEUED.value, t.c.email_kind == EmailKind.INTRODUCTION.value)
    grouped = select(t.c.pair_id.label("pair_id"), func.min(t.c.id).label("intro_id")).where(own, is_intro).group_by(t.c.pair_id).subquery()
    rows = session.connection().execute(select(grouped.c.pair_id, t.c.at).join(t, t.c.id == grouped.c.intro_id))
    return {row.pair_id: row.at for row in rows}


def _review_excerpt(session: Session, flag: Flag, events: list[PairEvent]) -> str:
    """The text of the reply that raised a review flag -- never of a support_needed reply."""
    raised = [e for e in events if e.kind == EventKind.FLAG_RAISED.value and e.flag == flag.kind and e.who == flag.who]
    if not raised:
        return ""
    last_raise = raised[-1].id or 0
    replies = [e for e in events if e.kind == EventKind.REPLY.value and e.who == flag.who and (e.id or 0) < last_raise]
    if not replies or replies[-1].inbound_id is None or replies[-1].intent == Intent.SUPPORT_NEEDED.value:
        return ""
    message = session.get(InboundMessage, replies[-1].inbound_id)
    if message is None or message.intent == Intent.SUPPORT_NEEDED.value:
        return ""
    return message.text[:2000]


def _review_logs(session: Session, pair_ids: list[int]) -> dict[int, list[Any]]:
    """For the pairs with an open review flag: their flag_raised and reply events (what the excerpt needs), in order."""
    out: dict[int, list[Any]] = {pid: [] for pid in pair_ids}
    if not pair_ids:
        return out
    t = PairEvent.__table__  # type: ignore[attr-defined]
    kinds = (EventKind.FLAG_RAISED.value, EventKind.REPLY.value)
    query = core_select(t.c.id, t.c.pair_id, t.c.kind, t.c.who, t.c.flag, t.c.intent, t.c.inbound_id)
    for row in session.connection().execute(query.where(t.c.pair_id.in_(pair_ids), t.c.kind.in_(kinds)).order_by(t.c.id)):
        out[row.pair_id].append(row)
    return out


def _flag_facts(session: Session, flag: Flag, ref: str, events: list[PairEvent]) -> FlagFacts:
    excerpt = _review_excerpt(session, flag, events) if flag.kind == FlagKind.REVIEW.value else ""
    return FlagFacts(
        ref=ref, kind=FlagKind(flag.kind), who=Role(flag.who) if flag.who else None, reason=flag.reason,
        since=flag.since, attempt=flag.attempt, excerpt=excerpt,
    )  # fmt: skip


def _previous_digest_at(session: Session, referent_id: int, now: datetime) -> datetime | None:
    return session.exec(
        select(func.max(OutboxMessage.created_at)).where(
            OutboxMessage.kind == EmailKind.DIGEST.value,
            OutboxMessage.person_id == referent_id,
            col(OutboxMessage.created_at) < now,
        )  # fmt: skip
    ).one()


def _acks(session: Session, referent_id: int, since: datetime | None) -> list[Ack]:
    query = select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION)
    if since is not None:
        query = query.where(col(AuditEvent.at) > since)
    out = []
    for row in session.exec(query.order_by(col(AuditEvent.id))):
        d = json.loads(row.detail or "{}")
        if d.get("referent_id") == referent_id:
            out.append(Ack(row.at, d.get("command", ""), d.get("outcome", ""), d.get("pair_ref", ""), d.get("line", "")))
    return out


def _availability(session: Session, pairs: list[Any], since: datetime) -> list[Availability]:
    """Mentors of closed or ended pairs who replied `available` after `since` (recent replies only are read)."""
    ended = [p for p in pairs if p.state in (State.CLOSED.value, State.ENDED_NO_CONTACT.value) and p.id is not None]
    if not ended:
        return []
    table = PairEvent.__table__  # type: ignore[attr-defined]
    wanted = (
        table.c.pair_id.in_([p.id for p in ended]),
        table.c.kind == EventKind.REPLY.value,
        table.c.intent == Intent.AVAILABLE.value,
        table.c.who == Role.MENTOR.value,
        table.c.at > since,
    )
    rows = session.connection().execute(select(table.c.pair_id, table.c.at).where(*wanted).order_by(table.c.id))
    by_pair: dict[int, list[datetime]] = {}
    for row in rows:
        if row.at > since:  # the same comparison as in SQL, on the decoded (aware) value
            by_pair.setdefault(row.pair_id, []).append(row.at)
    return [Availability(p.ref, p.mentor_first_name, at) for p in ended for at in by_pair.get(p.id or 0, [])]


def gather(session: Session, referent: Person, now: datetime, policy: Policy) -> DigestInput:
    """Everything the digest of `referent` shows, read from their own pairs only.

    Only what the digest shows is read (grouped queries, plain rows): per pair its first
    introduction and whether a checkpoint went, the `available` replies of ended pairs since the
    previous digest, the open flags, and the flag/reply events of the few pairs with an open review
    flag (for the excerpt) -- never every event of every pair.
    """
    assert referent.id is not None
    pairs = _pairs_of(session, referent.id)
    ids = [p.id for p in pairs]
    intros = _intros(session, referent.id)
    refs = {p.id: p.ref for p in pairs}
    open_ = open_flags(session, ids)
    reviewed = sorted({f.pair_id for f in open_ if f.kind == FlagKind.REVIEW.value})
    logs = _review_logs(session, reviewed)
    flags = [_flag_facts(session, f, refs[f.pair_id], logs.get(f.pair_id, [])) for f in open_]
    previous = _previous_digest_at(session, referent.id, now)
    return DigestInput(
        language=referent.language,
        pairs=[_pair_facts(p, intros.get(p.id), policy) for p in pairs],
        flags=flags,
        available=_availability(session, pairs, previous or now - timedelta(days=7)),
        acks=_acks(session, referent.id, previous),
    )


def referents_due(session: Session) -> list[Person]:
    """Referents with a live pair or an open flag on any of their pairs."""
    live = select(Pair.referent_id).where(col(Pair.state).in_(LIVE_STATES))
    flagged = select(Pair.referent_id).join(Flag, col(Flag.pair_id) == col(Pair.id)).where(Flag.is_open == True)  # noqa: E712
    ids = set(session.exec(live)) | set(session.exec(flagged))
    if not ids:
        return []
    query = select(Person).where(col(Person.id).in_(ids), Person.role == Role.REFERENT.value, Person.erased == False)  # noqa: E712
    return list(session.exec(query.order_by(col(Person.id))))


# ---- queueing ----


def digest_is_due(now: datetime, settings: Settings) -> bool:
    policy = settings.policy()
    return in_window(now, policy) and now >= at_local(local_date(now, policy), settings.digest.time, policy)


def queue_digests(engine: Engine, settings: Settings, now: datetime) -> int:
    """Queue today's digest for every referent who has none yet. Returns how many were queued."""
    if not digest_is_due(now, settings):
        return 0
    policy = settings.policy()
    today = local_date(now, policy)
    with Session(engine) as session:
        referent_ids = [p.id for p in referents_due(session) if p.id is not None]
    queued = 0
    for rid in referent_ids:
        try:
            queued += _queue_one(engine, settings, rid, today, now)
        except IntegrityError:  # another instance queued it between our check and insert: exactly once
            continue
    if queued:
        log.info("digests queued", extra={"action": "digests_queued", "count": queued})
    return queued


def _queue_one(engine: Engine, settings: Settings, referent_id: int, today: Any, now: datetime) -> int:
    from mailflow.service import outgoing

    key = digest_key(referent_id, today)
    with session_scope(engine) as session:
        if session.exec(select(OutboxMessage.id).where(OutboxMessage.idem_key == key)).first() is not None:
            return 0
        referent = session.get(Person, referent_id)
        assert referent is not None
        digest = build_digest(gather(session, referent, now, settings.policy()), now, settings.policy())
        inserted = queue_email(
            session, key=key, pair_id=None, person_id=referent_id, to_address=referent.email, kind=EmailKind.DIGEST,
            role=Role.REFERENT, slot=today.isoformat(), now=now, outgoing=outgoing(settings), payload=digest.payload(),
        )  # fmt: skip
        return int(inserted)


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

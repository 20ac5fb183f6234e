"""What referents' digests show, read for many referents at once: a few set-based queries, then plain data.

Each query reads what ALL the referents of a group need (their pairs and people, the open flags,
...), grouped in SQL where it can be; the per-referent `DigestInput`s are then put together in
Python for the pure core (mailflow.core.digest). One query per referent was a round trip each:
13.7 s for 200 referents over 100,000 pairs on PostgreSQL (BENCHMARKS.md), ~4 s this way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from mailflow.adapters.tables import AuditEvent, Flag, InboundMessage, OutboxMessage, Pair, PairEvent, Person
from mailflow.core.calendar import local_date
from mailflow.core.digest import Ack, Availability, DigestInput, FlagFacts, PairFacts, PersonFacts
from mailflow.core.model import EmailKind, EventKind, FlagKind, Intent, Role, State
from mailflow.core.policy import Policy

AUDIT_ACTION = "referent_command"  # referent commands in the audit log (recorded by mailflow.digest)
LIVE_STATES = (State.AWAITING_FIRST_CONTACT.value, State.ACTIVE.value)
_ENDED = (State.CLOSED.value, State.ENDED_NO_CONTACT.value)
_STATES = {s.value: s for s in State}


def _own_pairs(referent_ids: Sequence[int], *states: str) -> Any:
    """Subquery: the ids of these referents' pairs (in one of `states` when given)."""
    t = Pair.__table__  # type: ignore[attr-defined]
    query = core_select(t.c.id).where(t.c.referent_id.in_(referent_ids))
    return query.where(t.c.state.in_(states)) if states else query


def _pairs_of(session: Session, referent_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Per referent: their pairs as plain rows, by ref -- the pair's columns the digest shows and its two people's."""
    t = Pair.__table__  # type: ignore[attr-defined]
    people = Person.__table__  # type: ignore[attr-defined]
    mentor, mentee = people.alias("mentor"), people.alias("mentee")
    query = (
        core_select(
            t.c.id,
            t.c.referent_id,
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
        .where(t.c.referent_id.in_(referent_ids))
        .order_by(t.c.referent_id, t.c.ref)
    )
    out: dict[int, list[Any]] = {rid: [] for rid in referent_ids}
    for row in session.connection().execute(query):
        out[row.referent_id].append(row)
    return out


def _pair_facts(pair: Any, intro: datetime | None, policy: Policy) -> PairFacts:
    # unpacked once: 100,000 pairs per run, and a Row's attribute access costs more than a tuple's
    _, _, ref, state, matched_on, paused_until, mentor_name, mentor_phone, mentor_bounced, mentee_name, mentee_phone, mentee_bounced = pair
    return PairFacts(
        ref, _STATES[state], matched_on, PersonFacts(mentor_name, mentor_phone, mentor_bounced),
        PersonFacts(mentee_name, mentee_phone, mentee_bounced), paused_until, local_date(intro, policy) if intro else None,
    )  # fmt: skip


def _intros(session: Session, referent_ids: Sequence[int]) -> dict[int, datetime]:
    """Per pair awaiting its first contact: when its first introduction was queued.

    Only those pairs' lines show it (first contact overdue); grouped in SQL, one row per pair.
    """
    t = PairEvent.__table__  # type: ignore[attr-defined]
    own = t.c.pair_id.in_(_own_pairs(referent_ids, State.AWAITING_FIRST_CONTACT.value))
    is_intro = and_(t.c.kind == EventKind.EMAIL_QUEUED.value, t.c.email_kind == EmailKind.INTRODUCTION.value)
    grouped = select(t.c.pair_id.label("pair_id"), func.min(t.c.id).label("intro_id")).where(own, is_intro).group_by(t.c.pair_id).subquery()
    rows = session.connection().execute(select(grouped.c.pair_id, t.c.at).join(t, t.c.id == grouped.c.intro_id))
    return {row.pair_id: row.at for row in rows}


def _open_flags(session: Session, referent_ids: Sequence[int]) -> list[Any]:
    """The open flags of these referents' pairs (with the pair's referent and ref), as plain rows, in the order they were raised."""
    f, p = Flag.__table__, Pair.__table__  # type: ignore[attr-defined]
    query = core_select(f.c.id, f.c.pair_id, p.c.referent_id, p.c.ref, f.c.kind, f.c.who, f.c.reason, f.c.since, f.c.attempt)
    query = query.join(p, p.c.id == f.c.pair_id).where(f.c.is_open == True, p.c.referent_id.in_(referent_ids))  # noqa: E712
    return list(session.connection().execute(query.order_by(f.c.id)))


def _review_logs(session: Session, referent_ids: Sequence[int]) -> dict[int, list[Any]]:
    """For the pairs with an open review flag: their flag_raised and reply events (what the excerpt needs), in order."""
    f, t = Flag.__table__, PairEvent.__table__  # type: ignore[attr-defined]
    reviewed = core_select(f.c.pair_id).where(f.c.is_open == True, f.c.kind == FlagKind.REVIEW.value)  # noqa: E712
    reviewed = reviewed.where(f.c.pair_id.in_(_own_pairs(referent_ids)))
    kinds = (EventKind.FLAG_RAISED.value, EventKind.REPLY.value)
    query = core_select(t.c.id, t.c.pair_id, t.c.kind, t.c.who, t.c.flag, t.c.intent, t.c.inbound_id)
    out: dict[int, list[Any]] = {}
    for row in session.connection().execute(query.where(t.c.pair_id.in_(reviewed), t.c.kind.in_(kinds)).order_by(t.c.id)):
        out.setdefault(row.pair_id, []).append(row)
    return out


def _excerpt_source(flag: Any, events: Sequence[Any]) -> int | None:
    """The inbound message of the reply that raised a review flag -- never of a support_needed reply."""
    raised = [e for e in events if e.kind == EventKind.FLAG_RAISED.value and e.flag == flag.kind and e.who == flag.who]
    if not raised:
        return None
    last_raise = raised[-1].id or 0
    replies = [e for e in events if e.kind == EventKind.REPLY.value and e.who == flag.who and (e.id or 0) < last_raise]
    if not replies or replies[-1].inbound_id is None or replies[-1].intent == Intent.SUPPORT_NEEDED.value:
        return None
    return int(replies[-1].inbound_id)


def _excerpts(session: Session, flags: Sequence[Any], logs: Mapping[int, list[Any]]) -> dict[int, str]:
    """Per open review flag (by id): the text of the reply that raised it, when there is one to show."""
    sources = {f.id: _excerpt_source(f, logs.get(f.pair_id, [])) for f in flags if f.kind == FlagKind.REVIEW.value}
    wanted = sorted({m for m in sources.values() if m is not None})
    i = InboundMessage.__table__  # type: ignore[attr-defined]
    texts: dict[int, str] = {}
    for start in range(0, len(wanted), 1000):
        query = core_select(i.c.id, i.c.intent, i.c.text).where(i.c.id.in_(wanted[start : start + 1000]))
        texts.update((m.id, m.text[:2000]) for m in session.connection().execute(query) if m.intent != Intent.SUPPORT_NEEDED.value)
    return {fid: texts.get(mid, "") for fid, mid in sources.items() if mid is not None}


def _flag_facts(flag: Any, ref: str, excerpt: str) -> FlagFacts:
    return FlagFacts(
        ref=ref, kind=FlagKind(flag.kind), who=Role(flag.who) if flag.who else None, reason=flag.reason,
        since=flag.since, attempt=flag.attempt, excerpt=excerpt,
    )  # fmt: skip


def _previous_digests(session: Session, referent_ids: Sequence[int], now: datetime) -> dict[int, datetime]:
    """Per referent: when their previous digest (before `now`) was queued; absent when there was none."""
    o = OutboxMessage.__table__  # type: ignore[attr-defined]
    query = core_select(o.c.person_id, func.max(o.c.created_at).label("at")).where(
        o.c.kind == EmailKind.DIGEST.value, o.c.person_id.in_(referent_ids), o.c.created_at < now
    )
    return {row.person_id: row.at for row in session.connection().execute(query.group_by(o.c.person_id)) if row.at is not None}


def _acks(session: Session, since: Mapping[int, datetime | None]) -> dict[int, list[Ack]]:
    """Per referent: their commands recorded after `since[referent]` (all of them when None), from the audit log."""
    a = AuditEvent.__table__  # type: ignore[attr-defined]
    query = core_select(a.c.at, a.c.detail).where(a.c.action == AUDIT_ACTION)
    known = [s for s in since.values() if s is not None]
    if len(known) == len(since) and known:
        query = query.where(a.c.at > min(known))
    out: dict[int, list[Ack]] = {rid: [] for rid in since}
    for row in session.connection().execute(query.order_by(a.c.id)):
        d = json.loads(row.detail or "{}")
        rid = d.get("referent_id")
        if not isinstance(rid, int) or rid not in since:
            continue
        after = since[rid]
        if after is None or row.at > after:
            out[rid].append(Ack(row.at, d.get("command", ""), d.get("outcome", ""), d.get("pair_ref", ""), d.get("line", "")))
    return out


def _available_replies(session: Session, referent_ids: Sequence[int], since: datetime) -> dict[int, list[datetime]]:
    """Per closed or ended pair: when its mentor replied `available` after `since` (recent replies only are read)."""
    t = PairEvent.__table__  # type: ignore[attr-defined]
    wanted = (
        t.c.pair_id.in_(_own_pairs(referent_ids, *_ENDED)),
        t.c.kind == EventKind.REPLY.value,
        t.c.intent == Intent.AVAILABLE.value,
        t.c.who == Role.MENTOR.value,
        t.c.at > since,
    )
    by_pair: dict[int, list[datetime]] = {}
    for row in session.connection().execute(select(t.c.pair_id, t.c.at).where(*wanted).order_by(t.c.id)):
        by_pair.setdefault(row.pair_id, []).append(row.at)
    return by_pair


def _availability(pairs: Sequence[Any], replies: Mapping[int, list[datetime]], since: datetime) -> list[Availability]:
    """Mentors of this referent's closed or ended pairs who replied `available` after `since`."""
    ended = [p for p in pairs if p.state in _ENDED]
    # the same comparison as in SQL, on the decoded (aware) value: each referent has their own `since`
    return [Availability(p.ref, p.mentor_first_name, at) for p in ended for at in replies.get(p.id, []) if at > since]


@dataclass(frozen=True)
class _Gathered:
    """What the queries read for a group of referents (plain rows), before it is split per referent."""

    pairs: Mapping[int, list[Any]]
    intros: Mapping[int, datetime]
    flags: Sequence[Any]
    excerpts: Mapping[int, str]
    previous: Mapping[int, datetime]
    available: Mapping[int, list[datetime]]
    acks: Mapping[int, list[Ack]]


def _read(session: Session, referent_ids: Sequence[int], now: datetime) -> _Gathered:
    previous = _previous_digests(session, referent_ids, now)
    oldest = min((previous.get(rid) or now - timedelta(days=7) for rid in referent_ids), default=now)
    flags = _open_flags(session, referent_ids)
    return _Gathered(
        pairs=_pairs_of(session, referent_ids),
        intros=_intros(session, referent_ids),
        flags=flags,
        excerpts=_excerpts(session, flags, _review_logs(session, referent_ids)),
        previous=previous,
        available=_available_replies(session, referent_ids, oldest),
        acks=_acks(session, {rid: previous.get(rid) for rid in referent_ids}),
    )


def gather_many(session: Session, referents: Sequence[Person], now: datetime, policy: Policy) -> dict[int, DigestInput]:
    """Everything the digests of `referents` show, by referent id, read in a few set-based queries.

    Only what the digests show is read (grouped queries, plain rows): the referents' pairs and
    people, the first introduction of pairs awaiting first contact, the open flags and, for the few
    pairs with an open review flag, their flag/reply events (for the excerpt), the `available`
    replies of ended pairs since each referent's previous digest, their commands since then --
    never every event of every pair.
    """
    ids = [r.id for r in referents if r.id is not None]
    got = _read(session, ids, now)
    flags: dict[int, list[FlagFacts]] = {rid: [] for rid in ids}
    for f in got.flags:  # (a flag of a pair added between two reads is dropped by build_digest: in the next digest)
        flags[f.referent_id].append(_flag_facts(f, f.ref, got.excerpts.get(f.id, "")))
    out = {}
    for r in referents:
        if r.id is None:
            continue
        pairs = got.pairs[r.id]
        out[r.id] = DigestInput(
            language=r.language,
            pairs=[_pair_facts(p, got.intros.get(p.id), policy) for p in pairs],
            flags=flags[r.id],
            available=_availability(pairs, got.available, got.previous.get(r.id) or now - timedelta(days=7)),
            acks=got.acks[r.id],
        )
    return out


def gather(session: Session, referent: Person, now: datetime, policy: Policy) -> DigestInput:
    """Everything the digest of `referent` shows (`gather_many` for one referent)."""
    assert referent.id is not None
    return gather_many(session, [referent], now, policy)[referent.id]


def referents_due(session: Session) -> list[Person]:
    """Referents with a live pair or an open flag on any of their pairs."""
    live = select(Pair.referent_id).where(col(Pair.state).in_(LIVE_STATES)).distinct()
    flagged = select(Pair.referent_id).join(Flag, col(Flag.pair_id) == col(Pair.id)).where(Flag.is_open == True).distinct()  # noqa: E712
    ids = set(session.exec(live)) | set(session.exec(flagged))
    if not ids:
        return []
    query = select(Person).where(col(Person.id).in_(ids), Person.role == Role.REFERENT.value, Person.erased == False)  # noqa: E712
    return list(session.exec(query.order_by(col(Person.id))))

"""The programme's promises for one pair (emails, flags), each with the instant it falls due.

`duties` lists what is still owed according to the log (`History`): past-due items are done now,
future ones set `next_due_at`. The calendar lines of CONTRACT.md live here; the theory of
operation and the state table are in `lifecycle`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from mailflow.core.calendar import add_months, day_n, due_on, in_window, local_date, next_window_open
from mailflow.core.flags import OpenFlag
from mailflow.core.history import History, Stamp
from mailflow.core.model import (
    Action,
    ClearFlag,
    EmailKind,
    FlagKind,
    FlagReason,
    PairView,
    RaiseFlag,
    Role,
    SendEmail,
    State,
)
from mailflow.core.policy import Policy

PARTICIPANTS = (Role.MENTOR, Role.MENTEE)
CLEARED_ON_CLOSE = frozenset({FlagKind.CALL, FlagKind.REVIEW, FlagKind.CLOSURE_REQUESTED})
INTRO_SLOT, END_SLOT, CLOSE_SLOT = "intro", "end", "close"


def reminder_slot(day: int) -> str:
    return f"d{day}"


def followup_slot(n: int) -> str:
    return f"f{n}"


def checkpoint_slot(months: int) -> str:
    return f"m{months}"


def alert_slot(reply_index: int) -> str:
    return f"u{reply_index}"


@dataclass(frozen=True)
class Due:
    at: datetime
    action: Action | None  # None: only a wake-up (a state timer)


@dataclass(frozen=True)
class _Ctx:
    h: History
    state: State
    pair: PairView
    now: datetime
    policy: Policy

    def held(self, role: Role) -> bool:
        return self.pair.mentor_bounced if role is Role.MENTOR else self.pair.mentee_bounced

    def after_pause(self, t: datetime) -> datetime | None:
        """When participant mail due at `t` may go, given the last pause (None: paused indefinitely)."""
        pause = self.h.pause
        if pause is None:
            return t
        if pause.resume_at is None:
            return None
        return t if pause.resume_at <= t else next_window_open(pause.resume_at, self.policy)

    def participant_mail(self, t: datetime, kind: EmailKind, slot: str, roles: Sequence[Role] = PARTICIPANTS) -> Iterator[Due]:
        at = self.after_pause(t)
        for role in roles:
            if at is not None and not self.held(role) and (kind, role, slot) not in self.h.queued:
                yield Due(at, SendEmail(kind, role, slot))


def no_contact_deadline(h: History, policy: Policy) -> datetime | None:
    """Day 21 (first_contact_days) of the first-contact window, or None when it has not started."""
    base = _first_contact_base(h, policy)
    return None if base is None else day_n(base, policy.first_contact_days, policy)


def _first_contact_base(h: History, policy: Policy) -> date | None:
    """Day 0 of the first-contact window: the introduction's local date, or the resume date of a later pause."""
    if h.intro is None:
        return None
    base = local_date(h.intro.at, policy)
    if h.pause is None or h.pause.start < h.intro.index:
        return base
    return None if h.pause.resume_date is None else max(base, h.pause.resume_date)


def duties(h: History, state: State, pair: PairView, now: datetime, policy: Policy, deadline: datetime | None) -> list[Due]:
    c = _Ctx(h, state, pair, now, policy)
    out: list[Due] = [*_flag_clears(c), *_flag_raises(c), *_alerts(c)]
    if state in (State.AWAITING_FIRST_CONTACT, State.ACTIVE):
        out += c.participant_mail(now, EmailKind.INTRODUCTION, INTRO_SLOT)
    if state is State.AWAITING_FIRST_CONTACT and deadline is not None:
        out += _first_contact_reminders(c)
        out.append(Due(deadline, None))
    elif state is State.ENDED_NO_CONTACT:
        out += _no_contact(c)
    elif state is State.ACTIVE:
        out += _followups(c)
        out += _checkpoint(c)
    elif state is State.CLOSED and h.closed is not None:
        out += (
            Due(now, SendEmail(EmailKind.CLOSURE, r, CLOSE_SLOT))
            for r in PARTICIPANTS
            if not c.held(r) and (EmailKind.CLOSURE, r, CLOSE_SLOT) not in h.queued
        )
    return out


def split_due(items: Sequence[Due], now: datetime, policy: Policy) -> tuple[list[Action], datetime | None]:
    """Actions due at `now` (emails only inside the window) and the earliest instant of the rest."""
    window_open = in_window(now, policy)
    actions: dict[Action, None] = {}
    wake: list[datetime] = []
    for item in items:
        if item.at > now:
            wake.append(item.at)
        elif item.action is None:
            continue
        elif isinstance(item.action, SendEmail) and not window_open:
            wake.append(next_window_open(now, policy))
        else:
            actions.setdefault(item.action)
    return list(actions), min(wake, default=None)


# ---- flags driven by events ----


def _flag_clears(c: _Ctx) -> Iterator[Due]:
    for flag in c.h.open_flags.values():
        reason = _clear_reason(c.h, flag)
        if reason is not None:
            yield Due(c.now, ClearFlag(flag.kind, flag.who, reason))


def _clear_reason(h: History, f: OpenFlag) -> str | None:
    if f.kind is FlagKind.CALL:
        if h.call_done.get(f.who, -1) > f.index:
            return "call_done"
        if f.reason == FlagReason.NO_REPLY and h.last_reply.get(f.who, -1) > f.index:
            return "replied"
        if f.reason == FlagReason.BOUNCE and h.corrected.get(f.who, -1) > f.index:
            return "address_corrected"
    if h.closed is not None and f.index < h.closed and f.kind in CLEARED_ON_CLOSE:
        return "closed"
    return None


def _flag_raises(c: _Ctx) -> Iterator[Due]:
    for (kind, who), reason in c.h.pending_raises.items():
        yield Due(c.now, RaiseFlag(kind, who, reason))


def _alerts(c: _Ctx) -> Iterator[Due]:
    for index in c.h.support_replies:
        slot = alert_slot(index)
        if (EmailKind.URGENT_ALERT, Role.REFERENT, slot) not in c.h.queued:
            yield Due(c.now, SendEmail(EmailKind.URGENT_ALERT, Role.REFERENT, slot))


# ---- the first three weeks ----


def _first_contact_reminders(c: _Ctx) -> Iterator[Due]:
    base = _first_contact_base(c.h, c.policy)
    if base is None:
        return
    days = sorted(d for d in c.policy.reminder_days if d < c.policy.first_contact_days)
    sent = [d for d in days if (EmailKind.FIRST_CONTACT_REMINDER, Role.MENTEE, reminder_slot(d)) in c.h.queued]
    pending = [d for d in days if not sent or d > max(sent)]  # never one older than a sent one
    due_now = [d for d in pending if day_n(base, d, c.policy) <= c.now]
    later = [d for d in pending if d not in due_now]
    for d in due_now[-1:] + later[:1]:  # catch-up: only the latest due one; and the next one
        yield from c.participant_mail(day_n(base, d, c.policy), EmailKind.FIRST_CONTACT_REMINDER, reminder_slot(d), (Role.MENTEE,))


def _no_contact(c: _Ctx) -> Iterator[Due]:
    yield from c.participant_mail(c.now, EmailKind.NO_CONTACT_NOTICE, END_SLOT, (Role.MENTOR,))
    if not c.h.was_raised(FlagKind.REMATCH, Role.MENTOR):
        yield Due(c.now, RaiseFlag(FlagKind.REMATCH, Role.MENTOR, FlagReason.NO_CONTACT.value))


# ---- active: monthly follow-ups and the checkpoint ----


def _followups(c: _Ctx) -> Iterator[Due]:
    h, policy = c.h, c.policy
    if h.activation is None:
        return
    base, base_round = local_date(h.activation.at, policy), 0
    pause = h.pause
    if pause is not None and pause.start > h.activation.index:
        if pause.resume_date is None:
            return
        base = max(base, pause.resume_date)
        base_round = max((n for n, s in h.followups.items() if s.index < pause.start), default=0)
    interval = policy.followup_interval_days
    m = _rounds_due(base, interval, c.now, policy)
    current = max(h.followups, default=0)
    if m >= 1 and base_round + m > current:  # a new round starts now (only the latest if several)
        yield from c.participant_mail(day_n(base, interval * m, policy), EmailKind.FOLLOWUP, followup_slot(base_round + m))
    elif current and (pause is None or h.followups[current].index > pause.start):
        yield from _round_duties(c, current, h.followups[current])
    next_at = c.after_pause(day_n(base, interval * (m + 1), policy))
    if next_at is not None:
        yield Due(next_at, None)


def _rounds_due(base: date, interval: int, now: datetime, policy: Policy) -> int:
    """The latest round m (>= 0) whose day base + m * interval has come at `now`."""
    m = max((local_date(now, policy) - base).days // interval, 0)
    while m > 0 and day_n(base, interval * m, policy) > now:
        m -= 1
    return m


def _round_duties(c: _Ctx, n: int, start: Stamp) -> Iterator[Due]:
    """Follow-up round n's reminder (day 4) and call flag (day 7) for whoever is silent since it went."""
    h, policy = c.h, c.policy
    sent_on = local_date(start.at, policy)
    reminder_at = day_n(sent_on, policy.followup_reminder_days, policy)
    call_at = day_n(sent_on, policy.call_after_days, policy)
    superseded = reminder_at < call_at <= c.now
    for role in PARTICIPANTS:
        if h.last_reply.get(role, -1) > start.index:
            continue
        if not superseded:
            yield from c.participant_mail(reminder_at, EmailKind.FOLLOWUP_REMINDER, followup_slot(n), (role,))
        if not _call_flag_seen_since(h, role, start.index):
            yield Due(call_at, RaiseFlag(FlagKind.CALL, role, FlagReason.NO_REPLY.value))


def _call_flag_seen_since(h: History, role: Role, index: int) -> bool:
    """Whether `role` has had a call flag open at some point since log position `index` (one per round:
    a flag open when the round started, or cleared since by a call, counts for the round)."""
    key = (FlagKind.CALL, role)
    return key in h.open_flags or h.last_cleared.get(key, -1) > index


def _checkpoint(c: _Ctx) -> Iterator[Due]:
    months = c.policy.checkpoint_months
    at = due_on(add_months(c.pair.matched_on, months), c.policy)
    yield from c.participant_mail(at, EmailKind.CHECKPOINT, checkpoint_slot(months))

"""The pair lifecycle: a pure function from a pair's event log and `now` to what is due.

Theory of operation
-------------------
A pair's event log is its whole truth. `decide(pair, now, events, policy)` reads the log once
(`read_log`, a walk of the TABLE below), applies the one timer that changes state (no first
contact by day 21 -> `ended_no_contact`), then asks `duties` for every promise the programme
makes (emails, flags) with the instant each falls due. It returns the ones due at `now` that the
log does not show as done yet, and `next_due_at`, the earliest future instant at which it would
return something new. It reads no clock and does no I/O.

The caller records every returned action as an event (`record()` builds them exactly) and so
makes it "done": each email has an idempotency slot, each flag shows in FLAG_RAISED/FLAG_CLEARED.
Calling `decide` again with the same log returns the same actions; with the actions recorded it
returns none. `decide` itself iterates to that fixed point (records its own actions on a copy of
the log and decides again), so one call returns everything due in the pass, e.g. a new follow-up
round and then nothing, and `next_due_at` already accounts for what the recorded actions start
(that round's reminder). `next_due_at` is always after `now`; None when nothing is timed.

Rules that are not obvious from the table:
- Events change state in log order; timers only at `now`, after every logged event: a reply read
  in the same pass as an overdue day-21 deadline (catch-up after downtime) activates the pair.
  STATE_CHANGED records (the caller's) are authoritative: the walk takes their `to`. The state
  comes from the log, never from `pair.state` (only the "from" of the state change `decide`
  simulates): an operator's close must be a CLOSED_BY_OPERATOR event, not a column update.
- A human reply without an intent counts as `unknown` (a sign of life, and a review flag).
- Catch-up: of several reminders or follow-up rounds due at once, only the latest goes; the
  follow-up reminder is skipped once that round's call flag is due.
- Emails go only inside the sending window; outside it nothing is sent and `next_due_at` is the
  next opening. Mail to a person whose address bounced is held (`pair.*_bounced`).
- Pause: while paused (PAUSED until D, to 00:00 on D+1 or an earlier RESUMED) participants get no
  email and no `no_reply` call flag is raised. Clocks restart at the resume date: first-contact
  days count again from it (sent reminders stay sent) and the next follow-up comes
  `followup_interval_days` after it; a round started before the pause gets no reminder or call.
  Missed one-off emails (introduction, checkpoint) go at the resume. Referents' urgent alerts,
  closure emails and bounce flags are not held. `pair.paused_until` is not read: the log decides.
- Flags: a person's `call` flag clears on their human reply (reason no_reply), on CALL_DONE for
  them, or on ADDRESS_CORRECTED (reason bounce). Closing a pair clears its open `call`, `review`
  and `closure_requested` flags; `urgent` and `rematch` stay open: they are the referent's to-dos
  about people, which outlive the pair. A flag asked for while the same (kind, who) is open is
  absorbed by it (never raised twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from mailflow.core.calendar import at_local, local_date, require_aware
from mailflow.core.duties import CLEARED_ON_CLOSE, duties, no_contact_deadline, split_due
from mailflow.core.flags import OpenFlag, open_flags
from mailflow.core.history import History, Pause, Stamp
from mailflow.core.model import (
    Action,
    ClearFlag,
    Decision,
    EmailKind,
    Event,
    EventKind,
    FlagKind,
    FlagReason,
    Intent,
    PairView,
    RaiseFlag,
    Role,
    SendEmail,
    State,
)
from mailflow.core.policy import Policy
from mailflow.errors import MailflowError

__all__ = [
    "TABLE",
    "Effect",
    "LifecycleError",
    "Row",
    "Trigger",
    "TransitionError",
    "decide",
    "next_state",
    "open_flags",
    "read_log",
    "record",
    "trigger_of",
]


class LifecycleError(MailflowError):
    """A pair's event log cannot be read by the lifecycle."""


class TransitionError(LifecycleError):
    """This event is not allowed in the pair's current state."""

    def __init__(self, state: State, trigger: Trigger) -> None:
        self.state, self.trigger = state, trigger
        super().__init__(f"event {trigger.value!r} is not allowed in state {state.value!r}")


class Trigger(StrEnum):
    """What moves the machine: inbound mail, operator commands, and the one state timer."""

    FIRST_CONTACT = "first_contact"  # a human reply with intent `met`, or any human reply from the mentee
    REPLY = "reply"  # any other human reply
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    CLOSED_BY_OPERATOR = "closed_by_operator"
    PAUSED = "paused"
    RESUMED = "resumed"
    CALL_DONE = "call_done"
    ADDRESS_CORRECTED = "address_corrected"
    REASSIGNED = "reassigned"
    NO_CONTACT_TIMEOUT = "no_contact_timeout"  # day 21 without first contact (a timer, not an event)


class Effect(StrEnum):
    """Side effects a row allows, besides its state change."""

    URGENT = "urgent"  # support_needed reply -> urgent flag (who = writer) + urgent_alert to the referent
    REVIEW = "review"  # unknown / difficulty reply -> review flag
    CLOSURE_REQUEST = "closure_request"  # stop reply -> closure_requested flag (state unchanged)
    BOUNCE_FLAG = "bounce_flag"  # permanent bounce -> call flag (reason bounce)


@dataclass(frozen=True)
class Row:
    next: State
    effects: frozenset[Effect] = frozenset()


_AW, _AC, _CL, _EN = State.AWAITING_FIRST_CONTACT, State.ACTIVE, State.CLOSED, State.ENDED_NO_CONTACT
_T = Trigger
_LIVE_REPLY = frozenset({Effect.URGENT, Effect.REVIEW, Effect.CLOSURE_REQUEST})
_ENDED_REPLY = frozenset({Effect.URGENT, Effect.REVIEW})  # a late message is worth reading for a rematch
_CLOSED_REPLY = frozenset({Effect.URGENT})  # after closure replies are facts; a cry for help still alerts
_BOUNCE = frozenset({Effect.BOUNCE_FLAG})

# THE transition table. A (state, trigger) missing here is not allowed: TransitionError.
TABLE: dict[tuple[State, Trigger], Row] = {
    # awaiting_first_contact: the introduction is out, waiting for the first contact
    (_AW, _T.FIRST_CONTACT): Row(_AC, _LIVE_REPLY),
    (_AW, _T.REPLY): Row(_AW, _LIVE_REPLY),
    (_AW, _T.AUTO_REPLY): Row(_AW),
    (_AW, _T.BOUNCE): Row(_AW, _BOUNCE),
    (_AW, _T.CLOSED_BY_OPERATOR): Row(_CL),
    (_AW, _T.PAUSED): Row(_AW),
    (_AW, _T.RESUMED): Row(_AW),
    (_AW, _T.CALL_DONE): Row(_AW),
    (_AW, _T.ADDRESS_CORRECTED): Row(_AW),
    (_AW, _T.REASSIGNED): Row(_AW),
    (_AW, _T.NO_CONTACT_TIMEOUT): Row(_EN),
    # active: monthly follow-ups, checkpoint at month 6
    (_AC, _T.FIRST_CONTACT): Row(_AC, _LIVE_REPLY),
    (_AC, _T.REPLY): Row(_AC, _LIVE_REPLY),
    (_AC, _T.AUTO_REPLY): Row(_AC),
    (_AC, _T.BOUNCE): Row(_AC, _BOUNCE),
    (_AC, _T.CLOSED_BY_OPERATOR): Row(_CL),
    (_AC, _T.PAUSED): Row(_AC),
    (_AC, _T.RESUMED): Row(_AC),
    (_AC, _T.CALL_DONE): Row(_AC),
    (_AC, _T.ADDRESS_CORRECTED): Row(_AC),
    (_AC, _T.REASSIGNED): Row(_AC),
    # ended_no_contact: terminal for mail; the operator may still close it (closure emails go)
    (_EN, _T.FIRST_CONTACT): Row(_EN, _ENDED_REPLY),
    (_EN, _T.REPLY): Row(_EN, _ENDED_REPLY),
    (_EN, _T.AUTO_REPLY): Row(_EN),
    (_EN, _T.BOUNCE): Row(_EN, _BOUNCE),
    (_EN, _T.CLOSED_BY_OPERATOR): Row(_CL),
    (_EN, _T.CALL_DONE): Row(_EN),
    (_EN, _T.ADDRESS_CORRECTED): Row(_EN),
    (_EN, _T.REASSIGNED): Row(_EN),
    # closed: terminal; closing again is a no-op, replies are only recorded
    (_CL, _T.FIRST_CONTACT): Row(_CL, _CLOSED_REPLY),
    (_CL, _T.REPLY): Row(_CL, _CLOSED_REPLY),
    (_CL, _T.AUTO_REPLY): Row(_CL),
    (_CL, _T.BOUNCE): Row(_CL),
    (_CL, _T.CLOSED_BY_OPERATOR): Row(_CL),
    (_CL, _T.CALL_DONE): Row(_CL),
    (_CL, _T.ADDRESS_CORRECTED): Row(_CL),
    (_CL, _T.REASSIGNED): Row(_CL),
}

# What a human reply asks for, by intent (applied when the row allows the effect).
INTENT_EFFECT: dict[Intent, tuple[Effect, FlagKind, FlagReason]] = {
    Intent.SUPPORT_NEEDED: (Effect.URGENT, FlagKind.URGENT, FlagReason.SUPPORT_NEEDED),
    Intent.UNKNOWN: (Effect.REVIEW, FlagKind.REVIEW, FlagReason.UNCLEAR_REPLY),
    Intent.DIFFICULTY: (Effect.REVIEW, FlagKind.REVIEW, FlagReason.DIFFICULTY),
    Intent.STOP: (Effect.CLOSURE_REQUEST, FlagKind.CLOSURE_REQUESTED, FlagReason.STOP),
}

_EVENT_TRIGGER = {
    EventKind.AUTO_REPLY: Trigger.AUTO_REPLY,
    EventKind.BOUNCE: Trigger.BOUNCE,
    EventKind.CLOSED_BY_OPERATOR: Trigger.CLOSED_BY_OPERATOR,
    EventKind.PAUSED: Trigger.PAUSED,
    EventKind.RESUMED: Trigger.RESUMED,
    EventKind.CALL_DONE: Trigger.CALL_DONE,
    EventKind.ADDRESS_CORRECTED: Trigger.ADDRESS_CORRECTED,
    EventKind.REASSIGNED: Trigger.REASSIGNED,
}


def next_state(state: State, trigger: Trigger) -> State:
    """The table's answer; raises TransitionError naming state and trigger when not allowed."""
    return _row(state, trigger).next


def _row(state: State, trigger: Trigger) -> Row:
    try:
        return TABLE[(state, trigger)]
    except KeyError:
        raise TransitionError(state, trigger) from None


def trigger_of(event: Event) -> Trigger | None:
    """The trigger an event is, or None for the lifecycle's own records (queued mail, flags, ...)."""
    if event.kind is EventKind.REPLY:
        first = event.intent is Intent.MET or event.who is Role.MENTEE
        return Trigger.FIRST_CONTACT if first else Trigger.REPLY
    return _EVENT_TRIGGER.get(event.kind)


# ---- reading the log ----


def read_log(events: Sequence[Event], policy: Policy) -> History:
    """Walk the log through the TABLE, collecting the facts `duties` needs."""
    h = History()
    for i, e in enumerate(events):
        reader = _RECORD_READERS.get(e.kind)
        if reader is not None:
            reader(h, i, e)
            continue
        trigger = trigger_of(e)
        if trigger is None:  # IMPORTED and other plain facts
            continue
        row = _row(h.state, trigger)
        prev, h.state = h.state, row.next
        _apply(h, i, e, row, prev, policy)
    return h


def _read_queued(h: History, i: int, e: Event) -> None:
    if e.email_kind is None or e.slot is None:
        return
    stamp = Stamp(i, e.at)
    h.queued.setdefault((e.email_kind, e.who, e.slot), stamp)
    if e.email_kind is EmailKind.INTRODUCTION and h.intro is None:
        h.intro = stamp
    if e.email_kind is EmailKind.FOLLOWUP and e.slot[1:].isdigit():
        h.followups.setdefault(int(e.slot[1:]), stamp)


def _read_state_changed(h: History, i: int, e: Event) -> None:
    to = e.data.get("to")
    if to is not None:
        h.state = State(to)


def _read_flag_raised(h: History, i: int, e: Event) -> None:
    if e.flag is None:
        return
    key = (e.flag, e.who)
    if key not in h.open_flags:
        h.open_flags[key] = OpenFlag(e.flag, e.who, e.reason or "", e.at, i)
    h.raised[(e.flag, e.who, e.reason or "")] = i
    h.pending_raises.pop(key, None)


def _read_flag_cleared(h: History, i: int, e: Event) -> None:
    if e.flag is not None:
        h.open_flags.pop((e.flag, e.who), None)
        h.last_cleared[(e.flag, e.who)] = i


_RECORD_READERS: dict[EventKind, Callable[[History, int, Event], None]] = {
    EventKind.EMAIL_QUEUED: _read_queued,
    EventKind.STATE_CHANGED: _read_state_changed,
    EventKind.FLAG_RAISED: _read_flag_raised,
    EventKind.FLAG_CLEARED: _read_flag_cleared,
}


def _apply(h: History, i: int, e: Event, row: Row, prev: State, policy: Policy) -> None:
    kind = e.kind
    if kind is EventKind.REPLY:
        _apply_reply(h, i, e, row, prev)
    elif kind is EventKind.BOUNCE:
        if e.data.get("permanent", "false").lower() == "true" and Effect.BOUNCE_FLAG in row.effects:
            _ask_flag(h, FlagKind.CALL, e.who, FlagReason.BOUNCE)
    elif kind is EventKind.CLOSED_BY_OPERATOR and prev is not State.CLOSED:
        h.closed = i
        for key in [k for k in h.pending_raises if k[0] in CLEARED_ON_CLOSE]:
            del h.pending_raises[key]
    elif kind is EventKind.PAUSED:
        h.pause = _pause(i, e, policy)
    elif kind is EventKind.RESUMED and h.pause is not None:
        if h.pause.resume_at is None or e.at < h.pause.resume_at:
            h.pause = replace(h.pause, resume_at=e.at, resume_date=local_date(e.at, policy))
    elif kind is EventKind.CALL_DONE:
        h.call_done[e.who] = i
    elif kind is EventKind.ADDRESS_CORRECTED:
        h.corrected[e.who] = i
        if h.pending_raises.get((FlagKind.CALL, e.who)) == FlagReason.BOUNCE:
            del h.pending_raises[(FlagKind.CALL, e.who)]


def _apply_reply(h: History, i: int, e: Event, row: Row, prev: State) -> None:
    h.last_reply[e.who] = i
    if prev is State.AWAITING_FIRST_CONTACT and row.next is State.ACTIVE:
        h.activation = Stamp(i, e.at)
    effect = INTENT_EFFECT.get(e.intent or Intent.UNKNOWN)
    if effect is None or effect[0] not in row.effects:
        return
    _, flag, reason = effect
    _ask_flag(h, flag, None if flag is FlagKind.CLOSURE_REQUESTED else e.who, reason)
    if flag is FlagKind.URGENT:
        h.support_replies.append(i)


def _ask_flag(h: History, kind: FlagKind, who: Role | None, reason: str) -> None:
    if (kind, who) not in h.open_flags:  # an open flag of that kind and person absorbs the request
        h.pending_raises.setdefault((kind, who), str(reason))


def _pause(i: int, e: Event, policy: Policy) -> Pause:
    until = e.data.get("until")
    if not until:
        return Pause(i, None, None)
    try:
        resume_date = date.fromisoformat(until) + timedelta(days=1)
    except ValueError as exc:
        raise LifecycleError(f"PAUSED event {i} has an invalid 'until' date {until!r}") from exc
    return Pause(i, at_local(resume_date, time(0), policy), resume_date)


# ---- deciding ----

_MAX_ROUNDS = 8  # a pass settles in 2 rounds (actions, then none); more means a rule bug


def decide(pair: PairView, now: datetime, events: Sequence[Event], policy: Policy) -> Decision:
    """Everything due at `now` that the log does not show as done, the state, and the next due instant."""
    require_aware(now)
    log = list(events)
    state: State = pair.state
    actions: list[Action] = []
    for _ in range(_MAX_ROUNDS):
        new_state, new_actions, next_due_at = _decide_once(pair, now, log, policy)
        if not new_actions and new_state is state:
            return Decision(new_state, tuple(actions), next_due_at)
        actions.extend(new_actions)
        log.extend(record(state, Decision(new_state, tuple(new_actions), None), now))
        state = new_state
    raise LifecycleError(f"pair {pair.ref}: the lifecycle did not settle at {now.isoformat()}")


def _decide_once(pair: PairView, now: datetime, log: Sequence[Event], policy: Policy) -> tuple[State, list[Action], datetime | None]:
    h = read_log(log, policy)
    state = h.state
    deadline = no_contact_deadline(h, policy)
    if state is State.AWAITING_FIRST_CONTACT and deadline is not None and deadline <= now:
        state = next_state(state, Trigger.NO_CONTACT_TIMEOUT)
    items = duties(h, state, pair, now, policy, deadline)
    actions, next_due_at = split_due(items, now, policy)
    return state, actions, next_due_at


def record(previous: State, decision: Decision, now: datetime) -> list[Event]:
    """The events a caller appends for `decision` (what makes its actions "done")."""
    out: list[Event] = []
    if decision.state is not previous:
        out.append(Event(EventKind.STATE_CHANGED, now, data={"from": previous.value, "to": decision.state.value}))
    for a in decision.actions:
        if isinstance(a, SendEmail):
            out.append(Event(EventKind.EMAIL_QUEUED, now, who=a.to, email_kind=a.kind, slot=a.slot))
        elif isinstance(a, RaiseFlag):
            out.append(Event(EventKind.FLAG_RAISED, now, who=a.who, flag=a.kind, reason=a.reason))
        elif isinstance(a, ClearFlag):
            out.append(Event(EventKind.FLAG_CLEARED, now, who=a.who, flag=a.kind, reason=a.reason))
    return out

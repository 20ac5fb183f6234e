"""Properties of the lifecycle under random histories: a caller-like driver replays random inbound
events and time jumps, records every decision as the caller does, and checks the promises."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core.calendar import in_window, local_date
from mailflow.core.lifecycle import TransitionError, decide, next_state, open_flags, record, trigger_of
from mailflow.core.model import (
    EmailKind,
    Event,
    EventKind,
    FlagKind,
    Intent,
    RaiseFlag,
    Role,
    SendEmail,
    State,
)
from tests.unit.lifecycle_sim import PARIS, POLICY, Sim

TERMINAL = (State.CLOSED, State.ENDED_NO_CONTACT)
PEOPLE = st.sampled_from([Role.MENTOR, Role.MENTEE])


@dataclass(frozen=True)
class Inbound:
    kind: EventKind
    who: Role | None = None
    intent: Intent | None = None
    data: tuple[tuple[str, str], ...] = ()


replies = st.one_of(
    st.builds(Inbound, st.just(EventKind.REPLY), PEOPLE, st.sampled_from(list(Intent))),
    st.builds(Inbound, st.just(EventKind.REPLY), PEOPLE, st.sampled_from([Intent.OK, Intent.MET, Intent.CONTINUE])),
)
not_closing = st.one_of(
    replies,
    st.builds(Inbound, st.just(EventKind.AUTO_REPLY), PEOPLE),
    st.builds(Inbound, st.just(EventKind.BOUNCE), PEOPLE, st.none(), st.sampled_from([(("permanent", "true"),), (("permanent", "false"),)])),
    st.builds(Inbound, st.just(EventKind.ADDRESS_CORRECTED), PEOPLE),
    st.builds(Inbound, st.just(EventKind.CALL_DONE), PEOPLE, st.none(), st.just((("note", "called"),))),
    st.builds(Inbound, st.just(EventKind.PAUSED), st.none(), st.none(), st.integers(0, 60).map(lambda n: (("days", str(n)),))),
    st.builds(Inbound, st.just(EventKind.RESUMED)),
    st.builds(Inbound, st.just(EventKind.REASSIGNED)),
)
inbound = st.one_of(replies, replies, not_closing, st.just(Inbound(EventKind.CLOSED_BY_OPERATOR)))
# (hours to advance, event or None); the daemon also runs at every next_due_at in between
steps = st.lists(st.tuples(st.integers(0, 24 * 20), st.integers(0, 59), st.none() | inbound), min_size=1, max_size=30)


class Checker(Sim):
    """The Sim driver plus the invariants, checked at every pass."""

    emailed: set[tuple[EmailKind, Role, str]]

    def step(self, now: datetime) -> object:
        before_state, before_log = self.pair.state, list(self.events)
        d = decide(self.pair, now, self.events, self.policy)
        assert d == decide(self.pair, now, self.events, self.policy)  # pure: same log, same answer
        assert d.next_due_at is None or d.next_due_at > now
        sends = [a for a in d.actions if isinstance(a, SendEmail)]
        if sends:
            assert in_window(now, self.policy), f"email outside the window at {now}"
        for a in sends:
            key = (a.kind, a.to, a.slot)
            assert key not in self.emailed, f"second {key}"
            self.emailed.add(key)
            assert not (a.to is Role.MENTOR and self.pair.mentor_bounced), a
            assert not (a.to is Role.MENTEE and self.pair.mentee_bounced), a
            if a.to is not Role.REFERENT and a.kind is not EmailKind.CLOSURE:
                assert not self.paused_at(now), f"{a} during a pause"
        if self.paused_at(now):
            assert RaiseFlag(FlagKind.CALL, Role.MENTOR, "no_reply") not in d.actions
            assert RaiseFlag(FlagKind.CALL, Role.MENTEE, "no_reply") not in d.actions
        if before_state in TERMINAL and d.state is not before_state:
            last = before_log[-1] if before_log else None
            assert last is not None and last.kind is EventKind.CLOSED_BY_OPERATOR and d.state is State.CLOSED
        self.events.extend(record(self.pair.state, d, now))
        self.pair = replace(self.pair, state=d.state)
        self.done.extend((now, a) for a in d.actions)
        again = decide(self.pair, now, self.events, self.policy)  # recorded: nothing left at this instant
        assert again.actions == () and again.state is d.state and again.next_due_at == d.next_due_at
        self.last = d
        return d

    def paused_at(self, now: datetime) -> bool:
        """Whether the last PAUSED (until D, or until an earlier RESUMED) covers `now`."""
        pause = next((i for i in range(len(self.events) - 1, -1, -1) if self.events[i].kind is EventKind.PAUSED), None)
        if pause is None:
            return False
        if any(e.kind is EventKind.RESUMED for e in self.events[pause:]):
            return False
        return local_date(now, self.policy) <= date.fromisoformat(self.events[pause].data["until"])


def play(matched_on: date, start: datetime, script: list[tuple[int, int, Inbound | None]]) -> Checker:
    c = Checker(matched_on)
    c.emailed = set()
    now = start
    c.step(now)
    for hours, minutes, ev in script:
        target = now + timedelta(hours=hours, minutes=minutes)
        while c.last is not None and c.last.next_due_at is not None and c.last.next_due_at <= target:
            now = c.last.next_due_at
            c.step(now)
        now = target
        if ev is None:
            c.step(now)
        else:
            deliver(c, now, ev)
    return c


def deliver(c: Checker, now: datetime, ev: Inbound) -> None:
    data = dict(ev.data)
    if ev.kind is EventKind.PAUSED:
        data = {"until": (local_date(now, POLICY) + timedelta(days=int(data.pop("days")))).isoformat()}
    event = Event(ev.kind, now, who=ev.who, intent=ev.intent, data=data)
    trigger = trigger_of(event)
    assert trigger is not None
    try:
        next_state(c.pair.state, trigger)
    except TransitionError:  # the CLI refuses it: it never enters the log
        return
    replied = ev.kind is EventKind.REPLY
    c.add(ev.kind, now, ev.who, intent=ev.intent, data=data)
    c.step(now)
    if replied:  # a person's no_reply call flag clears when they reply
        assert open_flags(c.events).get((FlagKind.CALL, ev.who)) != "no_reply"


@settings(max_examples=200, deadline=None)
@given(
    matched_on=st.dates(date(2026, 1, 1), date(2027, 12, 31)),
    delay_days=st.integers(0, 60),
    start_minute=st.integers(0, 24 * 60 - 1),
    script=steps,
)
def test_random_histories_keep_every_promise(matched_on: date, delay_days: int, start_minute: int, script: list) -> None:
    start = datetime.combine(matched_on + timedelta(days=delay_days), datetime.min.time(), tzinfo=PARIS)
    start = start + timedelta(minutes=start_minute)
    c = play(matched_on, start, script)
    slots = [a.slot for _, a in c.done if isinstance(a, SendEmail) and a.kind is EmailKind.FIRST_CONTACT_REMINDER]
    assert slots == sorted(slots, key=lambda s: int(s[1:]))  # never an older reminder after a newer one
    states = [e.data["to"] for e in c.events if e.kind is EventKind.STATE_CHANGED]
    assert len(states) <= 2  # awaiting -> active|ended, then at most -> closed


@settings(max_examples=100, deadline=None)
@given(
    matched_on=st.dates(date(2026, 1, 1), date(2027, 12, 31)),
    script=st.lists(st.tuples(st.integers(0, 24 * 30), st.integers(0, 59), st.none() | not_closing), max_size=20),
)
def test_active_pairs_over_a_year(matched_on: date, script: list) -> None:
    start = datetime.combine(matched_on, datetime.min.time(), tzinfo=PARIS) + timedelta(hours=9)
    first = (24, 0, Inbound(EventKind.REPLY, Role.MENTEE, Intent.MET))
    c = play(matched_on, start, [first, *script, (24 * 400, 0, None)])
    rounds = [int(a.slot[1:]) for _, a in c.done if isinstance(a, SendEmail) and a.kind is EmailKind.FOLLOWUP]
    assert rounds == sorted(rounds)
    checkpoints = {a.to for _, a in c.done if isinstance(a, SendEmail) and a.kind is EmailKind.CHECKPOINT}
    bounced = {Role.MENTOR} if c.pair.mentor_bounced else set()
    bounced |= {Role.MENTEE} if c.pair.mentee_bounced else set()
    if c.pair.state is State.ACTIVE and not c.paused_at(c.events[-1].at):
        assert checkpoints | bounced >= {Role.MENTOR, Role.MENTEE}  # a year later, month 6 has gone


@settings(max_examples=50, deadline=None)
@given(matched_on=st.dates(date(2026, 1, 1), date(2027, 12, 31)), start_minute=st.integers(0, 24 * 60 - 1))
def test_a_silent_pair_ends_on_day_21_whatever_the_start(matched_on: date, start_minute: int) -> None:
    start = datetime.combine(matched_on, datetime.min.time(), tzinfo=PARIS) + timedelta(minutes=start_minute)
    c = play(matched_on, start, [(24 * 40, 0, None)])
    assert c.pair.state is State.ENDED_NO_CONTACT
    intro_day = local_date(next(t for t, a in c.done if isinstance(a, SendEmail)), POLICY)
    end_at = next(t for t, a in c.done if isinstance(a, SendEmail) and a.kind is EmailKind.NO_CONTACT_NOTICE)
    assert 21 <= (local_date(end_at, POLICY) - intro_day).days <= 22  # Sunday -> Monday

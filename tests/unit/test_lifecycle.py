"""The lifecycle: the whole transition table, then every calendar line of CONTRACT.md as a scenario."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from itertools import product

import pytest

from mailflow.core.lifecycle import TABLE, TransitionError, Trigger, decide, next_state, open_flags, record, trigger_of
from mailflow.core.model import (
    ClearFlag,
    Decision,
    EmailKind,
    Event,
    EventKind,
    FlagKind,
    Intent,
    PairView,
    RaiseFlag,
    Role,
    SendEmail,
    State,
)
from mailflow.core.policy import Policy
from tests.unit.lifecycle_sim import PARIS, POLICY, Sim, at8, paris

AW, AC, CL, EN = State.AWAITING_FIRST_CONTACT, State.ACTIVE, State.CLOSED, State.ENDED_NO_CONTACT
T = Trigger
MENTOR, MENTEE, REFERENT = Role.MENTOR, Role.MENTEE, Role.REFERENT
K = EmailKind
MON = date(2026, 1, 5)  # a Monday in winter

# The specification of the table, written independently of it: None = not allowed.
EXPECTED: dict[State, dict[Trigger, State | None]] = {
    AW: {T.FIRST_CONTACT: AC, T.NO_CONTACT_TIMEOUT: EN, T.CLOSED_BY_OPERATOR: CL},
    AC: {T.NO_CONTACT_TIMEOUT: None, T.CLOSED_BY_OPERATOR: CL},
    EN: {T.PAUSED: None, T.RESUMED: None, T.NO_CONTACT_TIMEOUT: None, T.CLOSED_BY_OPERATOR: CL},
    CL: {T.PAUSED: None, T.RESUMED: None, T.NO_CONTACT_TIMEOUT: None},
}


def expected_next(state: State, trigger: Trigger) -> State | None:
    return EXPECTED[state].get(trigger, state)  # anything else keeps the state


@pytest.mark.parametrize(("state", "trigger"), list(product(State, Trigger)))
def test_transition_table(state: State, trigger: Trigger) -> None:
    expected = expected_next(state, trigger)
    if expected is None:
        assert (state, trigger) not in TABLE
        with pytest.raises(TransitionError, match=f"'{trigger.value}'.*'{state.value}'"):
            next_state(state, trigger)
    else:
        assert next_state(state, trigger) is expected


def test_table_has_no_extra_rows() -> None:
    assert {k for k in product(State, Trigger) if expected_next(*k) is not None} == set(TABLE)


@pytest.mark.parametrize(
    ("event", "trigger"),
    [
        (Event(EventKind.REPLY, paris(2026, 1, 5), who=MENTEE, intent=Intent.OK), T.FIRST_CONTACT),
        (Event(EventKind.REPLY, paris(2026, 1, 5), who=MENTOR, intent=Intent.MET), T.FIRST_CONTACT),
        (Event(EventKind.REPLY, paris(2026, 1, 5), who=MENTOR, intent=Intent.OK), T.REPLY),
        (Event(EventKind.AUTO_REPLY, paris(2026, 1, 5), who=MENTEE), T.AUTO_REPLY),
        (Event(EventKind.EMAIL_QUEUED, paris(2026, 1, 5), who=MENTEE), None),
        (Event(EventKind.IMPORTED, paris(2026, 1, 5)), None),
    ],
)
def test_trigger_of(event: Event, trigger: Trigger | None) -> None:
    assert trigger_of(event) is trigger


# ---- the table through decide: each state x each inbound event kind / intent ----

T0 = paris(2026, 1, 5, 9)  # Monday, in the window


def sim_in(state: State) -> tuple[Sim, datetime]:
    """A pair in `state`, every action recorded; returns the sim and an instant inside the window."""
    s = Sim(MON)
    s.step(T0)  # introductions
    if state is AC:
        s.reply(paris(2026, 1, 6, 9), MENTEE)
        return s, paris(2026, 1, 7, 9)
    if state is EN:
        s.run_until(paris(2026, 1, 27, 9), T0)
        return s, paris(2026, 1, 27, 9)
    if state is CL:
        s.reply(paris(2026, 1, 6, 9), MENTEE)
        s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 6, 10))
        return s, paris(2026, 1, 7, 9)
    return s, paris(2026, 1, 6, 9)


REPLY_CASES = list(product(State, (MENTOR, MENTEE), Intent))


def raised(d: Decision) -> set[tuple[FlagKind, Role | None, str]]:
    return {(a.kind, a.who, a.reason) for a in d.actions if isinstance(a, RaiseFlag)}


def emails(d: Decision) -> set[tuple[EmailKind, Role, str]]:
    return {(a.kind, a.to, a.slot) for a in d.actions if isinstance(a, SendEmail)}


def expected_reply_flags(state: State, who: Role, intent: Intent) -> set[tuple[FlagKind, Role | None, str]]:
    flags = {
        Intent.SUPPORT_NEEDED: (FlagKind.URGENT, who, "support_needed"),
        Intent.UNKNOWN: (FlagKind.REVIEW, who, "unclear_reply"),
        Intent.DIFFICULTY: (FlagKind.REVIEW, who, "difficulty"),
        Intent.STOP: (FlagKind.CLOSURE_REQUESTED, None, "stop"),
    }
    allowed = {AW: set(Intent), AC: set(Intent), EN: {Intent.SUPPORT_NEEDED, Intent.UNKNOWN, Intent.DIFFICULTY}}
    if intent not in flags or intent not in allowed.get(state, {Intent.SUPPORT_NEEDED}):
        return set()
    return {flags[intent]}


@pytest.mark.parametrize(("state", "who", "intent"), REPLY_CASES)
def test_reply_in_each_state(state: State, who: Role, intent: Intent) -> None:
    s, now = sim_in(state)
    d = s.reply(now, who, intent)
    first_contact = intent is Intent.MET or who is MENTEE
    assert d.state is (AC if state is AW and first_contact else state)
    assert raised(d) == expected_reply_flags(state, who, intent)
    alert = {(K.URGENT_ALERT, REFERENT, f"u{len(s.events) - len(d.actions) - (d.state != state) - 1}")}
    assert emails(d) == (alert if intent is Intent.SUPPORT_NEEDED else set())
    assert decide(s.pair, now, s.events, POLICY).actions == ()


OTHER_CASES = [
    (EventKind.AUTO_REPLY, MENTEE, {}),
    (EventKind.BOUNCE, MENTEE, {"permanent": "true"}),
    (EventKind.BOUNCE, MENTOR, {"permanent": "false"}),
    (EventKind.CLOSED_BY_OPERATOR, None, {}),
    (EventKind.PAUSED, None, {"until": "2026-02-20"}),
    (EventKind.RESUMED, None, {}),
    (EventKind.CALL_DONE, MENTOR, {"note": "ok"}),
    (EventKind.ADDRESS_CORRECTED, MENTEE, {}),
    (EventKind.REASSIGNED, None, {}),
]


@pytest.mark.parametrize(("state", "case"), list(product(State, OTHER_CASES)), ids=str)
def test_other_events_in_each_state(state: State, case: tuple[EventKind, Role | None, dict[str, str]]) -> None:
    kind, who, data = case
    s, now = sim_in(state)
    trigger = trigger_of(Event(kind, now))
    assert trigger is not None
    if expected_next(state, trigger) is None:
        with pytest.raises(TransitionError):
            s.inbound(kind, now, who, data=data)
        return
    before = open_flags(s.events)
    d = s.inbound(kind, now, who, data=data)
    assert d.state is expected_next(state, trigger)
    if kind is EventKind.BOUNCE and data["permanent"] == "true" and state is not CL:
        assert raised(d) == {(FlagKind.CALL, who, "bounce")}
    elif kind is EventKind.CLOSED_BY_OPERATOR and state is not CL:
        assert emails(d) == {(K.CLOSURE, MENTOR, "close"), (K.CLOSURE, MENTEE, "close")}
        assert {(a.kind, a.who) for a in d.actions if isinstance(a, ClearFlag)} == {
            k for k in before if k[0] not in (FlagKind.URGENT, FlagKind.REMATCH)
        }
    else:
        assert [a for a in d.actions if not isinstance(a, ClearFlag)] == []


# ---- day 0: introductions ----


def test_introduction_to_both_at_once_inside_window() -> None:
    s = Sim(MON)
    d = s.step(T0)
    assert d.state is AW
    assert emails(d) == {(K.INTRODUCTION, MENTOR, "intro"), (K.INTRODUCTION, MENTEE, "intro")}
    assert d.next_due_at == paris(2026, 1, 12, 8)  # day 7 reminder
    assert s.step(T0).actions == ()


def test_introduction_waits_for_the_window() -> None:
    s = Sim(date(2026, 1, 10))
    d = s.step(paris(2026, 1, 10, 21))  # Saturday evening
    assert d.actions == () and d.next_due_at == paris(2026, 1, 12, 8)
    d = s.step(d.next_due_at)
    assert len(emails(d)) == 2
    assert s.wall(K.FIRST_CONTACT_REMINDER) == []
    s.run_until(paris(2026, 2, 10), paris(2026, 1, 12, 8))
    # day N counts from the day the introduction was sent (Monday 12th), not matched_on
    assert s.wall(K.FIRST_CONTACT_REMINDER) == [("2026-01-19 08:00", "mentee", "d7"), ("2026-01-26 08:00", "mentee", "d14")]
    assert s.wall(K.NO_CONTACT_NOTICE) == [("2026-02-02 08:00", "mentor", "end")]


def test_import_40_days_late_counts_from_the_introduction() -> None:
    now = paris(2026, 3, 3, 11)
    s = Sim(now.date() - timedelta(days=40))
    d = s.step(now)
    assert s.sent() == [("introduction", "mentor", "intro"), ("introduction", "mentee", "intro")]
    assert d.state is AW and d.next_due_at == paris(2026, 3, 10, 8)
    s.run_until(paris(2026, 3, 30), now)
    assert [slot for _, _, slot in s.sent(K.FIRST_CONTACT_REMINDER)] == ["d7", "d14"]
    assert s.wall(K.NO_CONTACT_NOTICE) == [("2026-03-24 08:00", "mentor", "end")]


def test_full_first_contact_window_ends_on_day_21() -> None:
    s = Sim(MON)
    s.run_until(paris(2026, 3, 1), T0)
    assert s.wall(K.FIRST_CONTACT_REMINDER) == [("2026-01-12 08:00", "mentee", "d7"), ("2026-01-19 08:00", "mentee", "d14")]
    assert s.wall(K.NO_CONTACT_NOTICE) == [("2026-01-26 08:00", "mentor", "end")]
    assert s.state is EN
    assert open_flags(s.events) == {(FlagKind.REMATCH, MENTOR): "no_contact"}
    assert s.last is not None and s.last.next_due_at is None


def test_day_21_state_change_is_recorded() -> None:
    s = Sim(MON)
    s.run_until(paris(2026, 1, 26, 8), T0)
    changes = [e.data for e in s.events if e.kind is EventKind.STATE_CHANGED]
    assert changes == [{"from": "awaiting_first_contact", "to": "ended_no_contact"}]


def test_catch_up_after_downtime_sends_only_the_latest_reminder() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.step(paris(2026, 1, 20, 9))  # down from day 6 to day 15
    assert emails(d) == {(K.FIRST_CONTACT_REMINDER, MENTEE, "d14")}
    s.run_until(paris(2026, 1, 25), paris(2026, 1, 20, 9))
    assert [slot for *_, slot in s.sent(K.FIRST_CONTACT_REMINDER)] == ["d14"]  # never d7 after d14


def test_catch_up_past_day_21_ends_without_stale_reminders() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.step(paris(2026, 2, 3, 9))
    assert d.state is EN
    assert emails(d) == {(K.NO_CONTACT_NOTICE, MENTOR, "end")}


def test_reply_read_in_the_catch_up_pass_wins_over_an_overdue_deadline() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.reply(paris(2026, 2, 3, 9), MENTEE)
    assert d.state is AC and emails(d) == set()


# ---- first contact and activation ----


def test_activation_by_any_mentee_reply() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.reply(paris(2026, 1, 8, 15), MENTEE, Intent.OK)
    assert d.state is AC
    assert d.next_due_at == paris(2026, 2, 7, 8)  # activation day + 30 (Saturday)


def test_activation_by_met_from_the_mentor() -> None:
    s = Sim(MON)
    s.step(T0)
    assert s.reply(paris(2026, 1, 8, 15), MENTOR, Intent.OK).state is AW
    assert s.reply(paris(2026, 1, 9, 15), MENTOR, Intent.MET).state is AC
    s.run_until(paris(2026, 2, 9), paris(2026, 1, 9, 15))
    assert s.wall(K.FOLLOWUP) == [("2026-02-09 08:00", "mentor", "f1"), ("2026-02-09 08:00", "mentee", "f1")]  # Sun -> Mon


def test_auto_reply_is_not_a_first_contact() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.inbound(EventKind.AUTO_REPLY, paris(2026, 1, 8, 15), MENTEE)
    assert d.state is AW and d.actions == ()


def test_activation_late_at_night_counts_from_the_paris_date() -> None:
    s = Sim(MON)
    s.step(T0)
    s.reply(paris(2026, 1, 8, 23, 30), MENTEE)  # 22:30 UTC: still the 8th in Paris
    assert s.last is not None and s.last.next_due_at == paris(2026, 2, 7, 8)


# ---- monthly follow-ups ----


def active_sim() -> Sim:
    """Activated Thursday 8 Jan 2026: f1 Sat 7 Feb, f2 Mon 9 Mar (Sun 8 -> Mon), f3 Tue 7 Apr."""
    s = Sim(MON)
    s.step(T0)
    s.reply(paris(2026, 1, 8, 15), MENTEE)
    return s


def test_followup_reminder_to_the_silent_one_then_call_flag_then_cleared_by_reply() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 8, 12), paris(2026, 1, 8, 15))
    assert s.wall(K.FOLLOWUP) == [("2026-02-07 08:00", "mentor", "f1"), ("2026-02-07 08:00", "mentee", "f1")]
    d = s.reply(paris(2026, 2, 8, 12), MENTOR, Intent.OK)  # Sunday: replies are read any day
    assert d.actions == () and d.next_due_at == paris(2026, 2, 11, 8)  # day 4 = Wednesday 11th
    s.run_until(paris(2026, 2, 14, 12), paris(2026, 2, 8, 12))
    assert s.wall(K.FOLLOWUP_REMINDER) == [("2026-02-11 08:00", "mentee", "f1")]
    assert open_flags(s.events) == {(FlagKind.CALL, MENTEE): "no_reply"}
    assert [(t.astimezone(PARIS).day, a) for t, a in s.done if isinstance(a, RaiseFlag)] == [(14, RaiseFlag(FlagKind.CALL, MENTEE, "no_reply"))]
    d = s.reply(paris(2026, 2, 15, 18), MENTEE, Intent.OK)
    assert d.actions == (ClearFlag(FlagKind.CALL, MENTEE, "replied"),)
    assert open_flags(s.events) == {}


def test_call_flag_is_raised_once_per_person_per_round() -> None:
    s = active_sim()
    s.run_until(paris(2026, 4, 20), paris(2026, 1, 8, 15))
    calls = [a for _, a in s.done if isinstance(a, RaiseFlag)]
    assert calls == [RaiseFlag(FlagKind.CALL, MENTOR, "no_reply"), RaiseFlag(FlagKind.CALL, MENTEE, "no_reply")]
    s.inbound(EventKind.CALL_DONE, paris(2026, 4, 20, 10), MENTOR, data={"note": "n"})
    assert open_flags(s.events) == {(FlagKind.CALL, MENTEE): "no_reply"}
    # round 3 went on 7 April and its call day has passed: no second flag for that round
    assert decide(s.pair, paris(2026, 4, 21, 10), s.events, POLICY).actions == ()


def test_followup_catch_up_sends_only_the_latest_round() -> None:
    s = active_sim()
    d = s.step(paris(2026, 3, 10, 9))  # down from 8 Jan to 10 March: rounds 1 and 2 due
    assert emails(d) == {(K.FOLLOWUP, MENTOR, "f2"), (K.FOLLOWUP, MENTEE, "f2")}
    assert d.next_due_at == paris(2026, 3, 14, 8)  # that round's reminder, from the day it went


def test_stale_round_duties_are_dropped_when_a_new_round_is_due() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 7, 8), paris(2026, 1, 8, 15))  # f1 goes
    d = s.step(paris(2026, 3, 10, 9))  # down for a month: f1's reminder and call are superseded
    assert emails(d) == {(K.FOLLOWUP, MENTOR, "f2"), (K.FOLLOWUP, MENTEE, "f2")}
    assert raised(d) == set()


def test_followup_reminder_skipped_once_the_call_is_due() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 7, 8), paris(2026, 1, 8, 15))
    d = s.step(paris(2026, 2, 16, 9))  # down over day 4 and day 7
    assert emails(d) == set()
    assert raised(d) == {(FlagKind.CALL, MENTOR, "no_reply"), (FlagKind.CALL, MENTEE, "no_reply")}


def test_unknown_reply_is_a_sign_of_life_and_asks_review() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 16, 9), paris(2026, 1, 8, 15))
    d = s.reply(paris(2026, 2, 16, 10), MENTEE, Intent.UNKNOWN)
    assert set(d.actions) == {ClearFlag(FlagKind.CALL, MENTEE, "replied"), RaiseFlag(FlagKind.REVIEW, MENTEE, "unclear_reply")}


# ---- month 6 ----


def test_checkpoint_on_a_sunday_goes_monday_0800() -> None:
    s = Sim(date(2026, 1, 5))  # + 6 months = Sunday 5 July 2026
    s.step(T0)
    s.reply(paris(2026, 1, 6, 10), MENTEE, Intent.MET)
    s.run_until(paris(2026, 7, 10), paris(2026, 1, 6, 10))
    assert s.wall(K.CHECKPOINT) == [("2026-07-06 08:00", "mentor", "m6"), ("2026-07-06 08:00", "mentee", "m6")]


def test_checkpoint_clamps_to_month_end() -> None:
    s = Sim(date(2026, 8, 31))  # + 6 months = 28 Feb 2027 (a Sunday) -> Monday 1 March
    s.step(paris(2026, 8, 31, 9))
    s.reply(paris(2026, 9, 1, 10), MENTEE)
    s.run_until(paris(2027, 3, 5), paris(2026, 9, 1, 10))
    assert s.wall(K.CHECKPOINT)[0][0] == "2027-03-01 08:00"


def test_no_checkpoint_unless_active() -> None:
    s = Sim(MON)
    s.run_until(paris(2026, 8, 1), T0)
    assert s.state is EN and s.sent(K.CHECKPOINT) == []


def test_continue_keeps_the_monthly_rhythm() -> None:
    s = active_sim()
    s.run_until(paris(2026, 7, 7), paris(2026, 1, 8, 15))
    d = s.reply(paris(2026, 7, 7, 10), MENTOR, Intent.CONTINUE)
    assert d.actions == (ClearFlag(FlagKind.CALL, MENTOR, "replied"),) and d.state is AC  # silent since February
    assert d.next_due_at == paris(2026, 7, 11, 8)  # f6 went on 7 July: the mentee's reminder on day 4


# ---- stop, closure ----


def test_stop_requests_closure_without_changing_state() -> None:
    s = active_sim()
    d = s.reply(paris(2026, 1, 20, 10), MENTOR, Intent.STOP)
    assert d.state is AC and d.actions == (RaiseFlag(FlagKind.CLOSURE_REQUESTED, None, "stop"),)
    assert s.reply(paris(2026, 1, 21, 10), MENTEE, Intent.STOP).actions == ()  # already open


def test_operator_close_sends_closure_to_both_and_clears_flags() -> None:
    s = active_sim()
    s.reply(paris(2026, 1, 20, 10), MENTOR, Intent.STOP)
    s.reply(paris(2026, 1, 20, 11), MENTEE, Intent.SUPPORT_NEEDED)
    d = s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 21, 10))
    assert d.state is CL and d.next_due_at is None
    assert emails(d) == {(K.CLOSURE, MENTOR, "close"), (K.CLOSURE, MENTEE, "close")}
    assert open_flags(s.events) == {(FlagKind.URGENT, MENTEE): "support_needed"}  # urgent stays


def test_operator_close_outside_the_window_queues_closure_at_next_opening() -> None:
    s = active_sim()
    d = s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 10, 22))
    assert d.state is CL and d.actions == () and d.next_due_at == paris(2026, 1, 12, 8)
    assert emails(s.step(d.next_due_at)) == {(K.CLOSURE, MENTOR, "close"), (K.CLOSURE, MENTEE, "close")}


def test_replies_after_closure_change_nothing() -> None:
    s = active_sim()
    s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 21, 10))
    for intent in (Intent.AVAILABLE, Intent.UNAVAILABLE, Intent.STOP, Intent.UNKNOWN, Intent.MET):
        d = s.reply(paris(2026, 1, 22, 10), MENTEE, intent)
        assert d.state is CL and d.actions == () and d.next_due_at is None
    s.run_until(paris(2026, 12, 31), paris(2026, 1, 22, 10))
    assert {kind for kind, _, _ in s.sent()} == {"introduction", "closure"}


def test_close_twice_is_a_noop() -> None:
    s = active_sim()
    s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 21, 10))
    assert s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 22, 10)).actions == ()


def test_pausing_a_closed_pair_is_refused() -> None:
    s = active_sim()
    s.inbound(EventKind.CLOSED_BY_OPERATOR, paris(2026, 1, 21, 10))
    with pytest.raises(TransitionError, match="'paused' is not allowed in state 'closed'"):
        s.inbound(EventKind.PAUSED, paris(2026, 1, 22, 10), data={"until": "2026-03-01"})


# ---- urgent ----


def test_support_needed_alerts_the_referent_in_the_same_pass() -> None:
    s = active_sim()
    d = s.reply(paris(2026, 1, 20, 10), MENTEE, Intent.SUPPORT_NEEDED)
    index = next(i for i, e in enumerate(s.events) if e.kind is EventKind.REPLY and e.intent is Intent.SUPPORT_NEEDED)
    assert set(d.actions) == {
        RaiseFlag(FlagKind.URGENT, MENTEE, "support_needed"),
        SendEmail(K.URGENT_ALERT, REFERENT, f"u{index}"),
    }
    d = s.reply(paris(2026, 1, 20, 11), MENTEE, Intent.SUPPORT_NEEDED)  # a second cry: alert again, one flag
    assert [a.kind for a in d.actions] == [K.URGENT_ALERT]


def test_support_needed_outside_window_flags_now_and_alerts_at_next_opening() -> None:
    s = active_sim()
    d = s.reply(paris(2026, 1, 11, 10), MENTEE, Intent.SUPPORT_NEEDED)  # Sunday
    assert d.actions == (RaiseFlag(FlagKind.URGENT, MENTEE, "support_needed"),)
    assert d.next_due_at == paris(2026, 1, 12, 8)
    assert [a.kind for a in s.step(d.next_due_at).actions] == [K.URGENT_ALERT]


# ---- bounces ----


def test_permanent_bounce_holds_mail_until_the_address_is_corrected() -> None:
    s = Sim(MON)
    s.step(T0)
    d = s.inbound(EventKind.BOUNCE, paris(2026, 1, 5, 10), MENTEE, data={"permanent": "true"})
    assert d.actions == (RaiseFlag(FlagKind.CALL, MENTEE, "bounce"),)
    assert d.next_due_at == paris(2026, 1, 26, 8)  # reminders held: only the day-21 timer is left
    s.run_until(paris(2026, 1, 16, 12), paris(2026, 1, 5, 10))
    assert s.sent(K.FIRST_CONTACT_REMINDER) == []
    d = s.inbound(EventKind.ADDRESS_CORRECTED, paris(2026, 1, 16, 12), MENTEE)
    assert set(d.actions) == {
        ClearFlag(FlagKind.CALL, MENTEE, "address_corrected"),
        SendEmail(K.FIRST_CONTACT_REMINDER, MENTEE, "d7"),
    }


def test_bounce_holds_the_introduction() -> None:
    s = Sim(MON)
    s.add(EventKind.BOUNCE, paris(2026, 1, 5, 8, 30), MENTOR, data={"permanent": "true"})
    d = s.step(T0)
    assert emails(d) == {(K.INTRODUCTION, MENTEE, "intro")}
    d = s.inbound(EventKind.ADDRESS_CORRECTED, paris(2026, 1, 6, 9), MENTOR)
    assert emails(d) == {(K.INTRODUCTION, MENTOR, "intro")}


def test_temporary_bounce_changes_nothing() -> None:
    s = active_sim()
    d = s.inbound(EventKind.BOUNCE, paris(2026, 1, 20, 10), MENTEE, data={"permanent": "false"})
    assert d.actions == () and not s.pair.mentee_bounced


def test_bounce_while_a_call_flag_is_open_raises_no_second_flag() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 16, 9), paris(2026, 1, 8, 15))
    d = s.inbound(EventKind.BOUNCE, paris(2026, 2, 16, 10), MENTEE, data={"permanent": "true"})
    assert d.actions == ()


# ---- pause ----


def test_pause_holds_followups_and_restarts_counting_from_resume() -> None:
    s = active_sim()
    s.run_until(paris(2026, 2, 9, 9), paris(2026, 1, 8, 15))  # f1 on 7 Feb
    s.inbound(EventKind.PAUSED, paris(2026, 2, 9, 10), data={"until": "2026-03-31"})
    s.run_until(paris(2026, 5, 5), paris(2026, 2, 9, 10))  # resume 1 April; + 30 days = 1 May
    walls = s.wall(K.FOLLOWUP)
    assert [w for w in walls if w[2] != "f1"] == [("2026-05-01 08:00", "mentor", "f2"), ("2026-05-01 08:00", "mentee", "f2")]
    assert s.wall(K.FOLLOWUP_REMINDER) == [("2026-05-05 08:00", "mentor", "f2"), ("2026-05-05 08:00", "mentee", "f2")]
    assert not [a for _, a in s.done if isinstance(a, RaiseFlag)]  # f1's reminder and call fell in the pause


def test_resumed_early_restarts_from_the_resume_date() -> None:
    s = active_sim()
    s.inbound(EventKind.PAUSED, paris(2026, 1, 20, 10), data={"until": "2026-06-30"})
    d = s.inbound(EventKind.RESUMED, paris(2026, 2, 2, 10))
    assert d.next_due_at == paris(2026, 3, 4, 8)


def test_pause_before_introduction_holds_it_until_the_day_after() -> None:
    s = Sim(MON)
    s.add(EventKind.PAUSED, paris(2026, 1, 5, 8, 30), data={"until": "2026-01-10"})
    d = s.step(T0)
    assert d.actions == () and d.next_due_at == paris(2026, 1, 12, 8)  # 11th is a Sunday


def test_pause_in_the_first_weeks_restarts_the_first_contact_days() -> None:
    s = Sim(MON)
    s.step(T0)
    s.inbound(EventKind.PAUSED, paris(2026, 1, 9, 10), data={"until": "2026-01-31"})
    s.run_until(paris(2026, 3, 1), paris(2026, 1, 9, 10))
    # resume date 1 Feb: day 7, 14 and 21 are Sundays -> Mondays
    assert s.wall(K.FIRST_CONTACT_REMINDER) == [("2026-02-09 08:00", "mentee", "d7"), ("2026-02-16 08:00", "mentee", "d14")]
    assert s.wall(K.NO_CONTACT_NOTICE) == [("2026-02-23 08:00", "mentor", "end")]


def test_checkpoint_missed_during_a_pause_goes_at_resume() -> None:
    s = active_sim()
    s.run_until(paris(2026, 6, 20), paris(2026, 1, 8, 15))
    s.inbound(EventKind.PAUSED, paris(2026, 6, 20, 10), data={"until": "2026-07-15"})
    s.run_until(paris(2026, 7, 20), paris(2026, 6, 20, 10))
    assert s.wall(K.CHECKPOINT) == [("2026-07-16 08:00", "mentor", "m6"), ("2026-07-16 08:00", "mentee", "m6")]


# ---- properties of a decision ----


def test_next_due_is_none_when_nothing_is_timed() -> None:
    s, now = sim_in(CL)
    assert decide(s.pair, now, s.events, POLICY).next_due_at is None
    s, now = sim_in(EN)
    assert decide(s.pair, now, s.events, POLICY).next_due_at is None


def test_decide_is_pure_and_settled() -> None:
    s = active_sim()
    s.add(EventKind.REPLY, paris(2026, 3, 10, 8, 30), MENTOR, intent=Intent.SUPPORT_NEEDED)
    first = decide(s.pair, paris(2026, 3, 10, 9), s.events, POLICY)
    assert first == decide(s.pair, paris(2026, 3, 10, 9), s.events, POLICY)
    log = s.events + record(s.pair.state, first, paris(2026, 3, 10, 9))
    again = decide(replace(s.pair, state=first.state), paris(2026, 3, 10, 9), log, POLICY)
    assert again.actions == () and again.next_due_at == first.next_due_at


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        decide(PairView("P", AW, MON), datetime(2026, 1, 5, 9), [], POLICY)


def test_custom_policy_numbers() -> None:
    p = Policy(reminder_days=(3,), first_contact_days=5, followup_interval_days=10)
    s = Sim(MON, policy=p)
    s.run_until(paris(2026, 1, 20), T0)
    assert s.wall(K.FIRST_CONTACT_REMINDER) == [("2026-01-08 08:00", "mentee", "d3")]
    assert s.wall(K.NO_CONTACT_NOTICE) == [("2026-01-10 08:00", "mentor", "end")]


def test_record_builds_the_callers_events() -> None:
    now = paris(2026, 1, 5, 9)
    d = Decision(EN, (SendEmail(K.NO_CONTACT_NOTICE, MENTOR, "end"), RaiseFlag(FlagKind.REMATCH, MENTOR, "no_contact")), None)
    assert record(AW, d, now) == [
        Event(EventKind.STATE_CHANGED, now, data={"from": "awaiting_first_contact", "to": "ended_no_contact"}),
        Event(EventKind.EMAIL_QUEUED, now, who=MENTOR, email_kind=K.NO_CONTACT_NOTICE, slot="end"),
        Event(EventKind.FLAG_RAISED, now, who=MENTOR, flag=FlagKind.REMATCH, reason="no_contact"),
    ]


def test_open_flags_follows_raises_and_clears() -> None:
    t = paris(2026, 1, 5)
    events = [
        Event(EventKind.FLAG_RAISED, t, who=MENTEE, flag=FlagKind.CALL, reason="no_reply"),
        Event(EventKind.FLAG_RAISED, t, who=MENTOR, flag=FlagKind.CALL, reason="bounce"),
        Event(EventKind.FLAG_RAISED, t, flag=FlagKind.CLOSURE_REQUESTED, reason="stop"),
        Event(EventKind.FLAG_CLEARED, t, who=MENTEE, flag=FlagKind.CALL, reason="replied"),
    ]
    assert open_flags(events) == {(FlagKind.CALL, MENTOR): "bounce", (FlagKind.CLOSURE_REQUESTED, None): "stop"}


def test_at8_helper() -> None:
    assert at8(MON) == paris(2026, 1, 5, 8)

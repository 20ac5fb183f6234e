"""A test driver for the lifecycle: plays the caller (records decisions, appends inbound events)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from mailflow.core.lifecycle import decide, record
from mailflow.core.model import (
    Action,
    Decision,
    EmailKind,
    Event,
    EventKind,
    Intent,
    PairView,
    Role,
    SendEmail,
    State,
)
from mailflow.core.policy import Policy

PARIS = ZoneInfo("Europe/Paris")
POLICY = Policy()


def paris(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=PARIS)


@dataclass
class Sim:
    """One pair, its log, and a clock the test moves."""

    matched_on: date
    policy: Policy = POLICY
    pair: PairView = field(init=False)
    events: list[Event] = field(default_factory=list)
    done: list[tuple[datetime, Action]] = field(default_factory=list)  # every action, when decided
    last: Decision | None = None

    def __post_init__(self) -> None:
        self.pair = PairView("P1", State.AWAITING_FIRST_CONTACT, self.matched_on)

    @property
    def state(self) -> State:
        return self.pair.state

    def step(self, now: datetime) -> Decision:
        """One pass at `now`: decide, then record as the caller does."""
        d = decide(self.pair, now, self.events, self.policy)
        self.events.extend(record(self.pair.state, d, now))
        self.pair = replace(self.pair, state=d.state)
        self.done.extend((now, a) for a in d.actions)
        self.last = d
        return d

    def run_until(self, end: datetime, start: datetime) -> None:
        """Call decide at every next_due_at from `start` up to `end` (a daemon that never sleeps too long)."""
        now: datetime | None = start
        while now is not None and now <= end:
            d = self.step(now)
            assert d.next_due_at is None or d.next_due_at > now
            now = d.next_due_at

    def inbound(self, kind: EventKind, at: datetime, who: Role | None = None, **kw: object) -> Decision:
        """Append an inbound/operator event at `at` (as the caller does) and run a pass at `at`."""
        self.add(kind, at, who, **kw)
        return self.step(at)

    def add(self, kind: EventKind, at: datetime, who: Role | None = None, **kw: object) -> None:
        self.events.append(Event(kind, at, who=who, **kw))  # type: ignore[arg-type]
        data = kw.get("data") or {}
        if kind is EventKind.BOUNCE and data.get("permanent") == "true":  # type: ignore[union-attr]
            self.pair = replace(self.pair, **{f"{who}_bounced": True})
        elif kind is EventKind.ADDRESS_CORRECTED:
            self.pair = replace(self.pair, **{f"{who}_bounced": False})
        elif kind is EventKind.PAUSED:
            self.pair = replace(self.pair, paused_until=date.fromisoformat(data["until"]))  # type: ignore[index]

    def reply(self, at: datetime, who: Role, intent: Intent = Intent.OK) -> Decision:
        return self.inbound(EventKind.REPLY, at, who, intent=intent)

    def emails(self, kind: EmailKind | None = None) -> list[tuple[datetime, SendEmail]]:
        return [(t, a) for t, a in self.done if isinstance(a, SendEmail) and (kind is None or a.kind is kind)]

    def sent(self, kind: EmailKind | None = None) -> list[tuple[str, str, str]]:
        """(kind, to, slot) of the emails decided so far, in order."""
        return [(a.kind.value, a.to.value, a.slot) for _, a in self.emails(kind)]

    def wall(self, kind: EmailKind) -> list[tuple[str, str, str]]:
        """(local ISO minute, to, slot) of the emails of `kind` decided so far."""
        return [(t.astimezone(PARIS).strftime("%Y-%m-%d %H:%M"), a.to.value, a.slot) for t, a in self.emails(kind)]


def at8(d: date) -> datetime:
    return datetime.combine(d, time(8, 0), tzinfo=PARIS)

"""What a pair's event log says, read once: the facts the lifecycle's rules are computed from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from mailflow.core.flags import FlagKey, OpenFlag
from mailflow.core.model import EmailKind, FlagKind, Role, State

EmailKey = tuple[EmailKind, Role | None, str]  # (kind, recipient, slot)


@dataclass(frozen=True)
class Stamp:
    """An event's position in the log (for "after that event" questions) and its instant."""

    index: int
    at: datetime


@dataclass(frozen=True)
class Pause:
    start: int  # index of the PAUSED event
    resume_at: datetime | None  # RESUMED's instant, or 00:00 the day after `until`; None: indefinite
    resume_date: date | None  # the local date the clocks restart from


@dataclass
class History:
    """Facts accumulated by `lifecycle.read_log` (mutable while it reads, then only read)."""

    state: State = State.AWAITING_FIRST_CONTACT  # after the logged events; timers are not applied
    intro: Stamp | None = None  # first introduction queued
    activation: Stamp | None = None  # the reply that made the pair active
    closed: int | None = None  # the CLOSED_BY_OPERATOR event that closed the pair
    queued: dict[EmailKey, Stamp] = field(default_factory=dict)  # first queueing of each email
    followups: dict[int, Stamp] = field(default_factory=dict)  # round n -> first queueing of "f{n}"
    last_reply: dict[Role | None, int] = field(default_factory=dict)  # last human reply per person
    support_replies: list[int] = field(default_factory=list)  # replies that need an urgent_alert
    open_flags: dict[FlagKey, OpenFlag] = field(default_factory=dict)
    raised: dict[tuple[FlagKind, Role | None, str], int] = field(default_factory=dict)  # last raise by reason
    last_cleared: dict[FlagKey, int] = field(default_factory=dict)
    pending_raises: dict[FlagKey, str] = field(default_factory=dict)  # asked for by an event, not raised yet
    call_done: dict[Role | None, int] = field(default_factory=dict)
    corrected: dict[Role | None, int] = field(default_factory=dict)  # ADDRESS_CORRECTED per person
    pause: Pause | None = None  # the last pause

    def was_raised(self, kind: FlagKind, who: Role | None) -> bool:
        return any(k == kind and w == who for k, w, _ in self.raised)

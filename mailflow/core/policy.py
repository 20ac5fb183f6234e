"""The programme calendar as plain numbers: what the core gets instead of the settings object."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time


@dataclass(frozen=True)
class Policy:
    timezone: str = "Europe/Paris"
    window_start: time = time(8, 0)
    window_end: time = time(20, 0)
    window_days: frozenset[int] = field(default_factory=lambda: frozenset(range(6)))  # Mon=0..Sat=5
    reminder_days: tuple[int, ...] = (7, 14)  # mentee first-contact reminders, from the intro day
    first_contact_days: int = 21  # then ended_no_contact
    followup_interval_days: int = 30  # from the activation day
    followup_reminder_days: int = 4  # from the day the followup was sent
    call_after_days: int = 7  # from the day the followup was sent
    checkpoint_months: int = 6  # after matched_on

"""The only reader of the wall clock: `--now T` fixes it (or starts it at T for the daemon)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from mailflow.errors import ConfigError


def parse_now(value: str, tz: ZoneInfo) -> datetime:
    """ISO-8601; with an offset it is exact, without one it is read in the programme's time zone."""
    text = value.strip().replace(" ", "T", 1) if "T" not in value else value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--now {value!r}: not an ISO-8601 date/time (e.g. 2026-09-01T09:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


class Clock:
    """Real time, optionally starting at a fixed instant and then advancing in real time.

    `speed` > 1 runs a started clock faster than real time (tests and demos simulate weeks in
    minutes with MAILFLOW_CLOCK_SPEED); durations the daemon sleeps are divided by it.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False, speed: float = 1.0) -> None:
        self._start = start
        self._frozen = frozen
        self.speed = speed if start is not None and not frozen else 1.0
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        if self._start is None:
            return datetime.now(UTC)
        if self._frozen:
            return self._start
        return self._start + timedelta(seconds=(time.monotonic() - self._mono0) * self.speed)

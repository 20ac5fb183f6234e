"""Open flags of a pair, derived from its event log (FLAG_RAISED / FLAG_CLEARED)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailflow.core.model import Event, EventKind, FlagKind, Role

FlagKey = tuple[FlagKind, Role | None]


@dataclass(frozen=True)
class OpenFlag:
    kind: FlagKind
    who: Role | None
    reason: str
    since: datetime  # when it was raised
    index: int  # position of its FLAG_RAISED event in the log


def open_flag_records(events: Sequence[Event]) -> dict[FlagKey, OpenFlag]:
    """Flags raised and not cleared since, one per (kind, who); a second raise keeps the first."""
    open_: dict[FlagKey, OpenFlag] = {}
    for i, e in enumerate(events):
        if e.flag is None:
            continue
        key = (e.flag, e.who)
        if e.kind is EventKind.FLAG_RAISED and key not in open_:
            open_[key] = OpenFlag(e.flag, e.who, e.reason or "", e.at, i)
        elif e.kind is EventKind.FLAG_CLEARED:
            open_.pop(key, None)
    return open_


def open_flags(events: Sequence[Event]) -> dict[FlagKey, str]:
    """`{(kind, who): reason}` of the flags open at the end of the log."""
    return {key: flag.reason for key, flag in open_flag_records(events).items()}

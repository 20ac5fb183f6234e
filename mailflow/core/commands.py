"""Referent commands: the lines of a reply to the digest -> plain command values (French or English).

One command per line; accents, case and typographic apostrophes are tolerated. Quoted text is
stripped by the caller; a line that is not a command becomes `Unknown(line)` so it is answered in
the next digest, never dropped. Parsing is pure: `today` (the programme-local date) is an input,
for `pause P3 jusqu'au 01/09` (DD/MM = the next such date after today).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from mailflow.core.model import Role

MAX_COMMANDS = 50  # a reply is a handful of lines; more is pasted text, answered as one Unknown
UNKNOWN_LINE_CHARS = 80


@dataclass(frozen=True)
class CallDone:
    ref: str
    who: Role | None  # None: the pair's open call flag(s)
    note: str = ""
    name = "call_done"


@dataclass(frozen=True)
class Close:
    ref: str
    name = "close"


@dataclass(frozen=True)
class Pause:
    ref: str
    until: date | None  # None: the date given is not a valid date
    name = "pause"


@dataclass(frozen=True)
class Resume:
    ref: str
    name = "resume"


@dataclass(frozen=True)
class Read:
    ref: str  # clears the pair's review flags
    name = "read"


@dataclass(frozen=True)
class UrgentHandled:
    ref: str  # clears the pair's urgent flag(s)
    name = "urgent_handled"


@dataclass(frozen=True)
class Unknown:
    line: str  # truncated to UNKNOWN_LINE_CHARS
    name = "unknown"


Command = CallDone | Close | Pause | Resume | Read | UrgentHandled | Unknown

SYNTAX = {
    "fr": (
        "appel P12 fait: joint, tout va bien",
        "appel mentor P12 fait: message laissé",
        "clôture P7",
        "pause P3 jusqu'au 01/09",
        "reprise P3",
        "lu P9",
        "urgent traité P4",
    ),
    "en": (
        "call P12 done: reached, all good",
        "call mentor P12 done: left a message",
        "close P7",
        "pause P3 until 2027-09-01",
        "resume P3",
        "read P9",
        "urgent handled P4",
    ),
}

_REF = r"(?P<ref>[a-z0-9][a-z0-9_./-]{0,63}?)"
_WHO = r"(?P<who>mentor|mentore|mentoree|mentore\(e\)|mentee|jeune)"
_END = r"\s*[.!]?\s*$"
_CALL = re.compile(
    rf"^(?:appel|call)\s+(?:{_WHO}\s+)?{_REF}\s+(?:(?:--who\s+)?(?P<who2>mentor|mentore|mentoree|mentore\(e\)|mentee|jeune)\s+)?"
    r"(?:fait|faite|done|passe|made)\b\s*[:\-\u2013\u2014]?\s*(?P<note>.*)$"
)
_CLOSE = re.compile(rf"^(?:cloture|cloturer|close)\s+{_REF}{_END}")
_PAUSE = re.compile(rf"^pause\s+{_REF}\s+(?:jusqu'?au|jusqu'?a|until|till|to|au)\s+(?P<date>[0-9./-]+){_END}")
_RESUME = re.compile(rf"^(?:reprise|reprendre|resume)\s+{_REF}{_END}")
_READ = re.compile(rf"^(?:lu|read)\s+{_REF}{_END}")
_URGENT = re.compile(
    rf"^urgent\s+(?:(?:traite|gere|handled|done|fait)\s+{_REF}|(?P<ref2>[a-z0-9][a-z0-9_./-]{{0,63}}?)\s+(?:traite|gere|handled|done|fait)){_END}"
)


def fold(text: str) -> str:
    """Lower-case without accents, one character for one (so match positions map back to `text`)."""
    out = []
    for ch in text.replace("\u2019", "'").replace("\u2018", "'"):
        base = unicodedata.normalize("NFD", ch)[0].lower()
        out.append(base if len(base) == 1 else ch)
    return "".join(out)


def _who(word: str | None) -> Role | None:
    if not word:
        return None
    return Role.MENTOR if word == "mentor" else Role.MENTEE


def _next_day_month(day: int, month: int, today: date) -> date | None:
    for year in range(today.year, today.year + 9):  # 29/02 may be years away
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate > today:
            return candidate
    return None


def parse_date(text: str, today: date) -> date | None:
    """DD/MM (the next such date after today), DD/MM/YYYY, YYYY-MM-DD; None when not a date."""
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text)
    try:
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
        m = re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{4}))?", text)
        if m and m[3]:
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None
    if m and 1 <= int(m[2]) <= 12:
        return _next_day_month(int(m[1]), int(m[2]), today)
    return None


def _span(line: str, m: re.Match[str], group: str) -> str:
    start, end = m.span(group)
    return line[start:end] if start >= 0 else ""


def _call(line: str, m: re.Match[str], today: date) -> Command:
    who = _who(m["who"] or m["who2"])
    return CallDone(_span(line, m, "ref"), who, _span(line, m, "note").strip()[:1000])


def _pause(line: str, m: re.Match[str], today: date) -> Command:
    return Pause(_span(line, m, "ref"), parse_date(m["date"].rstrip("."), today))


def _urgent(line: str, m: re.Match[str], today: date) -> Command:
    return UrgentHandled(_span(line, m, "ref") or _span(line, m, "ref2"))


def _simple(cls: Callable[[str], Command]) -> Callable[[str, re.Match[str], date], Command]:
    return lambda line, m, today: cls(_span(line, m, "ref"))


_RULES: tuple[tuple[re.Pattern[str], Callable[[str, re.Match[str], date], Command]], ...] = (
    (_CALL, _call),
    (_CLOSE, _simple(Close)),
    (_PAUSE, _pause),
    (_RESUME, _simple(Resume)),
    (_READ, _simple(Read)),
    (_URGENT, _urgent),
)


def parse_line(line: str, today: date) -> Command | None:
    """One line -> a command; None for a blank line."""
    clean = re.sub(r"\s+", " ", line).strip().lstrip("-*• ").strip()
    if not clean:
        return None
    folded = fold(clean)
    for pattern, build in _RULES:
        m = pattern.match(folded)
        if m:
            return build(clean, m, today)
    return Unknown(clean[:UNKNOWN_LINE_CHARS])


def parse_commands(text: str, today: date) -> list[Command]:
    """Every non-blank line up to a signature separator, in order; [] for an empty reply."""
    out: list[Command] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip() in ("--", "-- "):
            break
        command = parse_line(line, today)
        if command is None:
            continue
        if len(out) == MAX_COMMANDS:
            rest = sum(1 for extra in lines[i:] if extra.strip())
            out.append(Unknown(f"({rest} more lines not read)"))
            break
        out.append(command)
    return out

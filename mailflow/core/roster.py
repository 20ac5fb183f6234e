"""The roster spreadsheet (CSV) -> validated pair rows, or every problem with its line and column."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from mailflow.core.model import Track
from mailflow.errors import InputError

REQUIRED_COLUMNS = (
    "pair_ref", "mentor_first_name", "mentor_last_name", "mentor_email", "mentor_phone",
    "mentor_job", "mentor_sector", "mentee_first_name", "mentee_last_name", "mentee_email",
    "mentee_phone", "mentee_sector", "track", "referent_name", "referent_email", "matched_on",
)  # fmt: skip
MUST_HAVE_VALUE = {
    "pair_ref", "mentor_first_name", "mentor_email", "mentee_first_name", "mentee_email",
    "track", "referent_name", "referent_email", "matched_on",
}  # fmt: skip
LANGUAGES = ("fr", "en")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")
_TRACK_ALIASES = {
    "stage-alternance": "stage_alternance",
    "stage/alternance": "stage_alternance",
    "stage": "stage_alternance",
    "alternance": "stage_alternance",
}


@dataclass(frozen=True)
class PersonRow:
    email: str
    first_name: str
    last_name: str
    phone: str  # E.164 or ""
    language: str
    job: str = ""
    sector: str = ""


@dataclass(frozen=True)
class ReferentRow:
    email: str
    name: str


@dataclass(frozen=True)
class PairRow:
    line: int  # spreadsheet line number (header = 1)
    ref: str
    mentor: PersonRow
    mentee: PersonRow
    referent: ReferentRow
    track: Track
    matched_on: date


class _Row:
    """Validates one record, collecting problems as `line N, column C: reason`."""

    def __init__(self, line: int, cells: dict[str, str], problems: list[str]) -> None:
        self.line, self.cells, self.problems = line, cells, problems

    def problem(self, column: str, reason: str) -> None:
        self.problems.append(f"line {self.line}, column {column}: {reason}")

    def text(self, column: str) -> str:
        value = unicodedata.normalize("NFC", (self.cells.get(column) or "").strip())
        if _CONTROL.search(value):
            self.problem(column, "contains a line break or control character")
            return ""
        if not value and column in MUST_HAVE_VALUE:
            self.problem(column, "is empty")
        if len(value) > 200:
            self.problem(column, "is longer than 200 characters")
        return value

    def email(self, column: str) -> str:
        value = self.text(column)
        if not value:
            return ""
        try:
            return validate_email(value, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            self.problem(column, f"invalid email address ({exc})")
            return ""

    def phone(self, column: str) -> str:
        value = self.text(column)
        if not value:
            return ""
        try:
            number = phonenumbers.parse(value, "FR")
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_possible_number(number):
            self.problem(column, "invalid phone number (e.g. 06 12 34 56 78 or +33 6 12 34 56 78)")
            return ""
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def language(self, column: str) -> str:
        value = self.text(column).lower() or "fr"
        if value not in LANGUAGES:
            self.problem(column, f"unknown language {value!r} (fr or en)")
            return "fr"
        return value

    def track(self) -> Track | None:
        raw = self.text("track").lower()
        value = _TRACK_ALIASES.get(raw, raw)
        try:
            return Track(value) if value else None
        except ValueError:
            self.problem("track", f"unknown track {raw!r} (orientation, stage_alternance or parcoursup)")
            return None

    def matched_on(self) -> date | None:
        value = self.text("matched_on")
        if not value:
            return None
        for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
            try:
                return datetime.strptime(value, fmt).date()
            except ValueError:
                continue
        self.problem("matched_on", f"invalid date {value!r} (YYYY-MM-DD)")
        return None

    def ref(self) -> str:
        value = self.text("pair_ref")
        if value and not _REF_RE.match(value):
            self.problem("pair_ref", "use letters, digits, '.', '_' or '-' (at most 64)")
        return value


def _person(row: _Row, prefix: str) -> PersonRow:
    return PersonRow(
        email=row.email(f"{prefix}_email"),
        first_name=row.text(f"{prefix}_first_name"),
        last_name=row.text(f"{prefix}_last_name"),
        phone=row.phone(f"{prefix}_phone"),
        language=row.language(f"{prefix}_language"),
        job=row.text(f"{prefix}_job") if prefix == "mentor" else "",
        sector=row.text(f"{prefix}_sector"),
    )


def _parse_row(line: int, cells: dict[str, str], problems: list[str]) -> PairRow | None:
    row = _Row(line, cells, problems)
    before = len(problems)
    ref, track, matched_on = row.ref(), row.track(), row.matched_on()
    mentor, mentee = _person(row, "mentor"), _person(row, "mentee")
    referent = ReferentRow(email=row.email("referent_email"), name=row.text("referent_name"))
    emails = [mentor.email, mentee.email, referent.email]
    if mentor.email and mentor.email == mentee.email:
        row.problem("mentee_email", "is the mentor's address too")
    if referent.email and referent.email in emails[:2]:
        row.problem("referent_email", "is also a participant's address")
    if len(problems) > before or track is None or matched_on is None:
        return None
    return PairRow(line, ref, mentor, mentee, referent, track, matched_on)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RosterError([f"line {line}: the file is not UTF-8 (export it as 'CSV UTF-8')"]) from None


def _dialect(text: str) -> str:
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


class RosterError(InputError):
    """The roster has problems; `problems` lists them (one line each)."""


def _check_identities(rows: list[PairRow], problems: list[str]) -> None:
    """One person per address: an address keeps one role across the file; refs are unique."""
    roles: dict[str, tuple[str, int]] = {}
    refs: dict[str, int] = {}
    for row in rows:
        if row.ref in refs:
            problems.append(f"line {row.line}, column pair_ref: {row.ref!r} already on line {refs[row.ref]}")
        refs.setdefault(row.ref, row.line)
        for role, email in (("mentor", row.mentor.email), ("mentee", row.mentee.email), ("referent", row.referent.email)):
            seen = roles.setdefault(email, (role, row.line))
            if seen[0] != role:
                problems.append(f"line {row.line}, column {role}_email: already the {seen[0]} address on line {seen[1]}")


def parse_roster(data: bytes) -> list[PairRow]:
    """Parse the whole file; raise RosterError listing every problem (nothing partial is returned)."""
    text = _decode(data)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_dialect(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RosterError([f"line 1: missing column(s) {', '.join(missing)}"])
    reader.fieldnames = header
    problems: list[str] = []
    rows: list[PairRow] = []
    try:
        for index, record in enumerate(reader, start=2):
            if None in record:
                problems.append(f"line {index}: more cells than columns")
                continue
            cells = {k: v or "" for k, v in record.items()}
            if not any(v.strip() for v in cells.values()):
                continue
            parsed = _parse_row(index, cells, problems)
            if parsed is not None:
                rows.append(parsed)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: unreadable CSV ({exc})")
    _check_identities(rows, problems)
    if problems:
        raise RosterError(problems)
    return rows

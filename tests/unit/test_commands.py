"""Referent reply commands: one per line, French or English, accents and case tolerated."""

from __future__ import annotations

from datetime import date

import pytest

from mailflow.core.commands import (
    MAX_COMMANDS,
    CallDone,
    Close,
    Pause,
    Read,
    Resume,
    Unknown,
    UrgentHandled,
    parse_commands,
    parse_date,
    parse_line,
)
from mailflow.core.model import Role

TODAY = date(2026, 10, 5)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("appel P12 fait: joint, tout va bien", CallDone("P12", None, "joint, tout va bien")),
        ("call P12 done: reached, all good", CallDone("P12", None, "reached, all good")),
        ("APPEL p12 FAIT", CallDone("p12", None, "")),
        ("appel mentor P12 fait : message laissé", CallDone("P12", Role.MENTOR, "message laissé")),
        ("appel mentoré(e) P12 fait - rappeler lundi", CallDone("P12", Role.MENTEE, "rappeler lundi")),
        ("call mentee P12 done", CallDone("P12", Role.MENTEE, "")),
        ("appel P12 --who mentor fait: ok", CallDone("P12", Role.MENTOR, "ok")),
        ("Appel P12 passé : répondeur", CallDone("P12", None, "répondeur")),
        ("clôture P7", Close("P7")),
        ("Cloture P7.", Close("P7")),
        ("CLÔTURE   P7", Close("P7")),
        ("close P7", Close("P7")),
        ("pause P3 jusqu'au 01/09", Pause("P3", date(2027, 9, 1))),
        ("pause P3 jusqu\u2019au 20/10", Pause("P3", date(2026, 10, 20))),
        ("pause P3 jusqu'au 01/09/2027", Pause("P3", date(2027, 9, 1))),
        ("pause P3 until 2027-09-01", Pause("P3", date(2027, 9, 1))),
        ("pause P3 until 31/02", Pause("P3", None)),
        ("reprise P3", Resume("P3")),
        ("Resume P3", Resume("P3")),
        ("lu P9", Read("P9")),
        ("read P9", Read("P9")),
        ("urgent traité P4", UrgentHandled("P4")),
        ("Urgent TRAITE P4", UrgentHandled("P4")),
        ("urgent handled P4", UrgentHandled("P4")),
        ("urgent P4 traité", UrgentHandled("P4")),
        ("- lu P9", Read("P9")),
        ("appel P12", Unknown("appel P12")),
        ("Bonjour,", Unknown("Bonjour,")),
        ("clôture", Unknown("clôture")),
        ("clôture P7 et P8", Unknown("clôture P7 et P8")),
        ("x" * 200, Unknown("x" * 80)),
    ],
)
def test_parse_line(line: str, expected: object) -> None:
    assert parse_line(line, TODAY) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01/09", date(2027, 9, 1)),
        ("05/10", date(2027, 10, 5)),  # today is not in the future
        ("06/10", date(2026, 10, 6)),
        ("29/02", date(2028, 2, 29)),
        ("1.12", date(2026, 12, 1)),
        ("2026-13-01", None),
        ("32/01", None),
        ("abc", None),
    ],
)
def test_parse_date(text: str, expected: date | None) -> None:
    assert parse_date(text, TODAY) == expected


def test_blank_lines_and_signature() -> None:
    text = "\n  \nlu P1\n\nclôture P2\n-- \nSophie Martin\n06 12 34 56 78\n"
    assert parse_commands(text, TODAY) == [Read("P1"), Close("P2")]
    assert parse_commands("\n\n   \n", TODAY) == []


def test_long_replies_are_capped_but_answered() -> None:
    out = parse_commands("\n".join(f"lu P{i}" for i in range(MAX_COMMANDS + 7)), TODAY)
    assert len(out) == MAX_COMMANDS + 1
    assert out[-1] == Unknown("(7 more lines not read)")

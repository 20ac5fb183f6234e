"""The roster CSV: separators, BOM, accents, validation with line numbers, all or nothing."""

from __future__ import annotations

import csv
import io

import pytest

from mailflow.core.model import Track
from mailflow.core.roster import REQUIRED_COLUMNS, RosterError, parse_roster

HEADER = ",".join(REQUIRED_COLUMNS)


def row(ref: str = "P1", **over: str) -> dict[str, str]:
    base = {
        "pair_ref": ref, "mentor_first_name": "Camille", "mentor_last_name": "Durand",
        "mentor_email": f"mentor.{ref.lower()}@example.org", "mentor_phone": "06 12 34 56 78",
        "mentor_job": "Ingénieure", "mentor_sector": "Numérique", "mentee_first_name": "Zoé",
        "mentee_last_name": "Martin", "mentee_email": f"mentee.{ref.lower()}@example.net",
        "mentee_phone": "+33 6 98 76 54 32", "mentee_sector": "Numérique", "track": "orientation",
        "referent_name": "Inès", "referent_email": "ines@example.org", "matched_on": "2026-09-01",
    }  # fmt: skip
    base.update(over)
    return base


def csv_bytes(rows: list[dict[str, str]], sep: str = ",", bom: bool = False) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    writer.writerow(REQUIRED_COLUMNS)
    writer.writerows([[r[c] for c in REQUIRED_COLUMNS] for r in rows])
    data = buf.getvalue().encode()
    return (b"\xef\xbb\xbf" + data) if bom else data


@pytest.mark.parametrize("sep", [",", ";"])
@pytest.mark.parametrize("bom", [False, True])
def test_separators_and_bom(sep: str, bom: bool) -> None:
    rows = parse_roster(csv_bytes([row("P1"), row("P2")], sep=sep, bom=bom))
    assert [r.ref for r in rows] == ["P1", "P2"]
    assert rows[0].mentee.first_name == "Zoé"
    assert rows[0].mentor.phone == "+33612345678"
    assert rows[0].mentee.phone == "+33698765432"
    assert rows[0].track is Track.ORIENTATION


def test_cells_are_trimmed_and_emails_lowercased() -> None:
    (r,) = parse_roster(csv_bytes([row(mentor_first_name="  Camille ", mentor_email=" Camille.D@Example.ORG ")]))
    assert r.mentor.first_name == "Camille"
    assert r.mentor.email == "camille.d@example.org"


def test_html_like_names_are_valid_data() -> None:
    (r,) = parse_roster(csv_bytes([row(mentee_first_name='<b>Zoé</b> & "Co"')]))
    assert r.mentee.first_name == '<b>Zoé</b> & "Co"'


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("mentor_email", "not-an-email", "invalid email"),
        ("mentee_phone", "12", "invalid phone"),
        ("matched_on", "2026-13-01", "invalid date"),
        ("track", "cooking", "unknown track"),
        ("mentee_first_name", "", "is empty"),
        ("mentor_first_name", "Cam\nille", "line break"),
    ],
)
def test_each_problem_names_line_and_column(column: str, value: str, fragment: str) -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(csv_bytes([row("P1"), row("P2", **{column: value})]))
    (problem,) = err.value.problems
    assert problem.startswith(f"line 3, column {column}:")
    assert fragment in problem


def test_every_bad_row_is_reported_and_nothing_returned() -> None:
    rows = [row(f"P{i}") for i in range(1, 11)]
    rows[2]["mentor_email"] = "x"
    rows[7]["matched_on"] = "tomorrow"
    with pytest.raises(RosterError) as err:
        parse_roster(csv_bytes(rows))
    assert [p.split(",")[0] for p in err.value.problems] == ["line 4", "line 9"]


def test_duplicate_ref_and_role_conflict() -> None:
    clash = row("P2", mentee_email="mentor.p1@example.org")
    with pytest.raises(RosterError) as err:
        parse_roster(csv_bytes([row("P1"), clash, row("P1", mentor_email="other@example.org", mentee_email="o2@example.net")]))
    text = "\n".join(err.value.problems)
    assert "line 3, column mentee_email: already the mentor address on line 2" in text
    assert "line 4, column pair_ref: 'P1' already on line 2" in text


def test_missing_column_and_not_utf8() -> None:
    with pytest.raises(RosterError, match="missing column"):
        parse_roster(b"pair_ref,mentor_email\nP1,a@b.org\n")
    bad = csv_bytes([row("P1", mentee_first_name="Zo\xe9")]).replace("Zoé".encode(), b"Zo\xe9")
    with pytest.raises(RosterError, match="not UTF-8"):
        parse_roster(bad)


def test_formula_cells_are_kept_as_text_not_evaluated() -> None:
    (r,) = parse_roster(csv_bytes([row(mentor_job='=HYPERLINK("http://x","y")')]))
    assert r.mentor.job.startswith("=HYPERLINK")


def test_optional_language_columns() -> None:
    data = csv_bytes([row("P1")]).replace(b"matched_on\r\n", b"matched_on,mentor_language\r\n", 1)
    data = data.replace(b"2026-09-01\r\n", b"2026-09-01,en\r\n")
    (r,) = parse_roster(data)
    assert r.mentor.language == "en"
    assert r.mentee.language == "fr"

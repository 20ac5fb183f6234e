"""Foundation acceptance through the real CLI: init, import all-or-nothing, list/show JSON, config errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mailflow.core.roster import REQUIRED_COLUMNS
from tests.support.cli import run_cli


def roster(n: int, bad_lines: dict[int, tuple[str, str]] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(REQUIRED_COLUMNS)
    for i in range(n):
        r = {
            "pair_ref": f"P{i:04d}", "mentor_first_name": "Élodie", "mentor_last_name": "Mentor",
            "mentor_email": f"mentor{i}@example.org", "mentor_phone": "06 12 34 56 78", "mentor_job": "Juriste",
            "mentor_sector": "Droit", "mentee_first_name": "Noé", "mentee_last_name": "Mentee",
            "mentee_email": f"mentee{i}@example.net", "mentee_phone": "07 61 23 45 67", "mentee_sector": "Droit",
            "track": "parcoursup", "referent_name": f"Réf {i % 7}", "referent_email": f"ref{i % 7}@example.org",
            "matched_on": "2026-09-01",
        }  # fmt: skip
        line = i + 2
        if bad_lines and line in bad_lines:
            column, value = bad_lines[line]
            r[column] = value
        w.writerow([r[c] for c in REQUIRED_COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode()


@pytest.fixture
def env(db_url: str) -> dict[str, str]:
    e = {"MAILFLOW_DATABASE__URL": db_url}
    assert run_cli("init", env=e).code == 0
    return e


def test_init_is_idempotent(env: dict[str, str]) -> None:
    again = run_cli("init", env=env)
    assert again.code == 0, again.err
    assert "database ready" in again.out


def test_thousand_rows_three_invalid_then_fixed(env: dict[str, str], tmp_path: Path) -> None:
    bad = {17: ("mentor_email", "nope"), 500: ("matched_on", "2026-02-30"), 1001: ("mentee_phone", "123")}
    path = tmp_path / "roster.csv"
    path.write_bytes(roster(1000, bad))
    result = run_cli("pairs", "import", str(path), env=env)
    assert result.code == 1
    assert "Traceback" not in result.err
    named = sorted(int(line.split("line ")[1].split(",")[0]) for line in result.err.splitlines() if ": line " in line)
    assert named == [17, 500, 1001]
    listed = run_cli("pairs", "list", "--json", env=env)
    assert json.loads(listed.out) == []

    path.write_bytes(roster(1000))
    assert run_cli("pairs", "import", str(path), env=env).code == 0
    again = run_cli("pairs", "import", str(path), env=env)
    assert again.code == 0
    pairs = json.loads(run_cli("pairs", "list", "--json", env=env).out)
    assert len(pairs) == 1000
    assert {p["state"] for p in pairs} == {"awaiting_first_contact"}
    assert set(pairs[0]) >= {"ref", "state", "flags", "matched_on", "last_reply_at"}


def test_show_json_has_timeline_and_reuses_people(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(roster(3))
    assert run_cli("pairs", "import", str(path), env=env).code == 0
    shown = json.loads(run_cli("pairs", "show", "P0001", "--json", env=env).out)
    assert shown["ref"] == "P0001" and shown["matched_on"] == "2026-09-01"
    assert shown["last_reply_at"] is None and shown["flags"] == []
    assert [e["kind"] for e in shown["events"]] == ["imported"]
    assert shown["mentor"]["phone"] == "+33612345678"
    missing = run_cli("pairs", "show", "NOPE", env=env)
    assert missing.code == 1 and "no pair with ref 'NOPE'" in missing.err


def test_config_typo_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "mailflow.toml"
    cfg.write_text("[smtp]\nprot = 25\n")
    result = run_cli("--config", str(cfg), "pairs", "list", env={"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.code == 1
    assert result.err.strip().splitlines() == [f"error: {cfg}: unknown setting 'smtp.prot'"]


def test_comments_only_config_with_env_and_no_config_at_all(tmp_path: Path) -> None:
    cfg = tmp_path / "only-comments.toml"
    cfg.write_text("# nothing here\n# [smtp]\n")
    env = {"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path}/a.db"}
    assert run_cli("--config", str(cfg), "init", env=env).code == 0
    assert (tmp_path / "a.db").exists()
    # no --config, no $MAILFLOW_CONFIG, no config/mailflow.toml in the working directory
    assert run_cli("init", env={"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path}/b.db"}, cwd=tmp_path).code == 0
    assert (tmp_path / "b.db").exists()


def test_first_use_creates_the_schema_and_foreign_databases_are_refused(tmp_path: Path) -> None:
    fresh = run_cli("pairs", "list", "--json", env={"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path}/none.db"})
    assert fresh.code == 0 and json.loads(fresh.out) == []
    import sqlite3

    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    foreign = run_cli("pairs", "list", env={"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path}/other.db"})
    assert foreign.code == 1 and "mailflow init" in foreign.err and "Traceback" not in foreign.err


def test_version_and_help() -> None:
    assert run_cli("--version").out.startswith("mailflow ")
    assert "Example" in run_cli("pairs", "import", "--help").out

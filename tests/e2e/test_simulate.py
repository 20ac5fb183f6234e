"""`mailflow simulate`: the real engine on a copy, a virtual clock, the calendar as the guide says it."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.world import pair_row, roster_csv


def test_simulate_200_days_ten_pairs(tmp_path: Path) -> None:
    env = {"MAILFLOW_DATABASE__URL": f"sqlite:///{tmp_path / 'm.db'}"}
    assert run_cli("init", env=env).code == 0
    rows = [pair_row(i, referent=i % 2, matched_on=(date(2026, 9, 1) + timedelta(days=i)).isoformat()) for i in range(1, 11)]
    (tmp_path / "r.csv").write_bytes(roster_csv(rows))
    assert run_cli("--now", "2026-09-01T07:00", "pairs", "import", str(tmp_path / "r.csv"), env=env).code == 0
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        '{"at": "2026-09-03T19:00", "ref": "P01", "who": "mentee", "intent": "ok"}\n'
        '{"at": "2026-09-05T10:00", "ref": "P02", "who": "mentor", "intent": "met"}\n'
    )
    result = run_cli("simulate", "--days", "200", "--from", "2026-09-01T07:00", "--replies", str(replies), "--json", env=env)
    assert result.code == 0, result.err
    timeline = json.loads(result.out)
    assert sorted(timeline) == [f"P{i:02d}" for i in range(1, 11)]
    for ref, lines in timeline.items():
        emails = [line for line in lines if " email " in line]
        for line in emails:
            stamp = datetime.strptime(line[:16].replace(" ", "T", 1)[:10] + " " + line[15:20], "%Y-%m-%d %H:%M")
            assert line[11:14] != "Sun", line  # Mon-Sat only
            assert "08:00" <= line[15:20] <= "20:00", line
            assert stamp.year in (2026, 2027)
        kinds = [line.split(" email ")[1].split(" ->")[0] for line in emails]
        assert kinds.count("introduction") == 2
        if ref not in ("P01", "P02"):  # nobody answers: two reminders, then the end of the three weeks
            assert kinds.count("first_contact_reminder") == 2 and kinds.count("no_contact_notice") == 1
            assert any("state -> ended_no_contact" in line for line in lines)
            assert "followup" not in kinds
    p01 = timeline["P01"]
    assert any("state -> active" in line for line in p01)
    followups = [line for line in p01 if "email followup -> mentor" in line]
    assert len(followups) >= 5
    # DST: the late-October change keeps emails at 08:00 local, in summer (CEST) and winter (CET) time
    assert any("CEST" in line for line in followups) and any("CET " in line + " " for line in followups if "CEST" not in line)
    assert all(line[15:20] == "08:00" for line in followups)
    assert any("email checkpoint -> mentor" in line for line in p01)
    assert any("flag call (mentee) reason=no_reply" in line for line in p01)
    # nothing was sent and the real data is unchanged
    shown = json.loads(run_cli("pairs", "show", "P01", "--json", env=env).out)
    assert [e["kind"] for e in shown["events"]] == ["imported"]

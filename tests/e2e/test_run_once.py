"""`mailflow run --once` through the real CLI and relay: idempotent at a fixed --now, no stale bursts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row, roster_csv


@pytest.fixture
def world(db_url: str, smtp_server: RecordingSMTPServer) -> World:
    return World(db_url, smtp_server, None)


def test_twice_with_the_same_now_sends_nothing_more(world: World, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(roster_csv([pair_row(1), pair_row(2)]))
    assert run_cli("--now", "2026-09-01T09:00", "pairs", "import", str(tmp_path / "r.csv"), env=world.env).code == 0
    first = run_cli("--now", "2026-09-01T09:00", "run", "--once", env=world.env)
    assert first.code == 0, first.err
    assert len(world.smtp.messages) == 4
    second = run_cli("--now", "2026-09-01T09:00", "run", "--once", env=world.env)
    assert second.code == 0 and len(world.smtp.messages) == 4
    for output in (first.out + first.err, second.out + second.err):
        assert "@" not in output and "Mentor1" not in output and "Mentee1" not in output


def test_matched_forty_days_ago_gets_one_introduction_and_a_fresh_three_weeks(world: World, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(roster_csv([pair_row(1, matched_on="2026-07-23")]))
    assert run_cli("--now", "2026-09-01T09:00", "pairs", "import", str(tmp_path / "r.csv"), env=world.env).code == 0
    assert run_cli("--now", "2026-09-01T09:00", "run", "--once", env=world.env).code == 0
    assert sorted(m["X-Mailflow-Kind"] for m in world.sent()) == ["introduction", "introduction"]
    pair = json.loads(run_cli("pairs", "show", "P01", "--json", env=world.env).out)
    assert pair["state"] == "awaiting_first_contact"
    # day 6 after the introduction: still nothing; day 7: the first reminder, to the mentee only
    assert run_cli("--now", "2026-09-07T09:00", "run", "--once", env=world.env).code == 0
    assert len(world.sent()) == 2
    assert run_cli("--now", "2026-09-08T09:00", "run", "--once", env=world.env).code == 0
    (reminder,) = world.sent("first_contact_reminder")
    assert reminder["To"].addresses[0].addr_spec == "mentee1@example.net"


def test_outside_the_window_waits_for_the_next_opening(world: World, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(roster_csv([pair_row(1)]))
    assert run_cli("--now", "2026-09-05T21:00", "pairs", "import", str(tmp_path / "r.csv"), env=world.env).code == 0
    assert run_cli("--now", "2026-09-05T21:00", "run", "--once", env=world.env).code == 0  # Saturday evening
    assert run_cli("--now", "2026-09-06T12:00", "run", "--once", env=world.env).code == 0  # Sunday
    assert world.smtp.messages == []
    assert run_cli("--now", "2026-09-07T08:00", "run", "--once", env=world.env).code == 0  # Monday 08:00
    assert len(world.sent("introduction")) == 2

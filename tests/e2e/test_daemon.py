"""The daemon against Dovecot + aiosmtpd: sends at once, applies a reply within seconds, refuses a twin,
lets CLI commands run beside it, stops cleanly on SIGTERM, and logs no personal data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

NAMES_AND_ADDRESSES = ("Mentor1", "Mentee1", "Mentor2", "Mentee2", "Durand", "Martin", "@", "+336", "06 12")


def start_daemon(env: dict[str, str], now: str, log_path: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    full.update(env)
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "mailflow", "--now", now, "run"], env=full, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)  # fmt: skip


def wait_for(predicate, timeout: float, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


@pytest.fixture
def world(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> World:
    w = World(f"sqlite:///{tmp_path / 'daemon.db'}", smtp_server, dovecot, MAILFLOW_DIGEST__ENABLED="true")
    w.import_rows([pair_row(1), pair_row(2)])
    return w


def test_daemon_end_to_end(world: World, tmp_path: Path) -> None:
    log_path = tmp_path / "daemon.log"
    proc = start_daemon(world.env, "2026-09-01T09:00", log_path)
    try:
        assert wait_for(lambda: len(world.sent("introduction")) == 4, 20), log_path.read_text()
        # a second daemon on the same SQLite file is refused with a clear message
        twin = run_cli("--now", "2026-09-01T09:00", "run", env=world.env, timeout=30)
        assert twin.code != 0 and "another mailflow instance" in twin.err
        # CLI commands work beside the daemon
        shown = run_cli("pairs", "show", "P01", "--json", env=world.env)
        assert shown.code == 0 and json.loads(shown.out)["ref"] == "P01"
        # a reply appended to the inbox changes the pair within 5 s
        (intro,) = world.sent("introduction", to="mentee1@example.net")
        time.sleep(1.0)  # let the reader settle into IDLE
        world.deliver(world.reply_to(intro, "Merci, j'ai répondu à mon mentor."))
        t0 = time.monotonic()

        def active() -> bool:
            out = run_cli("pairs", "show", "P01", "--json", env=world.env).out
            return bool(out) and json.loads(out)["state"] == "active"

        assert wait_for(active, 10, 0.2)
        assert time.monotonic() - t0 < 5.0 + 1.5  # one CLI round trip of slack
        status = run_cli("status", "--json", env=world.env)
        assert json.loads(status.out)["leader"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - t0
    assert code == 0, log_path.read_text()
    assert elapsed < 10
    logs = log_path.read_text()
    assert "daemon stopped" in logs
    for needle in NAMES_AND_ADDRESSES:
        assert needle not in logs, f"{needle!r} leaked into the logs"
    # nothing lost: every queued email was sent exactly once
    out = json.loads(run_cli("outbox", "list", "--json", env=world.env).out)
    assert {r["state"] for r in out} <= {"sent"}
    ids = [m["Message-ID"] for m in world.sent()]
    assert len(ids) == len(set(ids))

"""Secrets: every password and the token secret from env or a `*_FILE` path; never in logs, errors or `status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.dovecot import DovecotServer
from tests.support.postgres import PostgresCluster
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

SMTP_PW = "SmtpPw-Qx7-Zorglub-31337"
IMAP_WRONG_PW = "ImapPw-Wq9-Bafouille-4242"
TOKEN_SECRET = "TokenSecret-Kp2-Ornithorynque-777"
PG_PW = "PgPw-Zz8-Tartempion-555"
SECRETS = (SMTP_PW, IMAP_WRONG_PW, TOKEN_SECRET, PG_PW)


def leaks(*outputs: str) -> list[str]:
    text = "\n".join(outputs)
    return [s for s in SECRETS if s in text or s[:10] in text]


def file_env(tmp_path: Path, world: World, imap_password: str, db_url: str) -> dict[str, str]:
    files = {"smtp": SMTP_PW, "imap": imap_password, "secret": TOKEN_SECRET, "url": db_url}
    for name, value in files.items():
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    env = {k: v for k, v in world.env.items() if k not in ("MAILFLOW_IMAP__PASSWORD", "MAILFLOW_SECURITY__SECRET", "MAILFLOW_DATABASE__URL")}
    env.update({
        "MAILFLOW_SMTP__USERNAME": "bot", "MAILFLOW_SMTP__PASSWORD_FILE": str(tmp_path / "smtp"),
        "MAILFLOW_IMAP__PASSWORD_FILE": str(tmp_path / "imap"), "MAILFLOW_SECURITY__SECRET_FILE": str(tmp_path / "secret"),
        "MAILFLOW_DATABASE__URL_FILE": str(tmp_path / "url"),
    })  # fmt: skip
    return env


def test_secrets_from_files_work_and_never_show(
    tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer], dovecot: DovecotServer, postgres_cluster: PostgresCluster
) -> None:
    name = postgres_cluster.create_database()
    # trust auth accepts any password: the URL (with its password) only has to reach the driver
    db_url = f"postgresql+psycopg://postgres:{PG_PW}@{postgres_cluster.host}:{postgres_cluster.port}/{name}"
    smtp = smtp_server_factory(users={"bot": SMTP_PW})
    world = World(db_url, smtp, dovecot)
    world.import_rows([pair_row(1)])
    env = file_env(tmp_path, world, world.password, db_url)
    outputs = []
    try:
        for args in (["init"], ["--now", "2026-09-01T09:00", "run", "--once"], ["status"], ["status", "--json"],
                     ["pairs", "list", "--json"], ["outbox", "list", "--json"]):  # fmt: skip
            r = run_cli(*args, env={**env, "MAILFLOW_LOGGING__LEVEL": "DEBUG"})
            outputs += [r.out, r.err]
            assert "Traceback" not in r.err, r.err
        assert len(smtp.messages) == 2 and smtp.logins  # the password file was used
        (intro,) = world.sent("introduction", to="mentee1@example.net")
        assert "mentorat+" in str(intro["Reply-To"])
        # the token was signed with the secret from the file: a reply verifies with it
        world.deliver(world.reply_to(intro, "Premier rendez-vous fait !"))
        r = run_cli("--now", "2026-09-02T10:00", "run", "--once", env=env)
        assert r.code == 0 and "1 message(s) read" in r.out
        outputs += [r.out, r.err]
        # failures: wrong IMAP password, wrong SMTP password, broken database URL
        bad = dict(env)
        (tmp_path / "imap").write_text(IMAP_WRONG_PW)
        r = run_cli("--now", "2026-09-02T10:00", "run", "--once", env=bad)
        assert r.code != 0
        outputs += [r.out, r.err]
        (tmp_path / "imap").write_text(world.password)
        smtp.users["bot"] = "something-else"
        from mailflow.operator import close_pair

        close_pair(world.engine, world.settings, "P01", world.now("2026-09-02T11:00"))
        r = run_cli("--now", "2026-09-02T11:00", "run", "--once", env=env)
        assert r.code == 1 and "sending paused" in r.out
        outputs += [r.out, r.err]
        (tmp_path / "url").write_text(db_url.replace(str(postgres_cluster.port), "1"))
        r = run_cli("status", env=env)
        assert r.code == 1
        outputs += [r.out, r.err]
        (tmp_path / "url").write_text(db_url)
        # a short daemon at DEBUG level, stopped with SIGTERM
        full = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")} | env | {"MAILFLOW_LOGGING__LEVEL": "DEBUG"}
        proc = subprocess.Popen([sys.executable, "-m", "mailflow", "--now", "2026-09-02T12:00", "run"], env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        outputs.append(out.decode(errors="replace"))
        assert "daemon started" in outputs[-1]
    finally:
        world.engine.dispose()
        postgres_cluster.drop_database(name)
    assert leaks(*outputs) == []


def test_secrets_from_env_never_show_in_errors(tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer]) -> None:
    smtp = smtp_server_factory(users={"bot": "other"})
    world = World(f"sqlite:///{tmp_path / 's.db'}", smtp, None, MAILFLOW_SMTP__USERNAME="bot", MAILFLOW_SMTP__PASSWORD=SMTP_PW,
                  MAILFLOW_SECURITY__SECRET=TOKEN_SECRET)  # fmt: skip
    world.import_rows([pair_row(1)])
    outputs = []
    for args, extra in (
        (["--now", "2026-09-01T09:00", "run", "--once"], {}),  # 535: paused
        (["status", "--json"], {}),
        (["status"], {"MAILFLOW_SMTP__PORT": "not-a-port"}),  # a config error names the key, not the values
        (["status"], {"MAILFLOW_SMTP__PASSWORD_FILE": str(tmp_path / "missing")}),
        (["status"], {"MAILFLOW_SECURITY__OLD_SECRETS": f'["{TOKEN_SECRET}", 3]'}),
    ):
        r = run_cli(*args, env={**world.env, **extra, "MAILFLOW_LOGGING__LEVEL": "DEBUG"})
        assert "Traceback" not in r.err, r.err
        outputs += [r.out, r.err]
    assert "smtp.port" in "\n".join(outputs) or "smtp__port" in "\n".join(outputs).lower()
    assert leaks(*outputs) == []

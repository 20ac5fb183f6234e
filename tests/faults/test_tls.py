"""TLS through the service (World + run_once, and the CLI): the adapters' own TLS unit checks live in
tests/integration/test_smtp_adapter.py and test_imap_adapter.py; here the settings path is proven."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import OutboxMessage
from mailflow.errors import MailboxError
from tests.support.cli import run_cli
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

T0 = "2026-09-01T09:00"
AUTH = {"MAILFLOW_SMTP__USERNAME": "bot", "MAILFLOW_SMTP__PASSWORD": "pw"}


def smtp_world(tmp_path: Path, smtp: RecordingSMTPServer, **env: str) -> World:
    w = World(f"sqlite:///{tmp_path / 'tls.db'}", smtp, None, **env)
    w.import_rows([pair_row(1)])
    return w


def states(world: World) -> set[str]:
    with Session(world.engine) as s:
        return {r.state for r in s.exec(select(OutboxMessage))}


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_smtp_tls_verified_with_the_configured_ca(tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer], tls: str) -> None:
    smtp = smtp_server_factory(tls=tls)
    world = smtp_world(tmp_path, smtp, MAILFLOW_SMTP__TLS=tls, MAILFLOW_SMTP__CAFILE=str(smtp.cafile), **AUTH)
    report = await world.run_once(T0)
    assert report.sent.sent == 2 and smtp.logins and set(smtp.logins) == {"bot"}
    assert states(world) == {"sent"}


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_smtp_wrong_ca_pauses_sending_and_sends_no_password(
    tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer], dovecot: DovecotServer, tls: str
) -> None:
    smtp = smtp_server_factory(tls=tls)
    world = smtp_world(tmp_path, smtp, MAILFLOW_SMTP__TLS=tls, MAILFLOW_SMTP__CAFILE=dovecot.cafile, **AUTH)  # another CA
    report = await world.run_once(T0)
    assert report.sent.sent == 0 and report.sent.paused and "TLS" in report.sent.paused
    assert smtp.logins == [] and smtp.messages == []
    assert states(world) == {"pending"}  # nothing lost: sent once the setup is fixed


async def test_starttls_required_but_not_offered_pauses_sending(tmp_path: Path, smtp_server: RecordingSMTPServer) -> None:
    world = smtp_world(tmp_path, smtp_server, MAILFLOW_SMTP__TLS="starttls", **AUTH)
    report = await world.run_once(T0)
    assert report.sent.paused and "STARTTLS" in report.sent.paused
    assert smtp_server.logins == [] and smtp_server.messages == []
    r = run_cli("--now", T0, "run", "--once", env=world.env)
    assert r.code == 1 and "sending paused" in r.out and "STARTTLS" in r.out


@pytest.mark.parametrize("section", ["smtp", "imap"])
def test_password_in_clear_to_a_remote_host_is_refused_before_any_connection(tmp_path: Path, smtp_server: RecordingSMTPServer, section: str) -> None:
    """`.invalid` never resolves: the message proves the refusal came before any connection attempt."""
    env = {"MAILFLOW_SMTP__USERNAME": "bot", "MAILFLOW_SMTP__PASSWORD": "pw"}
    env[f"MAILFLOW_{section.upper()}__HOST"] = "mail.example.invalid"
    env[f"MAILFLOW_{section.upper()}__TLS"] = "none"
    if section == "imap":
        env.update({"MAILFLOW_IMAP__ENABLED": "true", "MAILFLOW_IMAP__PORT": "143"})
    world = smtp_world(tmp_path, smtp_server, **env)
    r = run_cli("--now", T0, "run", "--once", env=world.env)
    out = r.out + r.err
    assert r.code != 0
    assert "in clear to a non-loopback host" in out and f"{section}.tls" in out
    assert "Traceback" not in out and "Name or service not known" not in out
    assert smtp_server.messages == []


async def test_imaps_verified_with_the_configured_ca(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    world = World(f"sqlite:///{tmp_path / 'imaps.db'}", smtp_server, dovecot, MAILFLOW_IMAP__TLS="implicit",
                  MAILFLOW_IMAP__PORT=str(dovecot.imaps_port), MAILFLOW_IMAP__CAFILE=dovecot.cafile)  # fmt: skip
    world.import_rows([pair_row(1)])
    await world.run_once(T0)
    (intro,) = world.sent("introduction", to="mentee1@example.net")
    world.deliver(world.reply_to(intro, "Premier rendez-vous fait !"))
    report = await world.run_once("2026-09-02T10:00")
    assert report.inbox == {"processed": 1}


async def test_imaps_wrong_ca_is_refused(tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer], dovecot: DovecotServer) -> None:
    other = smtp_server_factory(tls="implicit")  # its CA is not Dovecot's
    world = World(f"sqlite:///{tmp_path / 'imaps.db'}", other, dovecot, MAILFLOW_IMAP__TLS="implicit",
                  MAILFLOW_IMAP__PORT=str(dovecot.imaps_port), MAILFLOW_IMAP__CAFILE=str(other.cafile))  # fmt: skip
    world.deliver(b"From: a@b.example\r\nSubject: x\r\nMessage-ID: <tls1@b>\r\n\r\nhello\r\n")
    with pytest.raises(MailboxError, match="TLS|certificate|connect"):  # a certificate problem stops the pass
        await world.run_once(T0)
    assert len(world.folder("INBOX")) == 1  # untouched

"""One full pass of the service: read the inbox and apply replies, advance every due pair, send what is due."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from mailflow.config import Settings
from mailflow.effects import Outgoing
from mailflow.errors import MailboxError, TLSPolicyError
from mailflow.outbox import OutboxSender, SendStats
from mailflow.scheduler import PassStats, run_pass

log = logging.getLogger("mailflow.service")


def instance_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def outgoing(settings: Settings) -> Outgoing:
    return Outgoing(domain=settings.mail.domain, team_address=settings.mail.team_address)


@dataclass
class OnceReport:
    inbox: dict[str, int] = field(default_factory=dict)
    inbox_error: str | None = None  # the mailbox could not be read (the rest of the pass ran)
    inbox_skipped: str | None = None  # no IMAP credentials configured
    lifecycle: PassStats = field(default_factory=PassStats)
    digests: int = 0
    sent: SendStats = field(default_factory=SendStats)


async def run_once(engine: Engine, settings: Settings, clock: Callable[[], datetime], owner: str | None = None) -> OnceReport:
    """inbox -> lifecycle -> digests -> outbox, in that order, then return."""
    report = OnceReport()
    owner = owner or instance_id()
    if settings.imap.enabled and settings.imap.password is None:
        report.inbox_skipped = "imap.password is not set"
        log.warning("inbox not configured (imap.password unset); not read", extra={"action": "inbox_skipped"})
    elif settings.imap.enabled:
        from mailflow.inbox import read_inbox_once

        try:
            report.inbox = await read_inbox_once(engine, settings, clock)
        except TLSPolicyError:
            raise  # a configuration that would leak a password: stop before doing anything
        except (MailboxError, OSError, TimeoutError) as exc:
            # the rest of the pass still runs: due emails must not wait for the mailbox to come back
            report.inbox_error = str(exc) if isinstance(exc, MailboxError) else type(exc).__name__
            log.error("inbox unavailable; pass continues without it", extra={"action": "inbox_unavailable"})
    report.lifecycle = run_pass(engine, clock(), settings.policy(), outgoing(settings))
    if settings.digest.enabled:
        from mailflow.digest import queue_digests

        report.digests = queue_digests(engine, settings, clock())
    report.sent = await OutboxSender(engine, settings, owner, clock).run_once()
    if report.sent.paused:
        log.error("sending paused: %s", report.sent.paused, extra={"action": "smtp_paused"})
    return report

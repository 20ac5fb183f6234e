"""A whole mailflow world for tests: a database, the recording SMTP relay, a Dovecot mailbox, settings.

world = World(db_url, smtp_server, dovecot)     # a fresh Dovecot user per world
world.import_csv(rows)                           # roster rows (dicts) -> pairs
await world.run_once("2026-09-01T09:00")         # inbox, lifecycle, digests, outbox
world.sent(kind="introduction")                  # parsed emails the relay received
world.reply_to(msg, "1", sender=...)             # raw reply bytes, as a mail client would write
world.deliver(raw)                               # APPEND to the watched INBOX
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Any

from mailflow.adapters.db import make_engine, migrate
from mailflow.clock import parse_now
from mailflow.config import Settings, load_settings
from mailflow.core.roster import REQUIRED_COLUMNS, parse_roster
from mailflow.importer import import_roster
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer

FROM = "mentorat@example.org"


def pair_row(i: int, referent: int = 0, **over: str) -> dict[str, str]:
    row = {
        "pair_ref": f"P{i:02d}", "mentor_first_name": f"Mentor{i}", "mentor_last_name": "Durand",
        "mentor_email": f"mentor{i}@example.org", "mentor_phone": f"06 12 34 {i // 100 % 100:02d} {i % 100:02d}",
        "mentor_job": "Ingénieure", "mentor_sector": "Numérique", "mentee_first_name": f"Mentee{i}",
        "mentee_last_name": "Martin", "mentee_email": f"mentee{i}@example.net", "mentee_phone": f"07 61 23 {i // 100 % 100:02d} {i % 100:02d}",
        "mentee_sector": "Numérique", "track": "orientation", "referent_name": f"Referent{referent}",
        "referent_email": f"referent{referent}@example.org", "matched_on": "2026-09-01",
    }  # fmt: skip
    row.update(over)
    return row


def roster_csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REQUIRED_COLUMNS)
    writer.writerows([[r[c] for c in REQUIRED_COLUMNS] for r in rows])
    return buf.getvalue().encode()


class World:
    def __init__(self, db_url: str, smtp: RecordingSMTPServer, dovecot: DovecotServer | None = None, **extra_env: str) -> None:
        self.db_url, self.smtp, self.dovecot = db_url, smtp, dovecot
        self.user, self.password = dovecot.new_user() if dovecot else ("none", "none")
        self.env = {
            "MAILFLOW_DATABASE__URL": db_url,
            "MAILFLOW_SMTP__HOST": smtp.host,
            "MAILFLOW_SMTP__PORT": str(smtp.port),
            "MAILFLOW_SMTP__RATE_PER_MINUTE": "60000",
            "MAILFLOW_MAIL__FROM_ADDRESS": FROM,
            "MAILFLOW_SECURITY__SECRET": "test-secret-0123456789",
            "MAILFLOW_IMAP__ENABLED": "true" if dovecot else "false",
            "MAILFLOW_IMAP__HOST": dovecot.host if dovecot else "127.0.0.1",
            "MAILFLOW_IMAP__PORT": str(dovecot.imap_port) if dovecot else "1",
            "MAILFLOW_IMAP__USERNAME": self.user,
            "MAILFLOW_IMAP__PASSWORD": self.password,
            "MAILFLOW_IMAP__POLL_INTERVAL_S": "1",
            "MAILFLOW_DIGEST__ENABLED": "false",  # tests that want digests pass MAILFLOW_DIGEST__ENABLED="true"
        }
        self.env.update(extra_env)
        self.engine = make_engine(db_url)
        migrate(self.engine)

    @property
    def settings(self) -> Settings:
        saved = {k: v for k, v in os.environ.items() if k.startswith("MAILFLOW_")}
        for k in saved:
            del os.environ[k]
        os.environ.update(self.env)
        try:
            return load_settings(None)
        finally:
            for k in self.env:
                os.environ.pop(k, None)
            os.environ.update(saved)

    def now(self, text: str) -> datetime:
        return parse_now(text, self.settings.tz)

    def import_rows(self, rows: list[dict[str, str]], at: str = "2026-09-01T09:00") -> None:
        import_roster(self.engine, parse_roster(roster_csv(rows)), self.now(at))

    async def run_once(self, at: str) -> Any:
        from mailflow.service import run_once

        now = self.now(at)
        return await run_once(self.engine, self.settings, lambda: now, owner="test")

    # ---- mail ---------------------------------------------------------------------------------
    def sent(self, kind: str | None = None, to: str | None = None) -> list[EmailMessage]:
        out = []
        for received in self.smtp.messages:
            msg = BytesParser(policy=policy.default).parsebytes(received.data)
            assert isinstance(msg, EmailMessage)
            if kind and msg["X-Mailflow-Kind"] != kind:
                continue
            if to and to not in received.rcpt_tos:
                continue
            out.append(msg)
        return out

    def reply_to(self, original: EmailMessage, body: str, *, sender: str | None = None, subject: str | None = None,
                 headers: dict[str, str] | None = None, quote: bool = True) -> bytes:  # fmt: skip
        """A top-posted reply over the quoted original, sent to its Reply-To (as Gmail does)."""
        reply = EmailMessage()
        reply["From"] = sender or str(original["To"].addresses[0].addr_spec)
        reply["To"] = str(original["Reply-To"])
        reply["Subject"] = subject or f"Re: {original['Subject']}"
        reply["Message-ID"] = make_msgid(domain="client.example.net")
        reply["In-Reply-To"] = original["Message-ID"]
        reply["References"] = original["Message-ID"]
        reply["Date"] = format_datetime(datetime.now().astimezone())
        for k, v in (headers or {}).items():
            reply[k] = v
        text = body
        if quote:
            quoted = "\n".join("> " + line for line in original.get_body(("plain",)).get_content().splitlines())
            text += f"\n\nLe lun. 1 sept. 2026 à 09:00, Programme de mentorat <{FROM}> a écrit\u00a0:\n{quoted}\n"
        reply.set_content(text)
        return reply.as_bytes()

    def deliver(self, raw: bytes) -> None:
        assert self.dovecot is not None
        self.dovecot.append(raw, "INBOX", user=self.user)

    def folder(self, name: str) -> list[bytes]:
        assert self.dovecot is not None
        return self.dovecot.list_folder(name, user=self.user)

"""`mailflow demo`: seven months of the programme on a sandbox, in accelerated time, through the real code.

What is real: the database (SQLite), the lifecycle, the outbox and its SMTP client, the templates,
the reply parser, correlation by signed token, the digests and the referents' reply commands.
What is simulated: the clock (a virtual one, advanced pass by pass), the relay (an aiosmtpd server
on a loopback port that keeps every email) and the IMAP mailbox -- replies are handed straight to
`InboxProcessor.process(raw, now)`, the very function the IMAP reader calls for each message.
Console output names kinds, roles, pair refs and first names only: no address, phone or text.
"""

from __future__ import annotations

import asyncio
import heapq
import html
import itertools
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import event as sa_event
from sqlmodel import Session, col, select

from mailflow.adapters.db import make_engine, migrate
from mailflow.adapters.tables import AuditEvent, Flag, InboundMessage, Pair, PairEvent, Person
from mailflow.config import Settings
from mailflow.core.roster import PairRow, parse_roster
from mailflow.demo_personas import CLIENT_NAMES, PARIS, Persona, Say, persona, write_dsn, write_referent_reply, write_reply
from mailflow.errors import MailflowError
from mailflow.importer import import_roster
from mailflow.inbox import InboxProcessor
from mailflow.resources import shipped_dir

START = date(2026, 9, 1)
MONTHS = 7
PASS_TIMES = (dtime(8, 0), dtime(18, 0))
FROM = "mentorat@example.org"


class DemoError(MailflowError):
    """The demo could not run."""


# ---- the embedded relay ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt: str
    data: bytes


class _SinkHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # like the final MTA: the envelope sender becomes Return-Path (auto-replies and DSNs go there)
        raw = f"Return-Path: <{envelope.mail_from}>\r\n".encode() + (envelope.original_content or b"")
        with self.lock:
            self.messages.extend(Received(envelope.mail_from, r, raw) for r in envelope.rcpt_tos)
        return "250 2.0.0 OK"

    def take(self) -> list[Received]:
        with self.lock:
            out, self.messages = self.messages, []
        return out


def start_sink() -> tuple[Any, _SinkHandler]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        raise DemoError("mailflow demo needs aiosmtpd: pip install 'mailflow[demo]' (make demo installs it)") from None
    import socket

    with socket.socket() as probe:  # a free loopback port (aiosmtpd checks readiness by connecting to it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = _SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, handler


# ---- the sandbox -----------------------------------------------------------------------------


def demo_settings(db: Path, smtp_port: int) -> Settings:
    """The demo's own settings: MAILFLOW_* variables of the shell are ignored (they may point at production)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("MAILFLOW_")}
    try:
        return Settings(
            database={"url": f"sqlite:///{db.resolve()}"},
            smtp={"host": "127.0.0.1", "port": smtp_port, "rate_per_minute": 600000, "max_connections": 1},
            imap={"enabled": False},
            mail={"from_address": FROM, "programme_name": "Mentorat Demo", "from_name": "Programme de mentorat"},
            security={"secret": secrets.token_hex(16)},
        )  # type: ignore[arg-type]
    finally:
        os.environ.update(saved)


def paris(day: date, at: dtime) -> datetime:
    return datetime.combine(day, at, tzinfo=PARIS)


@dataclass(frozen=True)
class Who:
    ref: str
    role: str
    first_name: str
    email: str


@dataclass
class Archive:
    """Every email (sent and received) as .eml plus its HTML body, and an index.html to browse them."""

    root: Path
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, at: datetime, direction: str, kind: str, who: Who, raw: bytes, msg: EmailMessage) -> None:
        ref, role = who.ref, who.role
        n = len(self.rows) + 1
        stem = f"{n:04d}-{at.astimezone(PARIS):%Y%m%d-%H%M}-{kind}-{ref + '-' if ref else ''}{role}"
        folder = self.root / ("emails" if direction == "sent" else "inbox")
        (folder / f"{stem}.eml").write_bytes(raw)
        (folder / f"{stem}.html").write_text(_html_body(msg), encoding="utf-8")
        self.rows.append({"at": f"{at.astimezone(PARIS):%Y-%m-%d %H:%M}", "direction": direction, "kind": kind, "ref": ref,
                          "role": role, "name": who.first_name, "subject": str(msg["Subject"] or ""), "eml": f"{folder.name}/{stem}.eml",
                          "html": f"{folder.name}/{stem}.html"})  # fmt: skip

    def write_index(self, counts: Counter[str]) -> Path:
        cells = []
        for r in sorted(self.rows, key=lambda r: r["at"]):  # stable: same-minute emails keep their order
            arrow = "&rarr; sent" if r["direction"] == "sent" else "&larr; received"
            cells.append(
                f'<tr class="{r["direction"]} k-{html.escape(r["kind"])}"><td>{r["at"]}</td><td>{arrow}</td>'
                f"<td><code>{html.escape(r['kind'])}</code></td><td>{html.escape(r['ref'])}</td><td>{html.escape(r['role'])}</td><td>{html.escape(r['name'])}</td>"
                f'<td>{html.escape(r["subject"])}</td><td><a href="{r["html"]}">view</a> · <a href="{r["eml"]}">.eml</a></td></tr>'
            )
        summary = " · ".join(f"<code>{html.escape(k)}</code> {v}" for k, v in sorted(counts.items()))
        kinds = sorted({r["kind"] for r in self.rows})
        options = "".join(f'<option value="{html.escape(k)}">{html.escape(k)}</option>' for k in kinds)
        page = INDEX_TEMPLATE.format(count=len(self.rows), summary=summary, options=options, rows="\n".join(cells))
        path = self.root / "index.html"
        path.write_text(page, encoding="utf-8")
        return path


INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailflow demo: every email</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.4em; margin-bottom: .2em; }} p {{ color: #555; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e3e3; vertical-align: top; }}
th {{ background: #f3f3f3; position: sticky; top: 0; }}
tr.received td {{ background: #f7fbff; }} tr.k-urgent_alert td {{ background: #fff1f0; }}
code {{ font-size: 12px; }} td:nth-child(1), td:nth-child(2), td:last-child {{ white-space: nowrap; }}
label {{ margin-right: 1em; }}
</style></head><body>
<h1>mailflow demo: every email of seven months</h1>
<p>{count} emails, sent by mailflow (&rarr;) and received from the scripted personas (&larr;). Times are Paris time.<br>{summary}</p>
<p><label><input type="checkbox" id="hide-digests"> hide the daily digests</label>
<label>only kind <select id="kind"><option value="">(all)</option>{options}</select></label></p>
<table><thead><tr><th>date</th><th>direction</th><th>kind</th><th>pair</th><th>recipient / sender</th><th>first name</th>
<th>subject</th><th>open</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<script>
const rows = [...document.querySelectorAll("tbody tr")];
function filter() {{
  const hide = document.getElementById("hide-digests").checked, kind = document.getElementById("kind").value;
  for (const r of rows) r.hidden = (hide && r.classList.contains("k-digest")) || (kind && !r.classList.contains("k-" + kind));
}}
document.getElementById("hide-digests").onchange = filter; document.getElementById("kind").onchange = filter;
</script></body></html>
"""


def _html_body(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    if part is not None:
        return str(part.get_content())
    plain = msg.get_body(("plain",))
    text = plain.get_content() if plain is not None else "(no text part)"
    return (f'<!doctype html><meta charset="utf-8"><title>{html.escape(str(msg["Subject"] or ""))}</title>'
            f'<pre style="font: 14px/1.45 system-ui, sans-serif; white-space: pre-wrap; max-width: 46em; margin: 2em">'
            f"{html.escape(text)}</pre>")  # fmt: skip


# ---- the timeline ------------------------------------------------------------------------------

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class Timeline:
    """Dated console lines, grouped by day; days with nothing but the daily digests fold into one line."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.day: date | None = None
        self.lines: list[str] = []
        self.digest_only = True
        self.quiet = 0
        self.month = ""

    def add(self, at: datetime, text: str, *, digest: bool = False) -> None:
        local = at.astimezone(PARIS)
        if local.date() != self.day:
            self.flush()
            self.day = local.date()
        self.lines.append(f"  {local:%H:%M}  {text}")
        self.digest_only = self.digest_only and digest

    def flush(self, final: bool = False) -> None:
        if self.day is not None and self.lines and not self.digest_only:
            if self.quiet:
                self.echo(f"  … {self.quiet} quiet day(s): only the referents' daily digests")
                self.quiet = 0
            month = f"{self.day:%Y-%m}"
            if month != self.month:
                self.month = month
                self.echo(f"\n=== {self.day:%B %Y} ===")
            self.echo(f"{DAY_NAMES[self.day.weekday()]} {self.day:%Y-%m-%d}")
            for line in self.lines:
                self.echo(line)
        elif self.day is not None:
            self.quiet += 1
        if final and self.quiet:
            self.echo(f"  … {self.quiet} quiet day(s): only the referents' daily digests")
        self.lines, self.digest_only = [], True


# ---- the simulation ----------------------------------------------------------------------------


class Demo:
    def __init__(self, out: Path, echo: Callable[[str], None]) -> None:
        self.out, self.echo = out, echo
        self.queue: list[tuple[datetime, int, Callable[[datetime], None]]] = []
        self.seq = itertools.count()
        self.seen: Counter[tuple[str, str, str]] = Counter()  # (ref, role, kind) -> emails received
        self.counts: Counter[str] = Counter()
        self.last_event = self.last_audit = 0
        self.timeline = Timeline(echo)
        self.archive = Archive(out)
        self.rows = parse_roster((shipped_dir("config") / "demo-pairs.csv").read_bytes())

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, smtp_port: int) -> None:
        for sub in ("emails", "inbox"):
            shutil.rmtree(self.out / sub, ignore_errors=True)
            (self.out / sub).mkdir(parents=True)
        db = self.out / "mailflow.db"
        for path in (db, db.with_suffix(".lock"), Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        self.settings = demo_settings(db, smtp_port)
        self.engine = make_engine(self.settings.database.url)
        # a throwaway sandbox: no fsync per commit, and one connection held open so that closing the
        # others does not checkpoint the WAL each time (the demo does ~10,000 short transactions)
        sa_event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
        self.keepalive = self.engine.raw_connection()
        migrate(self.engine)
        self.inbox = InboxProcessor(self.engine, self.settings)
        import_roster(self.engine, self.rows, paris(START, dtime(7, 30)))
        with Session(self.engine) as s:
            people = list(s.exec(select(Person)))
            pairs = list(s.exec(select(Pair)))
        self.referent_pairs = {p.referent_id: [q.ref for q in pairs if q.referent_id == p.referent_id] for p in pairs}
        self.who: dict[str, Who] = {}
        for pair in pairs:
            for role, pid in (("mentor", pair.mentor_id), ("mentee", pair.mentee_id)):
                person = next(p for p in people if p.id == pid)
                self.who[person.email] = Who(pair.ref, role, person.first_name, person.email)
        for person in people:
            if person.role == "referent":
                self.who[person.email] = Who("", "referent", person.first_name, person.email)
        self.referent_ids = {p.email: p.id for p in people if p.role == "referent"}

    def at(self, when: datetime, action: Callable[[datetime], None]) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), action))

    # -- one step ------------------------------------------------------------------------------
    async def run(self, sink: _SinkHandler) -> None:
        from mailflow.service import run_once

        end = START + timedelta(days=30 * MONTHS + 2)
        day = START
        while day <= end:
            for t in PASS_TIMES:
                self.at(paris(day, t), lambda now: None)
            day += timedelta(days=1)
        last = paris(end, PASS_TIMES[-1])
        while self.queue and self.queue[0][0] <= last:
            when, _, action = heapq.heappop(self.queue)
            action(when)  # a reply applied, an operator command...
            await run_once(self.engine, self.settings, lambda when=when: when, owner="demo")  # type: ignore[misc]
            self.harvest(when, sink)
        self.timeline.flush(final=True)

    def harvest(self, now: datetime, sink: _SinkHandler) -> None:
        """Print what this pass did: emails out, events of the pairs' logs, referents' commands."""
        self._events(now)
        self._audits()
        for received in sink.take():
            self._delivered(received, now)

    def _delivered(self, received: Received, now: datetime) -> None:
        msg = BytesParser(policy=email_policy.default).parsebytes(received.data)
        assert isinstance(msg, EmailMessage)
        kind = str(msg["X-Mailflow-Kind"] or "?")
        who = self.who.get(received.rcpt.lower(), Who("", "team", "", ""))
        self.counts[kind] += 1
        sent_at = msg["Date"].datetime if msg["Date"] else now
        self.archive.add(sent_at, "sent", kind, who, received.data, msg)
        mark = "!!" if kind == "urgent_alert" else "->"
        self.timeline.add(sent_at, f"{mark} {kind:<22} to {who.role:<8} {who.ref or '    '} {who.first_name}", digest=kind == "digest")
        if who.role == "referent":
            if kind == "digest":
                self._referent_reads(msg, who, now)
            return
        n = self.seen[(who.ref, who.role, kind)]
        self.seen[(who.ref, who.role, kind)] += 1
        p = persona(who.ref, who.role)
        say = p.answer(kind, n) if p else None
        if p is not None and say is not None:
            self.at(_daytime(now + timedelta(hours=say.after_h)), lambda t, m=msg, s=say, p=p, w=who, r=received: self._reply(t, m, s, p, w, r))

    # -- people acting -------------------------------------------------------------------------
    def _reply(self, now: datetime, original: EmailMessage, say: Say, p: Persona, who: Who, received: Received) -> None:
        if say.how == "bounce":
            raw = write_dsn(original, received.mail_from, who.email, say.text, now)
            label = "a delivery failure notice (DSN) from the mentee's mail server"
        else:
            raw = write_reply(original, say, who.email, p.client, now)
            label = f"{'an out-of-office' if say.how == 'auto_reply' else 'a reply'} ({CLIENT_NAMES[p.client]})"
        self._inbound(now, raw, who, label)

    def _inbound(self, now: datetime, raw: bytes, who: Who, label: str) -> None:
        msg = BytesParser(policy=email_policy.default).parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        outcome = self.inbox.process(raw, now)
        with Session(self.engine) as s:
            row = s.exec(select(InboundMessage).where(InboundMessage.dedup_key == str(msg["Message-ID"]).strip())).first()
        kind = row.kind if row else "?"
        intent = f", intent {row.intent}" if row is not None and row.intent else ""
        self.archive.add(now, "received", kind, who, raw, msg)
        subject = f"{who.role} {who.ref} {who.first_name}".replace("  ", " ")
        where = "" if outcome.label == "processed" else f" [{outcome.label}]"
        self.timeline.add(now, f"<- {subject} sent {label}: understood as {kind}{intent}{where}")

    def _referent_reads(self, digest: EmailMessage, who: Who, now: datetime) -> None:
        """A referent acts on the digest: calls made, urgent handled, messages read, closures confirmed."""
        refs = self.referent_pairs[self.referent_ids[who.email]]
        with Session(self.engine) as s:
            flags = list(s.exec(select(Flag, Pair.ref).join(Pair, col(Pair.id) == col(Flag.pair_id))
                                .where(Flag.is_open == True, col(Pair.ref).in_(refs))))  # noqa: E712  # fmt: skip
        lines: list[str] = []
        for flag, ref in flags:
            if flag.kind == "call":
                if flag.reason == "bounce":  # the referent phones, gets the right address, re-imports it
                    self.at(now + timedelta(hours=1.4), lambda t, ref=ref, w=who: self._correct_address(t, ref, w))
                else:
                    lines.append(f"appel {ref} fait: joint, tout va bien")
            elif flag.kind == "urgent":
                lines.append(f"urgent traité {ref}")
            elif flag.kind == "review":
                lines.append(f"lu {ref}")
            elif flag.kind == "closure_requested":
                self.at(now + timedelta(hours=2), lambda t, ref=ref, w=who: self._close(t, ref, w))
        lines = sorted(set(lines))
        if lines:
            raw = write_referent_reply(digest, lines, who.email, now + timedelta(hours=1.5))
            self.at(now + timedelta(hours=1.5), lambda t, r=raw, w=who: self._inbound(t, r, w, f"a reply to the digest with {len(lines)} command(s)"))

    def _close(self, now: datetime, ref: str, who: Who) -> None:
        from mailflow.operator import close_pair

        with Session(self.engine) as s:
            state = s.exec(select(Pair.state).where(Pair.ref == ref)).one()
        if state in ("active", "awaiting_first_contact"):
            self.timeline.add(now, f"$  referent {who.first_name} confirms the closure: mailflow pairs close {ref}")
            close_pair(self.engine, self.settings, ref, now)

    def _correct_address(self, now: datetime, ref: str, who: Who) -> None:
        row = next(r for r in self.rows if r.ref == ref)
        fixed = _with_mentee_email(row, row.mentee.email.replace(".dialo@", ".diallo@"))
        result = import_roster(self.engine, [fixed], now)
        self.who[fixed.mentee.email] = Who(ref, "mentee", fixed.mentee.first_name, fixed.mentee.email)
        self.timeline.add(now, f"$  referent {who.first_name} re-imports the roster with {ref}'s corrected address "
                               f"(mailflow pairs import): {result.corrected} corrected")  # fmt: skip

    # -- the pairs' logs -------------------------------------------------------------------------
    def _events(self, now: datetime) -> None:
        with Session(self.engine) as s:
            query = select(PairEvent, Pair.ref).join(Pair, col(Pair.id) == col(PairEvent.pair_id)).where(col(PairEvent.id) > self.last_event)
            rows = list(s.exec(query.order_by(col(PairEvent.id))))
        for event, ref in rows:
            self.last_event = max(self.last_event, event.id or 0)
            who = f"({event.who}, {event.reason})" if event.who else f"({event.reason})"
            if event.kind == "flag_raised":
                self.timeline.add(event.at, f"+  flag {event.flag} {who} on {ref}")
            elif event.kind == "flag_cleared":
                self.timeline.add(event.at, f"-  flag {event.flag} cleared {who} on {ref}")
            elif event.kind == "state_changed":
                data = json.loads(event.data or "{}")
                self.timeline.add(event.at, f"*  {ref} {data.get('from')} => {data.get('to')}")

    def _audits(self) -> None:
        with Session(self.engine) as s:
            rows = list(s.exec(select(AuditEvent).where(col(AuditEvent.id) > self.last_audit).order_by(col(AuditEvent.id))))
        for row in rows:
            self.last_audit = max(self.last_audit, row.id or 0)
            if row.action == "referent_command":
                d = json.loads(row.detail or "{}")
                self.timeline.add(row.at, f"   referent command {d.get('command')} {d.get('pair_ref', '')}: {d.get('outcome')}")


def _daytime(at: datetime) -> datetime:
    """People write between 07:30 and 23:00; a reply scripted for the night comes the next morning."""
    local = at.astimezone(PARIS)
    if local.hour >= 23:
        local = local + timedelta(days=1)
    if local.hour >= 23 or local.time() < dtime(7, 30):
        local = local.replace(hour=8, minute=10 + local.minute % 30)
    return local


def _with_mentee_email(row: PairRow, email: str) -> PairRow:
    import dataclasses

    return dataclasses.replace(row, mentee=dataclasses.replace(row.mentee, email=email))


# ---- the end: a summary ------------------------------------------------------------------------


def _summary(demo: Demo, elapsed_s: float, index: Path) -> None:
    from mailflow.core.model import EmailKind
    from mailflow.stats import compute_stats

    echo = demo.echo
    echo("\n=== emails sent, by X-Mailflow-Kind ===")
    for kind in EmailKind:
        echo(f"  {kind.value:<24} {demo.counts.get(kind.value, 0)}")
    missing = [k.value for k in EmailKind if not demo.counts.get(k.value)]
    if missing:
        echo(f"  (never sent in this run: {', '.join(missing)})")
    stats = compute_stats(demo.engine, None, None, demo.settings.policy())
    echo("\n=== mailflow stats ===")
    for key, value in stats.items():
        if key == "period":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        echo(f"  {key:<26} {value}")
    echo(f"\nPlayed {MONTHS} months in {elapsed_s:.1f} s. Every email is in {demo.out}/emails and {demo.out}/inbox;")
    echo(f"browse them: {index.resolve().as_uri()}")
    echo(f"Explore the sandbox: MAILFLOW_DATABASE__URL={demo.settings.database.url} mailflow pairs show P06")


def run_demo(out: Path, echo: Callable[[str], None] = typer.echo) -> int:
    started = time.monotonic()
    for name in ("mailflow", "aiosmtpd", "mail.log"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the timeline says what happens
    out.mkdir(parents=True, exist_ok=True)
    controller, sink = start_sink()
    try:
        demo = Demo(out, echo)
        demo.setup(controller.port)
        echo(f"mailflow demo: {len(demo.rows)} pairs, 2 referents, {MONTHS} months from {START:%Y-%m-%d}, Paris time.")
        echo("Sandbox: SQLite, a local SMTP server (aiosmtpd) that keeps every email, scripted replies fed to the inbox.")
        asyncio.run(demo.run(sink))
        index = demo.archive.write_index(demo.counts)
        _summary(demo, time.monotonic() - started, index)
        demo.keepalive.close()
    finally:
        controller.stop()
    return 0


__all__ = ["Demo", "run_demo"]

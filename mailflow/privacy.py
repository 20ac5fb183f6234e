"""Data protection: export everything held about a person, erase a person, purge by the retention settings.

Erasure removes a person from the database AND from the mailbox folders the service manages:
  1. the mailbox first (INBOX, Processed, Unmatched, Quarantine): every message from, to or about
     them (server-side TEXT search on the address, plus a local scan for their name and phone
     number in any format) is flagged \\Deleted and expunged -- done first because once the
     database is anonymised nothing identifies their messages any more; a mailbox failure
     erases nothing, so the operator can simply run the command again;
  2. one transaction: the person row anonymised (names -> "effacé", email -> erased-<random>@invalid,
     phone/job/sector emptied), their inbound texts blanked, outbox rows to them re-addressed (and
     unsent ones cancelled), call notes and any mention of them in event data, flags, digest
     payloads and audit details scrubbed. Pairs keep their states and event kinds: statistics work;
  3. SQLite: VACUUM then `wal_checkpoint(TRUNCATE)` (secure_delete is on) so no copy survives in
     free pages or the WAL; PostgreSQL: VACUUM of the touched tables.
Every export, erase and purge adds an AuditEvent whose detail holds ids and counts, never personal data.
A participant of an open pair is not erased: the pair is closed first (or its emails would go on).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any

import phonenumbers
from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.imap import ImapMailbox
from mailflow.adapters.tables import AuditEvent, Flag, InboundMessage, OutboxMessage, Pair, PairEvent, Person
from mailflow.config import Settings
from mailflow.core.model import EventKind, State
from mailflow.errors import InputError, NotFoundError

log = logging.getLogger("mailflow.privacy")
ERASED_NAME = "effacé"
REDACTED = "[effacé]"
OPEN_STATES = (State.AWAITING_FIRST_CONTACT.value, State.ACTIVE.value)
ENDED_STATES = (State.CLOSED.value, State.ENDED_NO_CONTACT.value)
TOUCHED_TABLES = ("people", "inbound_messages", "outbox", "pair_events", "flags", "audit_events")
_PHONE_LIKE = re.compile(r"\+?\(?\d[\d .\-/()\u00a0]{6,}\d")
_SCAN_LIMIT_BYTES = 5 * 1024 * 1024  # bigger messages are matched by the server-side address search only


# ---- who a person is, in free text ---------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What identifies one person in free text: address, names, phone (E.164)."""

    email: str
    first_name: str = ""
    last_name: str = ""
    phone: str = ""

    @classmethod
    def of(cls, person: Person) -> Identity:
        return cls(person.email.lower(), person.first_name.strip(), person.last_name.strip(), person.phone.strip())

    def names(self, *, first_name_alone: bool) -> list[str]:
        out = [self.email]
        full = f"{self.first_name} {self.last_name}".strip()
        if self.last_name and len(full) > len(self.first_name):
            out += [full, f"{self.last_name} {self.first_name}"]
        if len(self.last_name) >= 3:
            out.append(self.last_name)
        if first_name_alone and len(self.first_name) >= 3:
            out.append(self.first_name)
        return [n for n in out if n]

    def has_phone(self, text: str) -> bool:
        return bool(self.phone) and any(_same_phone(m.group(0), self.phone) for m in _PHONE_LIKE.finditer(text))

    def mentioned_in(self, text: str) -> bool:
        """For mailbox messages: the address, the full or last name, or the phone -- not a first name alone."""
        low = text.casefold()
        return any(n.casefold() in low for n in self.names(first_name_alone=False)) or self.has_phone(text)

    def scrub(self, text: str) -> str:
        """Replace every mention (first name included: callers only scrub texts of this person's pairs)."""
        for needle in sorted(self.names(first_name_alone=True), key=len, reverse=True):
            text = re.sub(re.escape(needle), REDACTED, text, flags=re.IGNORECASE)
        if self.phone:
            text = _PHONE_LIKE.sub(lambda m: REDACTED if _same_phone(m.group(0), self.phone) else m.group(0), text)
        return text


def _same_phone(candidate: str, e164: str) -> bool:
    try:
        number = phonenumbers.parse(candidate.replace("\u00a0", " "), "FR")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == e164


def _scrub_json(text: str, people: Iterable[Identity]) -> str:
    """Scrub every string inside a JSON document (keys kept)."""
    idents = list(people)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            for ident in idents:
                value = ident.scrub(value)
            return value
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    try:
        data = json.loads(text or "{}")
    except ValueError:
        return "{}"
    return json.dumps(walk(data), ensure_ascii=False, sort_keys=True)


# ---- export ---------------------------------------------------------------------------------


def find_person(session: Session, email: str) -> Person:
    person = session.exec(select(Person).where(Person.email == email.strip().lower())).first()
    if person is None or person.id is None:
        raise NotFoundError("no person with this email address (see `mailflow pairs list`)")
    return person


def _pairs_of(session: Session, person_id: int) -> list[tuple[Pair, str]]:
    query = select(Pair).where(or_(col(Pair.mentor_id) == person_id, col(Pair.mentee_id) == person_id, col(Pair.referent_id) == person_id))
    out = []
    for pair in session.exec(query.order_by(col(Pair.ref))):
        role = "mentor" if pair.mentor_id == person_id else "mentee" if pair.mentee_id == person_id else "referent"
        out.append((pair, role))
    return out


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _pair_export(session: Session, pair: Pair, role: str) -> dict[str, Any]:
    from mailflow.queries import _event_json

    mine = (None, role) if role != "referent" else None
    events = [e for e in session.exec(select(PairEvent).where(PairEvent.pair_id == pair.id).order_by(col(PairEvent.id)))]
    flags = list(session.exec(select(Flag).where(Flag.pair_id == pair.id).order_by(col(Flag.id))))
    return {
        "ref": pair.ref, "role": role, "state": pair.state, "track": pair.track, "matched_on": _iso(pair.matched_on),
        "closed_at": _iso(pair.closed_at), "last_reply_at": _iso(pair.last_reply_at),
        "events": [_event_json(e) for e in events if mine is None or e.who in mine],
        "flags": [
            {"kind": f.kind, "who": f.who, "reason": f.reason, "since": _iso(f.since), "open": f.is_open,
             "closed_at": _iso(f.closed_at), "note": f.note}
            for f in flags if mine is None or f.who in mine
        ],
    }  # fmt: skip


def export_person(engine: Engine, email: str, now: datetime) -> dict[str, Any]:
    """Everything held about one person, as JSON-ready data (bodies of sent emails are not stored)."""
    with session_scope(engine) as session:
        person = find_person(session, email)
        pid = person.id
        assert pid is not None
        outbox = session.exec(select(OutboxMessage).where(OutboxMessage.person_id == pid).order_by(col(OutboxMessage.id)))
        inbound = session.exec(select(InboundMessage).where(InboundMessage.person_id == pid).order_by(col(InboundMessage.id)))
        pairs = _pairs_of(session, pid)
        data = {
            "exported_at": now.isoformat(),
            "person": {
                "email": person.email, "role": person.role, "first_name": person.first_name, "last_name": person.last_name,
                "phone": person.phone, "language": person.language, "job": person.job, "sector": person.sector,
                "bounced": person.bounced, "erased": person.erased, "created_at": _iso(person.created_at),
            },
            "pairs": [_pair_export(session, pair, role) for pair, role in pairs],
            "outbox": [
                {"kind": r.kind, "to_address": r.to_address, "state": r.state, "slot": r.slot, "message_id": r.message_id,
                 "created_at": _iso(r.created_at), "sent_at": _iso(r.sent_at), "attempts": r.attempts}
                for r in outbox
            ],
            "inbound": [
                {"received_at": _iso(m.received_at), "kind": m.kind, "outcome": m.outcome, "intent": m.intent, "text": m.text}
                for m in inbound
            ],
        }  # fmt: skip
        detail = {"person_id": pid, "pairs": len(pairs), "outbox": len(data["outbox"]), "inbound": len(data["inbound"])}
        session.add(AuditEvent(at=now, action="export", detail=json.dumps(detail)))
    log.info("person exported", extra={"action": "privacy_export", "person_id": pid})
    return data


# ---- erasure in the database ----------------------------------------------------------------


def _erase_rows(session: Session, person: Person, others: list[Identity]) -> dict[str, int]:
    """Anonymise one person and every mention of them; `others` are erased in the same transaction."""
    pid = person.id
    assert pid is not None
    ident = Identity.of(person)
    idents = [ident, *others]
    pairs = _pairs_of(session, pid)
    pair_ids = [p.id for p, _ in pairs if p.id is not None]
    counts = {"pairs": len(pairs), "inbound": 0, "outbox": 0, "events": 0}
    for m in session.exec(select(InboundMessage).where(InboundMessage.person_id == pid)):
        m.text, m.target_folder, counts["inbound"] = "", "", counts["inbound"] + 1
        if "@" in m.dedup_key:  # a Message-ID may hold an address: keep only a hash (dedup still works on it)
            m.dedup_key = "erased:" + hashlib.sha256(m.dedup_key.encode()).hexdigest()
        session.add(m)
    if pair_ids:
        for m in session.exec(select(InboundMessage).where(col(InboundMessage.pair_id).in_(pair_ids), InboundMessage.text != "")):
            m.text = _scrub_text(m.text, idents)
            session.add(m)
    new_email = f"erased-{secrets.token_hex(8)}@invalid"
    for r in session.exec(select(OutboxMessage).where(or_(col(OutboxMessage.person_id) == pid, col(OutboxMessage.to_address) == ident.email))):
        r.to_address, counts["outbox"] = new_email, counts["outbox"] + 1
        if r.state in ("pending", "held", "sending"):
            r.state, r.last_error, r.lease_owner, r.lease_until = "failed", "recipient erased", None, None
        session.add(r)
    for r in session.exec(select(OutboxMessage).where(OutboxMessage.payload != "{}")):
        _scrub_column(session, r, "payload", idents)
    roles = {p.id: role for p, role in pairs}
    for e in session.exec(select(PairEvent).where(col(PairEvent.pair_id).in_(pair_ids))) if pair_ids else []:
        data = json.loads(e.data or "{}")
        if e.kind == EventKind.CALL_DONE.value and e.who == roles.get(e.pair_id) and "note" in data:
            data["note"] = ""  # the call was about them: the note goes entirely
            e.data = json.dumps(data, ensure_ascii=False, sort_keys=True)
            session.add(e)
        counts["events"] += _scrub_column(session, e, "data", idents)
    for f in session.exec(select(Flag).where(col(Flag.pair_id).in_(pair_ids))) if pair_ids else []:
        f.note = "" if f.who == roles.get(f.pair_id) else _scrub_text(f.note, idents)
        session.add(f)
    for a in session.exec(select(AuditEvent)):
        _scrub_column(session, a, "detail", idents)
    person.first_name = person.last_name = ERASED_NAME
    person.email, person.phone, person.job, person.sector, person.erased = new_email, "", "", "", True
    session.add(person)
    return counts


def _scrub_text(text: str, idents: Iterable[Identity]) -> str:
    for ident in idents:
        text = ident.scrub(text)
    return text


def _scrub_column(session: Session, row: Any, column: str, idents: list[Identity]) -> int:
    before = getattr(row, column)
    if not before or before == "{}":
        return 0
    after = _scrub_json(before, idents)
    if after == json.dumps(json.loads(before), ensure_ascii=False, sort_keys=True):
        return 0
    setattr(row, column, after)
    session.add(row)
    return 1


def _check_erasable(session: Session, person: Person) -> None:
    open_refs = [p.ref for p, _ in _pairs_of(session, person.id or 0) if p.state in OPEN_STATES]
    if open_refs:
        what = "reassign" if person.role == "referent" else "close"
        raise InputError([f"this person is in open pair(s) {', '.join(open_refs)}: {what} them first (mailflow pairs {what} REF)"])


# ---- the mailbox --------------------------------------------------------------------------------


def managed_folders(settings: Settings) -> list[str]:
    i = settings.imap
    return list(dict.fromkeys([i.folder, i.processed_folder, i.unmatched_folder, i.quarantine_folder]))


def _message_text(raw: bytes) -> str:
    """Headers and decoded text parts (names may be quoted-printable or base64 in the raw bytes)."""
    parts = [raw.decode("latin-1")]
    try:
        msg = BytesParser(policy=email_policy.default).parsebytes(raw)
        parts += [f"{k}: {v}" for k, v in msg.items()]
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts.append(str(part.get_content()))
    except Exception:  # noqa: BLE001, S110 - a broken message is scanned as raw bytes only
        pass
    return "\n".join(parts)


async def _folder_matches(mailbox: ImapMailbox, idents: list[Identity]) -> list[int]:
    found: set[int] = set()
    for ident in idents:
        if ident.email.isascii():
            found.update(await mailbox.search_text(ident.email))
    uids = await mailbox.uids()
    sizes = await mailbox.sizes(uids)
    small = [u for u in uids if u not in found and sizes.get(u, 0) <= _SCAN_LIMIT_BYTES]
    async for fetched in mailbox.fetch(small, chunk=50):
        text = _message_text(fetched.raw)
        if any(ident.mentioned_in(text) for ident in idents):
            found.add(fetched.uid)
    return sorted(found)


async def delete_from_mailbox(settings: Settings, idents: list[Identity]) -> int:
    """Delete every message from, to or about these people in the managed folders; returns how many."""
    from mailflow.inbox import imap_config

    if not settings.imap.enabled or not idents:
        return 0
    deleted = 0
    async with ImapMailbox(imap_config(settings)) as mailbox:
        existing = set(await mailbox.folders())
        for folder in managed_folders(settings):
            if folder not in existing and folder.upper() != "INBOX":
                continue
            await mailbox.select(folder)
            uids = await _folder_matches(mailbox, idents)
            await mailbox.delete(uids)
            deleted += len(uids)
    return deleted


async def _delete_by_keys(settings: Settings, keys: set[str]) -> int:
    """Delete the copies of these inbound messages (dedup keys: Message-ID or sha256:<raw hash>)."""
    from mailflow.inbox import imap_config

    if not settings.imap.enabled or not keys:
        return 0
    i = settings.imap
    deleted = 0
    hashes = {k.removeprefix("sha256:") for k in keys if k.startswith("sha256:")}
    async with ImapMailbox(imap_config(settings)) as mailbox:
        existing = set(await mailbox.folders())
        for folder in dict.fromkeys([i.processed_folder, i.unmatched_folder, i.quarantine_folder]):
            if folder not in existing:
                continue
            await mailbox.select(folder)
            uids = await mailbox.uids()
            ids = await mailbox.header_message_ids(uids)
            doomed = {u for u, mid in ids.items() if mid and mid in keys}
            if hashes:
                async for fetched in mailbox.fetch([u for u in uids if u not in doomed and not ids.get(u)]):
                    if hashlib.sha256(fetched.raw).hexdigest() in hashes:
                        doomed.add(fetched.uid)
            await mailbox.delete(sorted(doomed))
            deleted += len(doomed)
    return deleted


# ---- compaction ------------------------------------------------------------------------------


def compact(engine: Engine, tables: Iterable[str] = TOUCHED_TABLES) -> None:
    """Leave no copy of removed data in free pages or the WAL (SQLite), reclaim dead rows (PostgreSQL)."""
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":
            cur = raw.cursor()
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("VACUUM")
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy = cur.fetchone()
            cur.close()
            if busy and busy[0]:
                log.warning("WAL checkpoint incomplete (a reader is active)", extra={"action": "privacy_compact"})
        elif engine.dialect.name == "postgresql":
            driver: Any = raw.driver_connection
            driver.autocommit = True  # VACUUM cannot run in a transaction
            for table in tables:
                driver.execute(f"VACUUM {table}")  # names come from TOUCHED_TABLES, not from input
    finally:
        raw.close()


# ---- erase and purge -------------------------------------------------------------------------


@dataclass
class EraseReport:
    people: int = 0
    pairs: int = 0
    inbound: int = 0
    outbox: int = 0
    mailbox_deleted: int = 0


def erase_person(engine: Engine, settings: Settings, email: str, now: datetime) -> EraseReport:
    """Erase one person from the mailbox folders, then the database (module docstring)."""
    with session_scope(engine) as session:
        person = find_person(session, email)
        _check_erasable(session, person)
        ident = Identity.of(person)
    report = EraseReport(people=1)
    report.mailbox_deleted = asyncio.run(delete_from_mailbox(settings, [ident]))
    with session_scope(engine) as session:
        person = find_person(session, email)
        counts = _erase_rows(session, person, [])
        report.pairs, report.inbound, report.outbox = counts["pairs"], counts["inbound"], counts["outbox"]
        detail = {"person_id": person.id, **counts, "mailbox_deleted": report.mailbox_deleted}
        session.add(AuditEvent(at=now, action="erase", detail=json.dumps(detail)))
    compact(engine)
    log.info("person erased", extra={"action": "privacy_erase", "person_id": person.id, "mailbox_deleted": report.mailbox_deleted})
    return report


def months_before(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 - months, 12)
    target_year, target_month = moment.year + year, month + 1
    import calendar

    day = min(moment.day, calendar.monthrange(target_year, target_month)[1])
    return moment.replace(year=target_year, month=target_month, day=day)


def _ended_at(session: Session, pair: Pair) -> datetime | None:
    if pair.closed_at is not None:
        return pair.closed_at
    rows = session.exec(
        select(PairEvent.at).where(PairEvent.pair_id == pair.id, PairEvent.kind == EventKind.STATE_CHANGED.value).order_by(col(PairEvent.id).desc())
    )
    return rows.first()


@dataclass
class PurgeReport:
    dry_run: bool
    people_erased: int = 0
    messages_blanked: int = 0
    mailbox_deleted: int = 0
    person_ids: list[int] = field(default_factory=list)


def _expired_people(session: Session, now: datetime, months: int) -> list[Person]:
    """Participants whose every pair ended more than `months` ago (referents stay: they are staff)."""
    cutoff = months_before(now, months)
    latest: dict[int, datetime] = {}
    keep: set[int] = set()
    for pair in session.exec(select(Pair)):
        members = (pair.mentor_id, pair.mentee_id)
        if pair.state not in ENDED_STATES:
            keep.update(members)  # in an open pair: kept whatever their older pairs say
            continue
        ended = _ended_at(session, pair) or pair.created_at
        for pid in members:
            latest[pid] = max(latest.get(pid, ended), ended)
    ids = [pid for pid, ended in latest.items() if pid not in keep and ended < cutoff]
    people: Iterable[Person] = session.exec(select(Person).where(col(Person.id).in_(ids), Person.erased == False)) if ids else []  # noqa: E712
    return sorted(people, key=lambda p: p.id or 0)


def purge(engine: Engine, settings: Settings, now: datetime, *, dry_run: bool = False) -> PurgeReport:
    """Apply settings.retention: erase people of long-ended pairs, blank and delete old inbound messages."""
    r = settings.retention
    report = PurgeReport(dry_run=dry_run)
    cutoff = now - timedelta(days=r.processed_messages_days)
    with session_scope(engine) as session:
        people = _expired_people(session, now, r.closed_pair_months)
        idents = [Identity.of(p) for p in people]
        kept = or_(col(InboundMessage.text) != "", col(InboundMessage.target_folder) != "")
        old = list(session.exec(select(InboundMessage).where(col(InboundMessage.received_at) < cutoff, kept)))
        keys = {m.dedup_key for m in old}
        report.people_erased, report.messages_blanked = len(people), len(old)
        report.person_ids = [p.id for p in people if p.id is not None]
    if not dry_run:
        report.mailbox_deleted = asyncio.run(_purge_mailbox(settings, idents, keys))
        with session_scope(engine) as session:
            for person in session.exec(select(Person).where(col(Person.id).in_(report.person_ids))) if report.person_ids else []:
                _erase_rows(session, person, [i for i in idents if i.email != person.email])
            for m in session.exec(select(InboundMessage).where(col(InboundMessage.dedup_key).in_(keys))) if keys else []:
                m.text, m.target_folder = "", ""
                session.add(m)
    with session_scope(engine) as session:
        detail = dataclasses.asdict(report)
        session.add(AuditEvent(at=now, action="purge", detail=json.dumps(detail)))
    if not dry_run and (report.people_erased or report.messages_blanked):
        compact(engine)
    log.info("purge done", extra={"action": "privacy_purge", "people": report.people_erased, "messages": report.messages_blanked,
                                  "dry_run": dry_run})  # fmt: skip
    return report


async def _purge_mailbox(settings: Settings, idents: list[Identity], keys: set[str]) -> int:
    return await delete_from_mailbox(settings, idents) + await _delete_by_keys(settings, keys)

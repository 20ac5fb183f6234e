"""The inbox: fetch -> parse -> correlate -> decide -> commit -> move. A reply is never dropped or applied twice.

Order of side effects for one message (UID u in the watched folder):
  1. fetch with BODY.PEEK[] (the message stays unseen and in place);
  2. one transaction: the InboundMessage row (UNIQUE dedup key = Message-ID, else a hash of the
     raw bytes), the pair's events, flags, state and queued emails -- committed together;
  3. then the IMAP MOVE to Processed / Unmatched / Quarantine.
A crash before 2 leaves the message in place: it is read again. A crash between 2 and 3 leaves it
in place too, but its dedup key is known: it is only moved. The folder is scanned whole each time
(processed messages leave it), so a changed UIDVALIDITY loses nothing and repeats nothing: the
dedup keys resync it. A message that fails `max_attempts` times goes to Quarantine and the loop
goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.imap import ImapConfig, ImapMailbox
from mailflow.adapters.tables import InboundMessage, MailboxState, OutboxMessage, Pair, Person
from mailflow.config import Settings
from mailflow.core.mail.authres import sender_verified
from mailflow.core.mail.intent import Vocabulary
from mailflow.core.mail.parse import ParsedMessage, classify_intent, parse_message
from mailflow.core.model import EmailKind, Event, EventKind, FlagKind, FlagReason, MessageKind, RaiseFlag, Role, State
from mailflow.core.tokens import TokenClaims, TokenSigner, extract_token
from mailflow.effects import Outgoing, advance
from mailflow.store import apply_flag_action, event_row, get_pair
from mailflow.subjects import kind_from_subject
from mailflow.vocabulary import load_vocabulary

log = logging.getLogger("mailflow.inbox")
OPEN_STATES = (State.AWAITING_FIRST_CONTACT.value, State.ACTIVE.value)


@dataclass(frozen=True)
class Target:
    """Who a message is about: the pair, the person it should come from, and what it answers."""

    pair_id: int | None
    person_id: int
    replied_kind: EmailKind | None
    authenticated: bool  # a valid signed token (or our Message-ID) tied it, not just the From header


@dataclass(frozen=True)
class Outcome:
    folder: str
    label: str  # processed | unmatched | quarantine | dropped | duplicate


def imap_config(settings: Settings) -> ImapConfig:
    s = settings.imap
    return ImapConfig(
        host=s.host, port=s.port, tls=s.tls, username=s.username,
        password=s.password.get_secret_value() if s.password else "", folder=s.folder, timeout_s=s.timeout_s,
        cafile=str(s.cafile) if s.cafile else None,
    )  # fmt: skip


class InboxProcessor:
    """Applies one raw message to the database (pure of IMAP; the reader moves it afterwards)."""

    def __init__(self, engine: Engine, settings: Settings, vocabulary: Vocabulary | None = None) -> None:
        self.engine, self.settings = engine, settings
        self.vocabulary = vocabulary or load_vocabulary(settings.inbound.vocabulary_file)
        self.signer = TokenSigner(settings.token_secrets())
        self.outgoing = Outgoing(settings.mail.domain, settings.mail.team_address)
        i = settings.imap
        self.folders = {"processed": i.processed_folder, "unmatched": i.unmatched_folder, "quarantine": i.quarantine_folder}

    # ---- correlation ----------------------------------------------------------------------
    def _claims(self, parsed: ParsedMessage) -> list[TokenClaims]:
        out = []
        for address in parsed.recipients:
            token = extract_token(address, self.settings.mail.from_address)
            claims = self.signer.verify(token) if token else None
            if claims is not None:
                out.append(claims)
        return out

    def _target(self, session: Session, parsed: ParsedMessage) -> Target | None:
        for claims in self._claims(parsed):
            row = session.get(OutboxMessage, claims.message_id)
            kind = EmailKind(row.kind) if row is not None and row.person_id == claims.person_id else None
            return Target(claims.pair_id or None, claims.person_id, kind, True)
        ids = list(parsed.references)
        if parsed.bounce and parsed.bounce.original_message_id:
            ids.append(parsed.bounce.original_message_id)
        if ids:
            row = session.exec(select(OutboxMessage).where(col(OutboxMessage.message_id).in_(ids)).order_by(col(OutboxMessage.id).desc())).first()
            if row is not None and row.person_id is not None:
                return Target(row.pair_id, row.person_id, EmailKind(row.kind), True)
        return self._fresh(session, parsed)

    def _fresh(self, session: Session, parsed: ParsedMessage) -> Target | None:
        """A new message (no token, no reference) from a known participant with exactly one open pair."""
        address = parsed.from_addr
        if parsed.kind is MessageKind.BOUNCE and parsed.bounce and len(parsed.bounce.recipients) == 1:
            address = parsed.bounce.recipients[0]
        if not address:
            return None
        person = session.exec(select(Person).where(Person.email == address.lower())).first()
        if person is None or person.id is None or person.role == Role.REFERENT.value:
            return None
        column = Pair.mentor_id if person.role == Role.MENTOR.value else Pair.mentee_id
        pairs = list(session.exec(select(Pair.id).where(column == person.id, col(Pair.state).in_(OPEN_STATES))))
        if len(pairs) != 1:
            return None
        return Target(pairs[0], person.id, None, False)

    # ---- application ------------------------------------------------------------------------
    def _is_loop(self, session: Session, parsed: ParsedMessage) -> bool:
        """Our own message coming back (same Message-ID, or sent from our address)."""
        if parsed.message_id and session.exec(select(OutboxMessage.id).where(OutboxMessage.message_id == parsed.message_id)).first():
            return True
        ours = self.settings.mail.from_address.lower()
        sender = (parsed.from_addr or "").lower()
        local, _, domain = ours.partition("@")
        return sender == ours or (sender.endswith("@" + domain) and sender.startswith(local + "+"))

    def process(self, raw: bytes, now: datetime, *, uid: int | None = None, uidvalidity: int | None = None) -> Outcome:
        parsed = parse_message(raw, max_bytes=self.settings.imap.max_message_bytes)
        key = parsed.message_id or f"sha256:{parsed.raw_sha256}"
        referent_reply: tuple[int, str] | None = None
        with session_scope(self.engine) as session:
            seen = session.exec(select(InboundMessage).where(InboundMessage.dedup_key == key)).first()
            if seen is not None:
                return Outcome(seen.target_folder or self.folders["processed"], "duplicate")
            record = InboundMessage(dedup_key=key, received_at=now, kind=parsed.kind.value, outcome="", uid=uid, uidvalidity=uidvalidity)
            label, referent_reply = self._apply(session, parsed, record, now)
            record.outcome = label
            record.target_folder = self.folders.get(label, self.folders["processed"])
            record.problem = (parsed.problem or "")[:200]
            session.add(record)
        if referent_reply is not None:
            from mailflow.digest import apply_referent_reply

            apply_referent_reply(self.engine, self.settings, referent_reply[0], referent_reply[1], now)
        log.info("inbound applied", extra={"action": "inbound", "kind": parsed.kind.value, "outcome": label, "inbound_id": record.id})
        return Outcome(record.target_folder, label)

    def _apply(self, session: Session, parsed: ParsedMessage, record: InboundMessage, now: datetime) -> tuple[str, tuple[int, str] | None]:
        if parsed.kind is MessageKind.OTHER and parsed.problem:
            return "quarantine", None
        if self._is_loop(session, parsed):
            return "dropped", None
        target = self._target(session, parsed)
        if target is None:
            return "unmatched", None
        person = session.get(Person, target.person_id)
        if person is None:
            return "unmatched", None
        record.person_id = person.id
        if parsed.kind is not MessageKind.BOUNCE and not self._sender_ok(parsed, target, person):
            self._sender_mismatch(session, target, person, now)
            record.pair_id = target.pair_id
            return "unmatched", None
        if person.role == Role.REFERENT.value:
            if parsed.kind is MessageKind.REPLY and target.replied_kind is EmailKind.DIGEST and person.id is not None:
                return "processed", (person.id, parsed.text)
            return "processed", None
        if target.pair_id is None:
            return "unmatched", None
        pair = get_pair(session, self._ref(session, target.pair_id), for_update=True)
        record.pair_id = pair.id
        session.add(record)
        session.flush()  # the events reference the inbound row
        event = self._event(parsed, person, target, now, record)
        if event is None:
            return "unmatched", None
        if event.kind is EventKind.BOUNCE and event.data.get("permanent") == "true":
            person.bounced = True
            session.add(person)
        if event.kind is EventKind.REPLY:
            pair.last_reply_at = now
        advance(session, pair, now, self.settings.policy(), self.outgoing, [event], inbound_id=record.id)
        return "processed", None

    def _sender_ok(self, parsed: ParsedMessage, target: Target, person: Person) -> bool:
        """The sender is the person the token names; without a token, our mail server must vouch for it."""
        if (parsed.from_addr or "").lower() != person.email:
            return False
        authserv = self.settings.inbound.trusted_authserv_id
        if target.authenticated or not authserv:
            return True
        return sender_verified(parsed.auth_results, authserv) is True

    @staticmethod
    def _ref(session: Session, pair_id: int) -> str:
        pair = session.get(Pair, pair_id)
        assert pair is not None
        return pair.ref

    def _event(self, parsed: ParsedMessage, person: Person, target: Target, now: datetime, record: InboundMessage) -> Event | None:
        who = Role(person.role)
        if parsed.kind is MessageKind.BOUNCE:
            bounce = parsed.bounce
            if bounce is None or (person.email not in bounce.recipients and not target.authenticated):
                return None
            return Event(EventKind.BOUNCE, now, who=who, data={"permanent": "true" if bounce.permanent else "false"})
        if parsed.kind is MessageKind.AUTO_REPLY:
            return Event(EventKind.AUTO_REPLY, now, who=who, email_kind=target.replied_kind)
        if parsed.kind is MessageKind.OTHER:
            return None
        replied = target.replied_kind or kind_from_subject(parsed.subject)
        intent = classify_intent(parsed.text, replied_kind=replied, vocabulary=self.vocabulary)
        record.intent = intent.value
        record.text = parsed.text[:20000]
        return Event(EventKind.REPLY, now, who=who, intent=intent, email_kind=target.replied_kind)

    def _sender_mismatch(self, session: Session, target: Target, person: Person, now: datetime) -> None:
        """Someone else wrote with this token: no state change, a `review` flag for a person to read."""
        if target.pair_id is None:
            return
        who = Role(person.role) if person.role != Role.REFERENT.value else None
        flag = RaiseFlag(FlagKind.REVIEW, who, FlagReason.SENDER_MISMATCH.value)
        apply_flag_action(session, target.pair_id, flag, now)
        session.add(event_row(target.pair_id, Event(EventKind.FLAG_RAISED, now, who=who, flag=flag.kind, reason=flag.reason)))
        log.warning("sender does not match the token", extra={"action": "sender_mismatch", "pair_id": target.pair_id})

    def quarantine_unparsed(self, key: str, now: datetime, problem: str, uid: int | None, uidvalidity: int | None) -> Outcome:
        """Record a message set aside without parsing (too large, failing again and again)."""
        with session_scope(self.engine) as session:
            if session.exec(select(InboundMessage.id).where(InboundMessage.dedup_key == key)).first() is None:
                session.add(
                    InboundMessage(
                        dedup_key=key,
                        received_at=now,
                        kind=MessageKind.OTHER.value,
                        outcome="quarantine",
                        target_folder=self.folders["quarantine"],
                        problem=problem,
                        uid=uid,
                        uidvalidity=uidvalidity,
                    )  # fmt: skip
                )
        log.warning("message quarantined", extra={"action": "inbound_quarantine", "problem": problem})
        return Outcome(self.folders["quarantine"], "quarantine")


class InboxReader:
    """Reads the watched folder once: every message in it is applied, then moved."""

    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.processor = InboxProcessor(engine, settings)
        self.seen_uids: set[int] = set()

    async def has_new(self, mailbox: ImapMailbox) -> bool:
        """Mail that arrived while we were busy: its EXISTS came inside another command's answer."""
        return bool(set(await mailbox.uids()) - self.seen_uids)

    def _attempts(self, uidvalidity: int) -> dict[str, int]:
        with Session(self.engine) as session:
            state = session.get(MailboxState, self.settings.imap.folder)
            if state is None or state.uidvalidity != uidvalidity:
                return {}
            return dict(json.loads(state.attempts or "{}"))

    def _save_attempts(self, uidvalidity: int, attempts: dict[str, int]) -> None:
        with session_scope(self.engine) as session:
            state = session.get(MailboxState, self.settings.imap.folder) or MailboxState(folder=self.settings.imap.folder, uidvalidity=uidvalidity)
            if state.uidvalidity != uidvalidity:
                log.info("uidvalidity changed; resync by Message-ID", extra={"action": "imap_resync"})
            state.uidvalidity, state.attempts = uidvalidity, json.dumps(attempts)
            session.add(state)

    async def read_once(self, mailbox: ImapMailbox) -> dict[str, int]:
        counts: dict[str, int] = {}
        folders = self.processor.folders
        await mailbox.ensure_folders([folders["processed"], folders["unmatched"], folders["quarantine"]])
        uidvalidity = await mailbox.select()
        uids = await mailbox.uids()
        self.seen_uids = set(uids)
        if not uids:
            self._save_attempts(uidvalidity, {})
            return counts
        attempts = self._attempts(uidvalidity)
        sizes = await mailbox.sizes(uids)
        limit = self.settings.imap.max_message_bytes
        big = [u for u in uids if sizes.get(u, 0) > limit]
        if big:
            ids = await mailbox.header_message_ids(big)
            for uid in big:
                key = ids.get(uid) or f"oversize:{uidvalidity}:{uid}"
                outcome = self.processor.quarantine_unparsed(key, self.clock(), "too_large", uid, uidvalidity)
                await mailbox.move(uid, outcome.folder)
                counts[outcome.label] = counts.get(outcome.label, 0) + 1
        small = [u for u in uids if u not in set(big)]
        async for fetched in mailbox.fetch(small):
            outcome = self._process_guarded(fetched.raw, fetched.uid, uidvalidity, attempts)
            if outcome is None:
                continue
            await mailbox.move(fetched.uid, outcome.folder)
            attempts.pop(str(fetched.uid), None)
            counts[outcome.label] = counts.get(outcome.label, 0) + 1
        self._save_attempts(uidvalidity, attempts)
        return counts

    def _process_guarded(self, raw: bytes, uid: int, uidvalidity: int, attempts: dict[str, int]) -> Outcome | None:
        try:
            return self.processor.process(raw, self.clock(), uid=uid, uidvalidity=uidvalidity)
        except Exception as exc:  # one bad message must not stop the loop
            failures = attempts.get(str(uid), 0) + 1
            attempts[str(uid)] = failures
            log.warning("inbound failed", extra={"action": "inbound_error", "uid": uid, "attempt": failures, "error": type(exc).__name__})
            if failures < self.settings.imap.max_attempts:
                return None
            import hashlib

            key = f"sha256:{hashlib.sha256(raw).hexdigest()}"
            return self.processor.quarantine_unparsed(key, self.clock(), f"failed:{type(exc).__name__}", uid, uidvalidity)


async def read_inbox_once(engine: Engine, settings: Settings, clock: Callable[[], datetime]) -> dict[str, int]:
    """Connect, read and apply every message in the folder, move each, disconnect."""
    reader = InboxReader(engine, settings, clock)
    async with ImapMailbox(imap_config(settings), poll_interval_s=settings.imap.poll_interval_s) as mailbox:
        counts = await reader.read_once(mailbox)
    _mark_read(engine, clock())
    return counts


def _mark_read(engine: Engine, now: datetime | None = None) -> None:
    from mailflow.health import set_state, wall_now

    set_state(engine, "last_inbox_read", wall_now().isoformat())

"""Apply inbound messages to the database: one transaction per fetched chunk, a failing message fails alone.

One chunk (up to 100 messages of one FETCH):
  1. parse every message (pure, outside the transaction);
  2. one transaction: what the chunk needs is read at once (mailflow.chunk); then each message: its
     InboundMessage row (UNIQUE dedup key), events, flags, state, queued emails;
  3. commit -- the caller moves the messages on IMAP only after this returns.
Failures: the chunk first runs without savepoints (each SAVEPOINT/RELEASE is a round trip per message).
If anything raises, the whole transaction rolls back and the chunk runs again with a SAVEPOINT per
message: a message that raises rolls back its savepoint only, the others commit, it is reported failed
(not moved, retried next read, quarantined after max_attempts by the reader). If the chunk still fails
as a whole (a query before the savepoints, the commit), each message runs in a transaction of its own.
Whatever the path, a Result with an Outcome is committed; one with an error left nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import InboundMessage, Pair, Person
from mailflow.chunk import Chunk, Inbound, take_ids
from mailflow.config import Settings
from mailflow.core.mail.authres import sender_verified
from mailflow.core.mail.intent import Vocabulary
from mailflow.core.mail.parse import ParsedMessage, classify_intent, parse_message
from mailflow.core.model import EmailKind, Event, EventKind, FlagKind, FlagReason, MessageKind, RaiseFlag, Role, State
from mailflow.core.tokens import TokenClaims, TokenSigner, extract_token
from mailflow.effects import Outgoing, advance
from mailflow.store import Deferred, apply_flag_action, event_row
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


@dataclass
class Result:
    """One message of a chunk: its outcome once committed, or the error that rolled it back."""

    outcome: Outcome | None = None
    error: Exception | None = None
    referent_reply: tuple[int, str] | None = None
    inbound_id: int | None = None


class InboxProcessor:
    """Applies raw messages to the database (pure of IMAP; the reader moves them afterwards)."""

    def __init__(self, engine: Engine, settings: Settings, vocabulary: Vocabulary | None = None) -> None:
        self.engine, self.settings = engine, settings
        self.vocabulary = vocabulary or load_vocabulary(settings.inbound.vocabulary_file)
        self.signer = TokenSigner(settings.token_secrets())
        self.outgoing = Outgoing(settings.mail.domain, settings.mail.team_address)
        i = settings.imap
        self.folders = {"processed": i.processed_folder, "unmatched": i.unmatched_folder, "quarantine": i.quarantine_folder}
        self.policy = settings.policy()

    # ---- entry points -----------------------------------------------------------------------
    def process(self, raw: bytes, now: datetime, *, uid: int | None = None, uidvalidity: int | None = None) -> Outcome:
        """One message, committed when this returns; raises what made it fail."""
        (result,) = self.process_chunk([(uid, raw)], now, uidvalidity=uidvalidity)
        if result.error is not None:
            raise result.error
        assert result.outcome is not None
        return result.outcome

    def process_chunk(self, messages: Sequence[tuple[int | None, bytes]], now: datetime, *, uidvalidity: int | None = None) -> list[Result]:
        """Apply messages (uid, raw); one Result each, in order. Every Outcome returned is committed."""
        limit = self.settings.imap.max_message_bytes
        items = [self._inbound(uid, parse_message(raw, max_bytes=limit)) for uid, raw in messages]
        results = self._apply_chunk(items, now, uidvalidity)
        for item, result in zip(items, results, strict=True):
            self._after_commit(item, result, now)
        return results

    def _inbound(self, uid: int | None, parsed: ParsedMessage) -> Inbound:
        return Inbound(uid, parsed, tuple(self._claims(parsed)))

    def _apply_chunk(self, items: Sequence[Inbound], now: datetime, uidvalidity: int | None) -> list[Result]:
        """Fast first: the chunk without savepoints (two round trips less per message). Anything failing rolls
        it all back, and it runs again with a savepoint per message, so only the bad message fails; if the
        chunk still fails as a whole (its reads, its commit), each message runs alone."""
        try:
            return self._apply_all(items, now, uidvalidity, savepoints=False)
        except Exception as exc:
            log.info(
                "inbound chunk rolled back; again with a savepoint per message", extra={"action": "inbound_chunk_retry", "error": type(exc).__name__}
            )
        try:
            return self._apply_all(items, now, uidvalidity, savepoints=True)
        except Exception as exc:
            if len(items) == 1:
                return [Result(error=exc)]
            log.warning("inbound chunk failed; one message at a time", extra={"action": "inbound_chunk_error", "error": type(exc).__name__})
        return [self._apply_chunk([item], now, uidvalidity)[0] for item in items]

    def _apply_all(self, items: Sequence[Inbound], now: datetime, uidvalidity: int | None, *, savepoints: bool) -> list[Result]:
        with session_scope(self.engine) as session:
            chunk = Chunk.read(session, items)
            if not savepoints:
                chunk.deferred, chunk.ids = Deferred(), iter(take_ids(chunk.conn, len(items)))
            results = [self._apply_one(chunk, item, now, uidvalidity, savepoints) for item in items]
            chunk.write()
            return results

    def _apply_one(self, chunk: Chunk, item: Inbound, now: datetime, uidvalidity: int | None, savepoint: bool) -> Result:
        if item.key in chunk.seen:
            return Result(Outcome(chunk.seen[item.key] or self.folders["processed"], "duplicate"))
        if not savepoint:
            record, label, referent_reply = self._write(chunk, item, now, uidvalidity)
        else:
            try:
                with chunk.session.begin_nested():
                    # the SAVEPOINT is emitted when the session next asks for its connection: now, before any
                    # Core statement on chunk.conn (which would otherwise run outside the savepoint)
                    chunk.session.connection()
                    record, label, referent_reply = self._write(chunk, item, now, uidvalidity)
            except Exception as exc:  # one bad message must not stop the others
                chunk.forget()
                return Result(error=exc)
        chunk.seen[item.key] = record["target_folder"]
        return Result(Outcome(record["target_folder"], label), referent_reply=referent_reply, inbound_id=record["id"])

    def _write(self, chunk: Chunk, item: Inbound, now: datetime, uidvalidity: int | None) -> tuple[dict[str, Any], str, tuple[int, str] | None]:
        record = self._record(item, now, uidvalidity)
        label, referent_reply = self._apply(chunk, item, record, now)
        record["outcome"], record["target_folder"] = label, self.folders.get(label, self.folders["processed"])
        if "id" not in record:
            chunk.insert(record)
        return record, label, referent_reply

    def _after_commit(self, item: Inbound, result: Result, now: datetime) -> None:
        if result.error is not None or result.outcome is None:
            return
        if result.referent_reply is not None:
            from mailflow.digest import apply_referent_reply

            try:
                apply_referent_reply(self.engine, self.settings, *result.referent_reply, now)
            except Exception as exc:  # as before chunks: the message is not moved and counts a failure
                result.error = exc
                return
        if result.outcome.label != "duplicate":
            extra = {"action": "inbound", "kind": item.parsed.kind.value, "outcome": result.outcome.label, "inbound_id": result.inbound_id}
            log.info("inbound applied", extra=extra)

    def _record(self, item: Inbound, now: datetime, uidvalidity: int | None) -> dict[str, Any]:
        """The InboundMessage row, as column values; inserted before the events that name it."""
        parsed = item.parsed
        return {
            "dedup_key": item.key, "received_at": now, "kind": parsed.kind.value, "outcome": "", "target_folder": "",
            "pair_id": None, "person_id": None, "intent": None, "text": "", "problem": (parsed.problem or "")[:200],
            "uid": item.uid, "uidvalidity": uidvalidity,
        }  # fmt: skip

    # ---- correlation ----------------------------------------------------------------------
    def _claims(self, parsed: ParsedMessage) -> list[TokenClaims]:
        out = []
        for address in parsed.recipients:
            token = extract_token(address, self.settings.mail.from_address)
            claims = self.signer.verify(token) if token else None
            if claims is not None:
                out.append(claims)
        return out

    def _target(self, chunk: Chunk, item: Inbound) -> Target | None:
        parsed = item.parsed
        for claims in item.claims:
            row = chunk.outbox_by_id.get(claims.message_id)
            kind = EmailKind(row.kind) if row is not None and row.person_id == claims.person_id else None
            return Target(claims.pair_id or None, claims.person_id, kind, True)
        ids = list(parsed.references)
        if parsed.bounce and parsed.bounce.original_message_id:
            ids.append(parsed.bounce.original_message_id)
        rows = [chunk.outbox_by_message_id[i] for i in ids if i in chunk.outbox_by_message_id]
        if rows:
            row = max(rows, key=lambda r: r.id)  # the latest email it names
            if row.person_id is not None:
                return Target(row.pair_id, row.person_id, EmailKind(row.kind), True)
        return self._fresh(chunk.session, parsed)

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
    def _is_loop(self, chunk: Chunk, parsed: ParsedMessage) -> bool:
        """Our own message coming back (same Message-ID, or sent from our address)."""
        if parsed.message_id and parsed.message_id in chunk.outbox_by_message_id:
            return True
        ours = self.settings.mail.from_address.lower()
        sender = (parsed.from_addr or "").lower()
        local, _, domain = ours.partition("@")
        return sender == ours or (sender.endswith("@" + domain) and sender.startswith(local + "+"))

    def _apply(self, chunk: Chunk, item: Inbound, record: dict[str, Any], now: datetime) -> tuple[str, tuple[int, str] | None]:
        parsed = item.parsed
        if parsed.kind is MessageKind.OTHER and parsed.problem:
            return "quarantine", None
        if self._is_loop(chunk, parsed):
            return "dropped", None
        target = self._target(chunk, item)
        if target is None:
            return "unmatched", None
        session = chunk.session
        person = chunk.person(target.person_id)
        if person is None:
            return "unmatched", None
        record["person_id"] = person.id
        if parsed.kind is not MessageKind.BOUNCE and not self._sender_ok(parsed, target, person):
            self._sender_mismatch(chunk, target, person, now)
            record["pair_id"] = target.pair_id
            return "unmatched", None
        if person.role == Role.REFERENT.value:
            if parsed.kind is MessageKind.REPLY and target.replied_kind is EmailKind.DIGEST and person.id is not None:
                return "processed", (person.id, parsed.text)
            return "processed", None
        if target.pair_id is None:
            return "unmatched", None
        pair = chunk.pair(target.pair_id)
        record["pair_id"] = pair.id
        event = self._event(parsed, person, target, now, record)
        if event is None:
            return "unmatched", None
        record["outcome"], record["target_folder"] = "processed", self.folders["processed"]
        inbound_id = chunk.insert(record)  # the events reference the inbound row
        if event.kind is EventKind.BOUNCE and event.data.get("permanent") == "true":
            person.bounced = True
            session.add(person)
        assert pair.id is not None
        touched = {"last_reply_at": now} if event.kind is EventKind.REPLY else {}
        advance(
            session,
            pair,
            now,
            self.policy,
            self.outgoing,
            [event],
            inbound_id,
            log=chunk.log(pair.id),
            people=chunk.people(pair),
            pair_values=touched,
            deferred=chunk.deferred,
        )
        return "processed", None

    def _sender_ok(self, parsed: ParsedMessage, target: Target, person: Person) -> bool:
        """The sender is the person the token names; without a token, our mail server must vouch for it."""
        if (parsed.from_addr or "").lower() != person.email:
            return False
        authserv = self.settings.inbound.trusted_authserv_id
        if target.authenticated or not authserv:
            return True
        return sender_verified(parsed.auth_results, authserv) is True

    def _event(self, parsed: ParsedMessage, person: Person, target: Target, now: datetime, record: dict[str, Any]) -> Event | None:
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
        record["intent"] = intent.value
        record["text"] = parsed.text[:20000]
        return Event(EventKind.REPLY, now, who=who, intent=intent, email_kind=target.replied_kind)

    def _sender_mismatch(self, chunk: Chunk, target: Target, person: Person, now: datetime) -> None:
        """Someone else wrote with this token: no state change, a `review` flag for a person to read."""
        if target.pair_id is None:
            return
        who = Role(person.role) if person.role != Role.REFERENT.value else None
        flag = RaiseFlag(FlagKind.REVIEW, who, FlagReason.SENDER_MISMATCH.value)
        apply_flag_action(chunk.session, target.pair_id, flag, now)
        chunk.session.add(event_row(target.pair_id, Event(EventKind.FLAG_RAISED, now, who=who, flag=flag.kind, reason=flag.reason)))
        chunk.logs.pop(target.pair_id, None)  # its cached log lacks this event: read it again when needed
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

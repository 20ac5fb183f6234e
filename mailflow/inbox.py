"""The inbox: fetch -> parse -> correlate -> decide -> commit -> move. A reply is never dropped or applied twice.

Order of side effects for one FETCH chunk (up to 100 UIDs in the watched folder):
  1. fetch with BODY.PEEK[] (the messages stay unseen and in place);
  2. one transaction (mailflow.inbound), a SAVEPOINT per message: its InboundMessage row (UNIQUE dedup
     key = Message-ID, else a hash of the raw bytes), the pair's events, flags, state and queued emails;
     a message that fails rolls back alone -- committed once for the chunk;
  3. then the IMAP moves, one UID MOVE per target folder (Processed / Unmatched / Quarantine), of the
     messages whose effects were committed; a failed message stays in place.
A crash before 2 leaves the messages in place: they are read again. A crash between 2 and 3 leaves
them in place too, but their dedup keys are known: they are only moved. The folder is scanned whole
each time (processed messages leave it), so a changed UIDVALIDITY loses nothing and repeats nothing:
the dedup keys resync it. A message that fails `max_attempts` times goes to Quarantine and the loop
goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from mailflow.adapters.db import session_scope
from mailflow.adapters.imap import FetchedMessage, ImapConfig, ImapMailbox
from mailflow.adapters.tables import MailboxState
from mailflow.config import Settings
from mailflow.inbound import InboxProcessor, Outcome, Result, Target

__all__ = ["InboxProcessor", "InboxReader", "Outcome", "Target", "imap_config", "read_inbox_once"]

log = logging.getLogger("mailflow.inbox")


def imap_config(settings: Settings) -> ImapConfig:
    s = settings.imap
    return ImapConfig(
        host=s.host, port=s.port, tls=s.tls, username=s.username,
        password=s.password.get_secret_value() if s.password else "", folder=s.folder, timeout_s=s.timeout_s,
        cafile=str(s.cafile) if s.cafile else None,
    )  # fmt: skip


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
            moves: dict[str, list[int]] = {}
            for uid in big:
                key = ids.get(uid) or f"oversize:{uidvalidity}:{uid}"
                outcome = self.processor.quarantine_unparsed(key, self.clock(), "too_large", uid, uidvalidity)
                moves.setdefault(outcome.folder, []).append(uid)
                counts[outcome.label] = counts.get(outcome.label, 0) + 1
            await _move(mailbox, moves)
        small = [u for u in uids if u not in set(big)]
        async for chunk in mailbox.fetch_chunks(small):
            results = self.processor.process_chunk([(f.uid, f.raw) for f in chunk], self.clock(), uidvalidity=uidvalidity)
            moves = {}
            for fetched, result in zip(chunk, results, strict=True):
                settled = self._settled(fetched, result, uidvalidity, attempts)
                if settled is not None:
                    moves.setdefault(settled.folder, []).append(fetched.uid)
                    attempts.pop(str(fetched.uid), None)
                    counts[settled.label] = counts.get(settled.label, 0) + 1
            await _move(mailbox, moves)  # only now: every outcome above is committed
        self._save_attempts(uidvalidity, attempts)
        return counts

    def _settled(self, fetched: FetchedMessage, result: Result, uidvalidity: int, attempts: dict[str, int]) -> Outcome | None:
        """The committed outcome, or after a failure None (left in place) -- Quarantine after max_attempts."""
        if result.error is None:
            return result.outcome
        uid = fetched.uid
        failures = attempts.get(str(uid), 0) + 1
        attempts[str(uid)] = failures
        log.warning("inbound failed", extra={"action": "inbound_error", "uid": uid, "attempt": failures, "error": type(result.error).__name__})
        if failures < self.settings.imap.max_attempts:
            return None
        key = f"sha256:{hashlib.sha256(fetched.raw).hexdigest()}"
        return self.processor.quarantine_unparsed(key, self.clock(), f"failed:{type(result.error).__name__}", uid, uidvalidity)


async def _move(mailbox: ImapMailbox, moves: dict[str, list[int]]) -> None:
    for folder, uids in moves.items():
        await mailbox.move_many(uids, folder)


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

"""The outbox: claim due rows -> render -> send over SMTP -> record. Never lost, never a second Message-ID.

Order of side effects for one row:
  pending --claim (commit: state=sending, lease)--> SMTP DATA --250--> sent (commit)
The `sent` commit is grouped with the other connections' rows accepted in the same loop turn
(SentMarks), and a connection waits for it before its next DATA.
The Message-ID is fixed when the row is queued, so a row found `sending` after a crash (its lease
expired, or on SQLite: any `sending` row at start, since only one instance runs) is sent again
with the SAME Message-ID: receivers deduplicate on it. Guarantee: never lost; after a crash at
most one resend per SMTP connection (the message accepted but not yet recorded), with the same
Message-ID; never a new Message-ID for the same email.
Failures: 4xx/timeout/disconnect -> pending again with exponential backoff (retry_first_s,
doubling, capped at retry_max_s), `failed` past retry_horizon_h; 550/551/553 -> `failed` at once,
the person gets a bounce (call flag, mail held); relay refusals (535, 554 for all, TLS policy) ->
the row goes back to pending untouched and sending pauses (RelayRejectedError to the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, or_, update
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.smtp import SmtpConfig, SmtpSender
from mailflow.adapters.tables import OutboxMessage, Pair, Person
from mailflow.compose import Batch, Composer, load_batch, outbox_rows_by_id
from mailflow.config import Settings
from mailflow.core.calendar import in_window
from mailflow.core.model import Event, EventKind, Role
from mailflow.effects import Outgoing, advance
from mailflow.errors import DeliveryError, PermanentDeliveryError, RelayRejectedError, TransientDeliveryError
from mailflow.store import get_pair

log = logging.getLogger("mailflow.outbox")
PENDING, SENDING, SENT, FAILED, HELD = "pending", "sending", "sent", "failed", "held"


@dataclass
class SendStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0
    paused: str | None = None  # the operator error when the relay refuses us
    message_ids: list[str] = field(default_factory=list)


def smtp_config(settings: Settings) -> SmtpConfig:
    s = settings.smtp
    return SmtpConfig(
        host=s.host, port=s.port, tls=s.tls, username=s.username,
        password=s.password.get_secret_value() if s.password else None, timeout_s=s.timeout_s,
        cafile=str(s.cafile) if s.cafile else None,
    )  # fmt: skip


def backoff_s(attempts: int, first_s: float, max_s: float) -> float:
    return min(max_s, first_s * (2 ** max(0, attempts - 1)))


def claim_limit(rate_per_minute: int, lease_s: float) -> int:
    """How many rows one claim may lease: what the rate limit sends in half the lease.

    Every row of a claim is leased when it is claimed; a row still queued when its lease expires
    could be claimed again by another instance and sent twice. At the default 600/min and a 120 s
    lease that is 600 rows; a relay limited to 60/min gets claims of 60.
    """
    return max(1, int(rate_per_minute / 60 * lease_s / 2))


def release_stale(engine: Engine, now: datetime, *, all_sending: bool = False) -> int:
    """Make crashed sends claimable again (same row, same Message-ID)."""
    with session_scope(engine) as session:
        cond = OutboxMessage.state == SENDING
        if not all_sending:
            cond = cond & (col(OutboxMessage.lease_until) < now)
        result = session.execute(update(OutboxMessage).where(cond).values(state=PENDING, lease_owner=None, lease_until=None))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _dead_here(owner: str) -> bool:
    """An owner `host:pid` on this host whose process is gone (its lease need not be waited out)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname()[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release_dead_owners(engine: Engine) -> int:
    """Rows claimed by an instance of this host that died (SIGKILL) go back to pending at once."""
    with Session(engine) as session:
        owners = set(session.exec(select(OutboxMessage.lease_owner).where(OutboxMessage.state == SENDING).distinct()))
    dead = [o for o in owners if o and _dead_here(o)]
    if not dead:
        return 0
    with session_scope(engine) as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.state == SENDING, col(OutboxMessage.lease_owner).in_(dead))
            .values(state=PENDING, lease_owner=None, lease_until=None)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim(engine: Engine, now: datetime, owner: str, limit: int, lease_s: float) -> list[int]:
    """Take up to `limit` due rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer)."""
    with session_scope(engine) as session:
        due = or_(
            (col(OutboxMessage.state) == PENDING) & (col(OutboxMessage.not_before) <= now),
            (col(OutboxMessage.state) == SENDING) & (col(OutboxMessage.lease_until) < now),
        )
        query = select(OutboxMessage.id).where(due).order_by(col(OutboxMessage.not_before), col(OutboxMessage.id)).limit(limit)
        ids = [i for i in session.exec(query.with_for_update(skip_locked=True)) if i is not None]
        for start in range(0, len(ids), 500):
            session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.id).in_(ids[start : start + 500]))
                .values(state=SENDING, lease_owner=owner, lease_until=now + timedelta(seconds=lease_s), attempts=OutboxMessage.attempts + 1)
            )
        return ids


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_MARK = update(_OUTBOX).where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.lease_owner == bindparam("owner"))


_MARK_SENT = _MARK.values(state=SENT, sent_at=bindparam("sent_at"), last_error="", lease_owner=None, lease_until=None)


def _mark(engine: Engine, row_id: int, owner: str, **values: object) -> None:
    """One row's outcome, in its own transaction."""
    with engine.begin() as conn:
        conn.execute(_MARK.values(lease_owner=None, lease_until=None, **values), {"row_id": row_id, "owner": owner})


class SentMarks:
    """Group commit of `sent`: the rows accepted since the last commit, in one transaction.

    A worker records its row after SMTP's 250 and flushes when its next message's envelope was
    accepted, just before DATA (a no-op when another worker's flush already took its row). So each
    connection has at most one accepted-but-unrecorded message at any time -- exactly as with a
    commit per row -- and a crash resends at most one message per connection, with its
    Message-ID; but the rows recorded during MAIL and RCPT's round trips share the commit.
    """

    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine, self.owner = engine, owner
        self._rows: list[dict[str, object]] = []

    def record(self, row_id: int, sent_at: datetime) -> None:
        self._rows.append({"row_id": row_id, "owner": self.owner, "sent_at": sent_at})

    def flush(self) -> None:
        """Commit every recorded row (synchronously: nothing else runs in between)."""
        if self._rows:
            rows, self._rows = self._rows, []
            with self.engine.begin() as conn:
                conn.execute(_MARK_SENT, rows)


def _bounce(engine: Engine, row: Any, settings: Settings, now: datetime) -> None:
    """A permanent refusal of a participant's address: hold their mail and flag a call (reason bounce)."""
    with session_scope(engine) as session:
        if row.person_id is None:
            return
        person = session.get(Person, row.person_id)
        if person is None or person.role == Role.REFERENT.value:
            return
        person.bounced = True
        session.add(person)
        if row.pair_id is None:
            return
        pair = session.get(Pair, row.pair_id)
        assert pair is not None
        pair = get_pair(session, pair.ref, for_update=True)
        event = Event(EventKind.BOUNCE, now, who=Role(person.role), data={"permanent": "true", "source": "smtp"})
        advance(session, pair, now, settings.policy(), Outgoing(settings.mail.domain, settings.mail.team_address), [event])


class OutboxSender:
    """Drains due outbox rows through `max_connections` reused SMTP connections, rate-limited."""

    def __init__(self, engine: Engine, settings: Settings, owner: str, clock: Callable[[], datetime],
                 sender_factory: Callable[[], SmtpSender] | None = None, lease_scale: float = 1.0) -> None:  # fmt: skip
        self.engine, self.settings, self.owner, self.clock = engine, settings, owner, clock
        self.composer = Composer(settings)
        self.sender_factory = sender_factory or (lambda: SmtpSender(smtp_config(settings)))
        self._interval_s = 60.0 / settings.smtp.rate_per_minute
        self._next_slot = 0.0
        # the lease outlives any send (timeouts included); in clock seconds when the clock runs fast
        lease_wall_s = max(60.0, settings.smtp.timeout_s * 4)
        self._lease_s = lease_wall_s * lease_scale
        self._claim_max = claim_limit(settings.smtp.rate_per_minute, lease_wall_s)

    async def _pace(self) -> None:
        now = time.monotonic()
        wait = self._next_slot - now
        self._next_slot = max(now, self._next_slot) + self._interval_s
        if wait > 0:
            await asyncio.sleep(wait)

    async def run_once(self, limit: int = 1000) -> SendStats:
        """Send everything due now (inside the sending window); returns what happened."""
        stats = SendStats()
        now = self.clock()
        if not in_window(now, self.settings.policy()):
            return stats
        ids = claim(self.engine, now, self.owner, min(limit, self._claim_max), self._lease_s)
        if not ids:
            return stats
        with Session(self.engine) as session:  # the claim's context in a few queries, not a few per row
            rows = [r for r in outbox_rows_by_id(session, ids) if r.lease_owner == self.owner]
            batch = load_batch(session, rows)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for row in rows:
            queue.put_nowait(row)
        marks = SentMarks(self.engine, self.owner)
        try:  # one worker failing stops the others (each releases the row it holds)
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.settings.smtp.max_connections, len(rows))):
                    group.create_task(self._worker(queue, batch, stats, marks))
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, Exception):  # an error, not the process dying: what was accepted stays recorded
                with contextlib.suppress(Exception):
                    marks.flush()
            raise first  # noqa: B904 (the first failure, as a plain exception for the callers)
        self._release_unsent(queue)
        if stats.paused or stats.sent:
            from mailflow.health import set_state

            set_state(self.engine, "smtp_paused", stats.paused or "")
        return stats

    def _release_unsent(self, queue: asyncio.Queue[Any]) -> None:
        """Rows of the claim never tried (sending paused): pending again, this attempt not counted; one transaction."""
        ids = []
        while not queue.empty():
            ids.append(queue.get_nowait().id)
        if ids:
            with self.engine.begin() as conn:
                release = _OUTBOX.update().where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.lease_owner == self.owner)
                conn.execute(release.values(state=PENDING, attempts=_OUTBOX.c.attempts - 1, lease_owner=None, lease_until=None))

    async def _worker(self, queue: asyncio.Queue[Any], batch: Batch, stats: SendStats, marks: SentMarks) -> None:
        async with self.sender_factory() as smtp:
            while not queue.empty() and stats.paused is None:
                row = queue.get_nowait()
                try:
                    await self._send_one(smtp, row, batch, stats, marks)
                except asyncio.CancelledError:
                    _mark(self.engine, row.id, self.owner, state=PENDING)  # released, same Message-ID next time
                    raise
            marks.flush()

    async def _send_one(self, smtp: SmtpSender, row: Any, batch: Batch, stats: SendStats, marks: SentMarks) -> None:
        """Compose and send one row; its `sent` is recorded in `marks` (committed before this connection's next send)."""
        row_id = row.id
        composed = self.composer.compose_from(batch, row)
        if composed is None:  # the recipient's address bounced: hold until corrected
            _mark(self.engine, row_id, self.owner, state=HELD)
            stats.held += 1
            return
        await self._pace()
        try:
            # the previous rows are committed before DATA: never two accepted-but-unrecorded messages on
            # one connection; MAIL and RCPT's round trips let the other connections' rows join that commit
            await smtp.send(composed.raw, mail_from=composed.mail_from, rcpt_to=composed.rcpt_to, before_data=marks.flush)
        except RelayRejectedError as exc:
            _mark(self.engine, row_id, self.owner, state=PENDING, attempts=row.attempts - 1)
            stats.paused = str(exc)
            return
        except PermanentDeliveryError as exc:
            _mark(self.engine, row_id, self.owner, state=FAILED, last_error=str(exc)[:500])
            if row.person_id is not None:
                batch.bounced.add(row.person_id)  # the rest of this claim holds their mail too
            _bounce(self.engine, row, self.settings, self.clock())
            stats.failed += 1
            log.warning("send failed permanently", extra={"action": "outbox_failed", "outbox_id": row_id, "code": exc.code})
            return
        except (TransientDeliveryError, DeliveryError) as exc:
            self._retry_later(row, exc, stats)
            return
        stats.sent += 1
        stats.message_ids.append(row.message_id)
        log.info("sent", extra={"action": "outbox_sent", "outbox_id": row_id, "kind": row.kind})
        marks.record(row_id, self.clock())

    def _retry_later(self, row: Any, exc: DeliveryError, stats: SendStats) -> None:
        s = self.settings.smtp
        now = self.clock()
        assert row.id is not None
        if now - row.created_at > timedelta(hours=s.retry_horizon_h):
            _mark(self.engine, row.id, self.owner, state=FAILED, last_error=str(exc)[:500])
            stats.failed += 1
            return
        delay = backoff_s(row.attempts, s.retry_first_s, s.retry_max_s)
        _mark(self.engine, row.id, self.owner, state=PENDING, not_before=now + timedelta(seconds=delay), last_error=str(exc)[:500])
        stats.retried += 1
        log.info("send deferred", extra={"action": "outbox_retry", "outbox_id": row.id, "code": exc.code, "delay_s": delay})


def next_pending_at(engine: Engine) -> datetime | None:
    """When the earliest pending email becomes due (the sender sleeps until then)."""
    with Session(engine) as session:
        query = select(OutboxMessage.not_before).where(OutboxMessage.state == PENDING).order_by(col(OutboxMessage.not_before)).limit(1)
        first = session.exec(query).first()
        lease = session.exec(
            select(OutboxMessage.lease_until).where(OutboxMessage.state == SENDING).order_by(col(OutboxMessage.lease_until)).limit(1)
        ).first()
        times = [t for t in (first, lease) if t is not None]
        return min(times) if times else None


def outbox_rows(session: Session, state: str | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(col(OutboxMessage.id))
    if state:
        query = query.where(OutboxMessage.state == state)
    return list(session.exec(query))


def retry_row(engine: Engine, row_id: int, now: datetime) -> OutboxMessage:
    from mailflow.errors import NotFoundError

    with session_scope(engine) as session:
        row = session.get(OutboxMessage, row_id)
        if row is None:
            raise NotFoundError(f"no outbox message {row_id} (see `mailflow outbox list`)")
        if row.state == SENT:
            raise NotFoundError(f"outbox message {row_id} was already sent; it is not sent twice")
        row.state, row.not_before, row.attempts, row.created_at, row.last_error = PENDING, now, 0, now, ""
        session.add(row)
        return row

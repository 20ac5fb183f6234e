"""`mailflow run`: one asyncio task group of loops -- IMAP reader, lifecycle pass + digests, outbox sender.

- The reader waits on IMAP IDLE (polling when the server has none) and wakes the lifecycle.
- The lifecycle pass sleeps until the next due time, the next digest, or a wake-up; it wakes the sender.
- The sender sleeps until the next pending email is due or it is woken.
- On PostgreSQL every instance sends (rows claimed FOR UPDATE SKIP LOCKED, with a lease); only the
  leader (a session advisory lock) reads the inbox and runs the lifecycle and digests.
- SIGTERM/SIGINT: stop taking work; in-flight sends finish or are released; exit 0 within 10 s.
- Expected outages (mail server, database) are retried with backoff, one log line per outage;
  any other exception in a loop stops the process with a non-zero exit (a supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from mailflow.adapters.imap import ImapMailbox
from mailflow.clock import Clock
from mailflow.config import Settings
from mailflow.core.calendar import in_window, next_window_open
from mailflow.errors import DeliveryError, MailboxError, MailflowError
from mailflow.health import heartbeat
from mailflow.inbox import InboxReader, imap_config
from mailflow.locks import Leadership, instance_lock
from mailflow.outbox import OutboxSender, next_pending_at, release_dead_owners, release_stale
from mailflow.scheduler import next_due, run_pass
from mailflow.service import instance_id, outgoing

log = logging.getLogger("mailflow.daemon")
EXPECTED = (MailboxError, DeliveryError, OperationalError, DBAPIError, OSError, TimeoutError)
MAX_SLEEP_S = 300.0
STOP_GRACE_S = 8.0


class Backoff:
    """Exponential retry delays, and one log line per outage (not one per attempt)."""

    def __init__(self, name: str, first_s: float = 1.0, max_s: float = 60.0) -> None:
        self.name, self.first_s, self.max_s = name, first_s, max_s
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        if self.failures == 1:
            log.error("%s unavailable; retrying", self.name, extra={"action": f"{self.name}_down", "error": type(exc).__name__})
        return min(self.max_s, self.first_s * 2 ** (self.failures - 1))

    def ok(self) -> None:
        if self.failures:
            log.info("%s back", self.name, extra={"action": f"{self.name}_up", "failures": self.failures})
        self.failures = 0


class Daemon:
    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.owner = instance_id()
        self.stopping = asyncio.Event()
        self.lifecycle_wake = asyncio.Event()
        self.outbox_wake = asyncio.Event()
        self.leadership = Leadership(engine)
        self.sender = OutboxSender(engine, settings, self.owner, clock.now, lease_scale=clock.speed)

    # ---- helpers ----------------------------------------------------------------------------
    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep until `seconds` pass, `wake` is set, or the daemon stops."""
        waiters = [asyncio.ensure_future(self.stopping.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if wake is not None:
            wake.clear()

    async def _guarded(self, backoff: Backoff, step: Callable[[], Awaitable[float]]) -> None:
        """Run step() forever; it returns how long to sleep. Expected outages back off; others crash."""
        while not self.stopping.is_set():
            try:
                delay = await step()
                backoff.ok()
            except EXPECTED as exc:
                delay = backoff.failed(exc)
            except MailflowError as exc:
                delay = backoff.failed(exc)
            await self._sleep(delay, None if backoff.failures else getattr(step, "wake", None))

    def _until(self, when: datetime | None) -> float:
        """Real seconds to sleep until a (clock) instant."""
        if when is None:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (when - self.clock.now()).total_seconds() / self.clock.speed))

    # ---- loops ------------------------------------------------------------------------------
    async def leader_loop(self) -> None:
        backoff = Backoff("database", 1, 30)
        while not self.stopping.is_set():
            try:
                was = self.leadership.held
                held = await asyncio.to_thread(self.leadership.try_acquire)
                heartbeat(self.engine, self.owner, held)
                backoff.ok()
                if held and not was:
                    log.info("leader role taken", extra={"action": "leader_acquired"})
                    self.lifecycle_wake.set()
            except EXPECTED as exc:
                self.leadership.drop()
                await self._sleep(backoff.failed(exc))
                continue
            await self._sleep(5.0)

    async def inbox_loop(self) -> None:
        backoff = Backoff("imap", 1, 60)
        reader = InboxReader(self.engine, self.settings, self.clock.now)
        mailbox: ImapMailbox | None = None
        while not self.stopping.is_set():
            if not self.leadership.held:
                await self._sleep(2.0)
                continue
            try:
                if mailbox is None or not mailbox.connected:
                    mailbox = ImapMailbox(imap_config(self.settings), poll_interval_s=self.settings.imap.poll_interval_s)
                    await mailbox.connect()
                counts = await reader.read_once(mailbox)
                await asyncio.to_thread(_mark_read, self.engine, self.clock.now())
                backoff.ok()
                if counts:
                    self.lifecycle_wake.set()
                    self.outbox_wake.set()
                if await reader.has_new(mailbox):
                    continue
                await self._wait_mail(mailbox)
            except EXPECTED as exc:
                if mailbox is not None:
                    await mailbox.close()
                mailbox = None
                await self._sleep(backoff.failed(exc))
        if mailbox is not None:
            await mailbox.close()

    async def _wait_mail(self, mailbox: ImapMailbox) -> None:
        waiter = asyncio.ensure_future(mailbox.wait_for_change(self.settings.imap.idle_timeout_s))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not waiter.done():
                waiter.cancel()
                await mailbox.close()
            else:
                waiter.result()  # raise its error, if any

    async def lifecycle_loop(self) -> None:
        async def step() -> float:
            if not self.leadership.held:
                return 2.0
            now = self.clock.now()
            stats = await asyncio.to_thread(run_pass, self.engine, now, self.settings.policy(), outgoing(self.settings))
            queued = 0
            if self.settings.digest.enabled:
                from mailflow.digest import queue_digests

                queued = await asyncio.to_thread(queue_digests, self.engine, self.settings, now)
            if stats.pairs or queued:
                self.outbox_wake.set()
            due = await asyncio.to_thread(next_due, self.engine)
            return min(self._until(due), self._until(self._next_digest(now)))

        step.wake = self.lifecycle_wake  # type: ignore[attr-defined]
        await self._guarded(Backoff("database", 1, 60), step)

    def _next_digest(self, now: datetime) -> datetime | None:
        if not self.settings.digest.enabled:
            return None
        tz = self.settings.tz
        local = now.astimezone(tz)
        for days in range(0, 8):
            day = (local + timedelta(days=days)).date()
            at = datetime.combine(day, self.settings.digest.time, tzinfo=tz)
            if at > now and in_window(at, self.settings.policy()):
                return at
        return None

    async def outbox_loop(self) -> None:
        async def step() -> float:
            now = self.clock.now()
            policy = self.settings.policy()
            if not in_window(now, policy):
                return self._until(next_window_open(now, policy))
            await asyncio.to_thread(release_dead_owners, self.engine)
            stats = await self.sender.run_once()
            if stats.paused:
                log.error("sending paused: %s", stats.paused, extra={"action": "smtp_paused"})
                return 300.0
            if stats.retried or stats.sent:
                return 0.0 if stats.sent else self._until(await asyncio.to_thread(next_pending_at, self.engine))
            return self._until(await asyncio.to_thread(next_pending_at, self.engine))

        step.wake = self.outbox_wake  # type: ignore[attr-defined]
        await self._guarded(Backoff("smtp", 1, 60), step)

    # ---- lifecycle of the daemon --------------------------------------------------------------
    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra={"action": "daemon_stopping"})
            self.stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.engine.dialect.name == "sqlite":
            release_stale(self.engine, self.clock.now(), all_sending=True)  # we are the only instance
        else:
            release_dead_owners(self.engine)  # a SIGKILLed instance of this host: no need to wait for its leases
        log.info("daemon started", extra={"action": "daemon_started", "instance": self.owner})
        loops = [self.leader_loop(), self.lifecycle_loop(), self.outbox_loop()]
        if self.settings.imap.enabled:
            loops.append(self.inbox_loop())
        tasks: list[asyncio.Task[None]] = []
        watcher = asyncio.ensure_future(self._stop_watch(tasks))
        try:
            async with asyncio.TaskGroup() as group:
                tasks.extend(group.create_task(coro) for coro in loops)
        except BaseExceptionGroup as excs:
            for exc in excs.exceptions:
                log.error("a loop crashed", exc_info=exc, extra={"action": "daemon_crashed"})
            return 2
        finally:
            watcher.cancel()
            self.leadership.release()
        log.info("daemon stopped", extra={"action": "daemon_stopped"})
        return 0

    async def _stop_watch(self, tasks: list[asyncio.Task[None]]) -> None:
        """After a stop request, cancel the loops that have not ended within the grace period."""
        await self.stopping.wait()
        await asyncio.sleep(STOP_GRACE_S)
        for task in tasks:
            task.cancel()


def _mark_read(engine: Engine, now: datetime) -> None:
    from mailflow.inbox import _mark_read as mark

    mark(engine, now)


def run_daemon(engine: Engine, settings: Settings, clock: Clock) -> int:
    with instance_lock(engine, settings):
        return asyncio.run(Daemon(engine, settings, clock).run())

"""Each measurement: mailflow's own code path, and where the issue asks for it the raw I/O ceiling in the same run.

Every function repeats its measurement `repeat` times, restoring the data in between (outside the
timed region), and returns a `Figure` (median, min, max). Ratios are taken per repetition (mailflow
and the raw ceiling measured back to back, so both see the same machine load) and summarised the
same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any

import aiosmtplib
from aioimaplib import aioimaplib
from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session

from benchmarks.generate import Programme, Snapshot, queue_pending, replies, reset_pending
from mailflow.adapters.tables import OutboxMessage, PairEvent
from mailflow.compose import Composer
from mailflow.config import Settings
from mailflow.effects import Outgoing
from mailflow.scheduler import run_pass

SECRET = "bench-secret-0123456789abcdef"
FROM = "mentorat@example.org"


@dataclass
class Figure:
    name: str
    db: str
    values: list[float]
    unit: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def line(self) -> str:
        v = self.values
        return (f"{self.db:<10} {self.name:<24} median {self.median:10.3f} {self.unit:<6} "
                f"(min {min(v):.3f}, max {max(v):.3f}; {len(v)} runs){'  ' + self.note if self.note else ''}")  # fmt: skip


@contextlib.contextmanager
def _clean_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("MAILFLOW_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def bench_settings(db_url: str, *, smtp_port: int = 25, connections: int = 4, imap: tuple[str, int, str, str] | None = None) -> Settings:
    """The benchmark's settings: defaults, no rate limit to speak of, the sink and Dovecot on loopback."""
    host, port, user, password = imap or ("127.0.0.1", 143, "none", "none")
    with _clean_env():
        return Settings(
            database={"url": db_url},
            smtp={"host": "127.0.0.1", "port": smtp_port, "rate_per_minute": 100_000_000, "max_connections": connections},
            imap={"host": host, "port": port, "username": user, "password": password, "enabled": imap is not None},
            mail={"from_address": FROM},
            security={"secret": SECRET},
            digest={"enabled": True},
        )  # fmt: skip


def outgoing(settings: Settings) -> Outgoing:
    return Outgoing(settings.mail.domain, settings.mail.team_address)


# ---- lifecycle pass -------------------------------------------------------------------------


def lifecycle_pass(engine: Engine, prog: Programme, settings: Settings, repeat: int, db: str) -> Figure:
    """Wall time of one `run_pass` at the busy day's `now` (the due pairs are put back after each run)."""
    snap = Snapshot(engine, prog.due_ids)
    times, emails, events = [], 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        stats = run_pass(engine, prog.now, settings.policy(), outgoing(settings))
        times.append(time.perf_counter() - t0)
        if stats.pairs != len(prog.due_ids):
            raise AssertionError(f"the pass advanced {stats.pairs} pairs, {len(prog.due_ids)} were due")
        with engine.connect() as conn:  # PassStats.actions counts the last (empty) round: count the rows instead
            emails = conn.execute(select(func.count()).where(OutboxMessage.id > snap.marks[OutboxMessage])).scalar_one()  # type: ignore[operator]
            events = conn.execute(select(func.count()).where(PairEvent.id > snap.marks[PairEvent])).scalar_one()  # type: ignore[operator]
        snap.restore()
    n = prog.spec.pairs
    return Figure(f"pass_s[N={n}]", db, times, "s", f"{len(prog.due_ids)} due; {emails} emails queued, {events} events")


# ---- outbox: render + send to the sink ------------------------------------------------------


async def _raw_send(port: int, messages: Sequence[bytes], connections: int) -> None:
    queue = list(reversed(messages))

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        await smtp.connect()
        while queue:
            await smtp.sendmail(FROM, ["someone@example.net"], queue.pop())
        await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


async def _mailflow_send(engine: Engine, settings: Settings, prog: Programme) -> int:
    from mailflow.outbox import OutboxSender

    sender = OutboxSender(engine, settings, "bench", lambda: prog.now)
    sent = 0
    while True:  # as the daemon does: run_once (1,000 rows a claim) until nothing is due
        stats = await sender.run_once()
        sent += stats.sent
        if stats.failed or stats.paused:
            raise AssertionError(f"send failed: {stats}")
        if not stats.sent:
            return sent


def _prebuilt(engine: Engine, settings: Settings, ids: Sequence[int], n: int, sample: int = 40) -> list[bytes]:
    """`n` messages of mailflow's own sizes: `sample` of the pending rows rendered once, cycled."""
    composer = Composer(settings)
    out = []
    with Session(engine) as session:
        for row_id in ids[:sample]:
            row = session.get(OutboxMessage, row_id)
            assert row is not None
            composed = composer.compose(session, row)
            assert composed is not None
            out.append(composed.raw)  # the exact bytes mailflow sends
    return list(itertools.islice(itertools.cycle(out), n))


def send(engine: Engine, prog: Programme, settings: Settings, n: int, repeat: int, db: str) -> tuple[Figure, Figure, Figure]:
    ids = queue_pending(engine, prog, n, prog.now)
    if len(ids) != n:
        raise AssertionError(f"{len(ids)} pending rows queued, {n} wanted")
    messages = _prebuilt(engine, settings, ids, n)
    port, conns = settings.smtp.port, settings.smtp.max_connections
    ours, raw, ratio = [], [], []
    for _ in range(repeat):
        reset_pending(engine, ids)
        t0 = time.perf_counter()
        asyncio.run(_raw_send(port, messages, conns))
        t_raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        sent = asyncio.run(_mailflow_send(engine, settings, prog))
        t_ours = time.perf_counter() - t0
        if sent != n:
            raise AssertionError(f"mailflow sent {sent} of {n}")
        ours.append(n / t_ours)
        raw.append(n / t_raw)
        ratio.append(t_raw / t_ours)
    size = sum(map(len, messages)) // len(messages)
    note = f"{n} msgs, {conns} connections, ~{size} B each"
    return (Figure("send_mailflow", db, ours, "msg/s", note), Figure("send_raw_aiosmtplib", db, raw, "msg/s", note),
            Figure("send", db, ratio, "ratio"))  # fmt: skip


# ---- inbox: fetch + parse + classify + apply + move -----------------------------------------


async def _raw_fetch_parse(host: str, port: int, user: str, password: str, chunk: int = 100) -> int:
    client = aioimaplib.IMAP4(host, port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(user, password)
    await client.select("INBOX")
    response = await client.uid_search("ALL", charset=None)
    uids = [int(u) for u in response.lines[0].split()]
    parser = BytesParser(policy=email_policy.default)
    parsed = 0
    for start in range(0, len(uids), chunk):
        part = ",".join(str(u) for u in uids[start : start + chunk])
        fetched = await client.uid("fetch", part, "(UID BODY.PEEK[])")
        lines = fetched.lines
        for i, line in enumerate(lines[:-1]):
            if isinstance(line, bytes) and line.endswith(b"}") and isinstance(lines[i + 1], bytearray):
                msg = parser.parsebytes(bytes(lines[i + 1]))
                body = msg.get_body(("plain", "html"))  # type: ignore[attr-defined]
                if body is not None:
                    body.get_content()
                parsed += 1
    await client.logout()
    return parsed


def _move_back(host: str, port: int, user: str, password: str, folders: Sequence[str]) -> None:
    client = imaplib.IMAP4(host, port, timeout=60)
    client.login(user, password)
    try:
        for folder in folders:
            typ, data = client.select(folder)
            if typ == "OK" and int(data[0] or 0):
                client.uid("MOVE", "1:*", "INBOX")
    finally:
        client.logout()


def _append_all(host: str, port: int, user: str, password: str, raws: Sequence[bytes]) -> None:
    client = imaplib.IMAP4(host, port, timeout=60)
    client.login(user, password)
    try:
        for raw in raws:
            client.append("INBOX", None, None, raw)
    finally:
        client.logout()


def inbox(engine: Engine, prog: Programme, settings: Settings, n: int, repeat: int, db: str) -> tuple[Figure, Figure, Figure, dict[str, int]]:
    from mailflow.inbox import read_inbox_once

    i = settings.imap
    creds = (i.host, i.port, i.username, i.password.get_secret_value() if i.password else "")
    raws, pair_ids = replies(prog, SECRET.encode(), FROM, n)
    if len(raws) != n:
        raise AssertionError(f"only {len(raws)} reply targets for {n} replies")
    _append_all(*creds, raws)
    snap = Snapshot(engine, pair_ids)
    ours, raw, ratio = [], [], []
    counts: dict[str, int] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = asyncio.run(_raw_fetch_parse(*creds))
        t_raw = time.perf_counter() - t0
        if got != n:
            raise AssertionError(f"raw fetch read {got} of {n}")
        t0 = time.perf_counter()
        counts = asyncio.run(read_inbox_once(engine, settings, lambda: prog.now))
        t_ours = time.perf_counter() - t0
        if sum(counts.values()) != n:
            raise AssertionError(f"mailflow read {counts}, {n} expected")
        ours.append(n / t_ours)
        raw.append(n / t_raw)
        ratio.append(t_raw / t_ours)
        _move_back(*creds, [i.processed_folder, i.unmatched_folder, i.quarantine_folder])
        snap.restore()
    size = sum(map(len, raws)) // len(raws)
    note = f"{n} replies, ~{size} B each"
    return (Figure("inbox_mailflow", db, ours, "msg/s", note), Figure("inbox_raw_aioimaplib", db, raw, "msg/s", note),
            Figure("inbox", db, ratio, "ratio"), counts)  # fmt: skip


# ---- digests --------------------------------------------------------------------------------


def digests(engine: Engine, prog: Programme, settings: Settings, repeat: int, db: str) -> Figure:
    from mailflow.digest import queue_digests

    with engine.connect() as conn:
        mark = conn.execute(select(func.coalesce(func.max(OutboxMessage.id), 0))).scalar_one()
    times, queued = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        queued = queue_digests(engine, settings, prog.now)
        times.append(time.perf_counter() - t0)
        with engine.begin() as conn:
            conn.execute(delete(OutboxMessage).where(OutboxMessage.id > mark))  # type: ignore[operator]
    return Figure("digest_s", db, times, "s", f"{queued} digests, {prog.spec.pairs} pairs, {prog.spec.referents} referents")


def timed(label: str, fn: Callable[[], Any], log: Callable[[str], None]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    log(f"{label}: {time.perf_counter() - t0:.1f} s")
    return out

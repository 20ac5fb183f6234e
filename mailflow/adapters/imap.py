"""IMAP adapter: read, size and move messages in one mailbox folder with aioimaplib; plain types out.

Security: a password goes in clear only to a loopback host (tls="none"); otherwise implicit TLS
(IMAPS) with certificate verification (system store or `cafile`). aioimaplib has no STARTTLS.

Every failure is a MailboxError naming the operation (never message content); TLS policy
failures are ImapTLSPolicyError, which is both a TLSPolicyError and a MailboxError.

aioimaplib 2.0.3 facts this relies on (measured against Dovecot 2.3):
- Response.lines drops the tag and the "* " prefix; its LAST element is the tagged completion
  text. FETCH literals arrive as three items: b'1 FETCH (UID 1 BODY[] {44}', bytearray(raw), b')'.
- A dropped connection is only reported through conn_lost_cb: pending commands would wait for
  their timeout, so every command here races a "connection lost" event.
- `UID SEARCH UID n:*` always returns the highest UID, even when it is below n: filter here.
- uid("search") raises Abort: use uid_search (charset=None: some servers reject CHARSET).
- IDLE: idle_start(timeout) arms a timer that pushes STOP_WAIT_SERVER_PUSH into the idle queue;
  idle_done() sends DONE and the IDLE future must then be awaited before the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from types import TracebackType
from typing import Any, Literal, TypeVar

from aioimaplib import aioimaplib

from mailflow.errors import MailboxError, TLSPolicyError
from mailflow.net import is_loopback

_T = TypeVar("_T")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\bUIDVALIDITY (\d+)")
_LIST_NAME = re.compile(rb'^\([^)]*\) (?:"[^"]*"|NIL) (.+)$')
_CHANGE = re.compile(rb"^\d+ (EXISTS|RECENT)\b")
_CHUNK = 100  # UIDs per FETCH command


class ImapTLSPolicyError(TLSPolicyError, MailboxError):
    """The IMAP server cannot be reached with the configured TLS policy (refused rather than sent in clear)."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    tls: Literal["none", "implicit"]
    username: str
    password: str
    folder: str = "INBOX"
    timeout_s: float = 30
    cafile: str | None = None


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    size: int


def quiet_imap_loggers() -> None:
    """Cap aioimaplib's logger at WARNING: at DEBUG it logs every byte (content and password)."""
    logger = logging.getLogger("aioimaplib")
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)


def _quote(name: str) -> str:
    """An IMAP astring for a folder name (ASCII names; modified UTF-7 is not supported)."""
    if not name.isascii():
        raise MailboxError(f"IMAP folder names must be ASCII, got {name!r}")
    if name and re.fullmatch(r"[A-Za-z0-9._/-]+", name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(int(u)) for u in uids)


def _status_text(response: Any) -> str:
    last = response.lines[-1] if response.lines else b""
    text = bytes(last).decode("ascii", "replace") if isinstance(last, bytes | bytearray) else str(last)
    return text[:120]


def _literals(lines: Sequence[Any]) -> list[tuple[int | None, bytes]]:
    """(uid, literal) for each FETCH literal; uid from the FETCH line or the line after the literal."""
    out: list[tuple[int | None, bytes]] = []
    for i, line in enumerate(lines[:-1]):
        if isinstance(line, bytes) and line.endswith(b"}") and isinstance(lines[i + 1], bytearray):
            match = _UID.search(line)
            if match is None and i + 2 < len(lines) and isinstance(lines[i + 2], bytes):
                match = _UID.search(lines[i + 2])
            out.append((int(match.group(1)) if match else None, bytes(lines[i + 1])))
    return out


class ImapMailbox:
    """One logged-in IMAP connection working on `config.folder`."""

    def __init__(self, config: ImapConfig, *, poll_interval_s: float = 5.0, use_idle: bool = True) -> None:
        quiet_imap_loggers()
        self.config = config
        self.poll_interval_s = poll_interval_s
        self.use_idle = use_idle
        self.uidvalidity: int | None = None
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()

    async def __aenter__(self) -> ImapMailbox:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _check_policy(self) -> None:
        cfg = self.config
        if cfg.tls == "none" and not is_loopback(cfg.host):
            raise ImapTLSPolicyError("refusing to send the IMAP password in clear to a non-loopback host: set imap.tls to implicit")
        if cfg.tls not in ("none", "implicit"):
            raise ImapTLSPolicyError(f"unknown IMAP tls mode {cfg.tls!r} (none or implicit)")

    def _on_connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def _guard(self, what: str, awaitable: Awaitable[_T], timeout_s: float | None = None) -> _T:
        """Await an aioimaplib call; a lost connection, a timeout or a library error -> MailboxError."""
        task = asyncio.ensure_future(awaitable)
        if self._lost.is_set():
            task.cancel()
            raise MailboxError(f"IMAP {what} failed: connection lost")
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout_s or self.config.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if task not in done:
            task.cancel()
            self._lost.set()  # the protocol is out of step now: this connection is finished
            reason = "connection lost" if lost in done else "timed out"
            raise MailboxError(f"IMAP {what} failed: {reason}")
        try:
            return task.result()
        except ssl.SSLError as exc:
            raise ImapTLSPolicyError(f"IMAP {what} failed: TLS: {exc.reason or exc}") from exc
        except (aioimaplib.AioImapException, OSError, TimeoutError) as exc:
            self._lost.set()
            raise MailboxError(f"IMAP {what} failed: {type(exc).__name__}") from exc

    async def _ok(self, what: str, awaitable: Awaitable[Any], timeout_s: float | None = None) -> Any:
        response = await self._guard(what, awaitable, timeout_s)
        if response.result != "OK":
            raise MailboxError(f"IMAP {what} failed: {response.result} {_status_text(response)}")
        return response

    @property
    def _imap(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise MailboxError("IMAP mailbox is not connected")
        return self._client

    # -- connection -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect and log in (plain only to loopback, else implicit TLS with verification)."""
        self._check_policy()
        await self.close()
        cfg = self.config
        self._lost = asyncio.Event()
        if cfg.tls == "implicit":
            context = ssl.create_default_context(cafile=cfg.cafile)
            client = aioimaplib.IMAP4_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, ssl_context=context)
        else:
            client = aioimaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout_s)
        client.protocol.conn_lost_cb = self._on_connection_lost  # IMAP4_SSL does not pass it on
        self._client = client
        try:
            await self._guard("connect", client.wait_hello_from_server())
            await self._ok("login", client.login(cfg.username, cfg.password))
        except BaseException:
            await self.close()
            raise
        self.uidvalidity = None

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    async def close(self) -> None:
        """Log out (best effort) and drop the connection; safe to call twice."""
        client, self._client = self._client, None
        if client is None:
            return
        if not self._lost.is_set() and client.protocol.state in (aioimaplib.AUTH, aioimaplib.SELECTED):
            with contextlib.suppress(TimeoutError, aioimaplib.AioImapException, OSError):
                await asyncio.wait_for(client.logout(), min(self.config.timeout_s, 5))
        transport = client.protocol.transport
        if transport is not None:
            transport.close()
        for task in list(client.tasks) + list(client.protocol.tasks):
            task.cancel()
        self._lost.set()

    # -- folders ----------------------------------------------------------------------------
    async def folders(self) -> list[str]:
        response = await self._ok("list", self._imap.list('""', "*"))
        names = []
        for line in response.lines[:-1]:
            match = _LIST_NAME.match(bytes(line)) if isinstance(line, bytes | bytearray) else None
            if match:
                names.append(match.group(1).decode("ascii", "replace").strip('"'))
        return names

    async def ensure_folders(self, names: Sequence[str]) -> None:
        """Create each folder that does not exist yet."""
        existing = set(await self.folders())
        for name in names:
            if name in existing:
                continue
            response = await self._guard(f"create {name}", self._imap.create(_quote(name)))
            if response.result != "OK" and b"ALREADYEXISTS" not in bytes(response.lines[-1]):
                raise MailboxError(f"IMAP create {name} failed: {_status_text(response)}")

    async def select(self, folder: str | None = None) -> int:
        """SELECT the configured folder (or `folder`); return its UIDVALIDITY."""
        response = await self._ok("select", self._imap.select(_quote(folder or self.config.folder)))
        for line in response.lines:
            match = _UIDVALIDITY.search(bytes(line))
            if match:
                self.uidvalidity = int(match.group(1))
                return self.uidvalidity
        raise MailboxError("IMAP select failed: no UIDVALIDITY in the server's answer")

    # -- reading ----------------------------------------------------------------------------
    async def uids(self, since_uid: int | None = None) -> list[int]:
        """All UIDs in the folder, ascending (only those > since_uid when given)."""
        criteria = "ALL" if since_uid is None else f"UID {since_uid + 1}:*"
        response = await self._ok("search", self._imap.uid_search(criteria, charset=None))
        found: list[int] = []
        for line in response.lines[:-1]:  # only all-digit lines: the SEARCH result
            tokens = bytes(line).split()
            if all(t.isdigit() for t in tokens):
                found.extend(int(t) for t in tokens)
        return sorted(u for u in set(found) if since_uid is None or u > since_uid)

    async def fetch(self, uids: Sequence[int], chunk: int = 100) -> AsyncIterator[FetchedMessage]:
        """Raw messages (BODY.PEEK[]: the \\Seen flag is untouched); UIDs that vanished are skipped."""
        async for part in self.fetch_chunks(uids, chunk):
            for fetched in part:
                yield fetched

    async def fetch_chunks(self, uids: Sequence[int], chunk: int = 100) -> AsyncIterator[list[FetchedMessage]]:
        """Like fetch(), one list per FETCH command of `chunk` UIDs (the inbox applies a chunk in one transaction)."""
        for start in range(0, len(uids), chunk):
            part = uids[start : start + chunk]
            response = await self._ok("fetch", self._imap.uid("fetch", _uid_set(part), "(UID BODY.PEEK[])"))
            yield [FetchedMessage(uid=uid, raw=raw, size=len(raw)) for uid, raw in _literals(response.lines) if uid is not None]

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE per UID, so that huge messages can be set aside without downloading them."""
        out: dict[int, int] = {}
        # in chunks: aioimaplib handles a response recursively, one frame per line, so one FETCH answer
        # of ~1,000 lines (an inbox of 2,000 messages) raises RecursionError and drops the connection
        for start in range(0, len(uids), _CHUNK):
            part = uids[start : start + _CHUNK]
            response = await self._ok("fetch sizes", self._imap.uid("fetch", _uid_set(part), "(UID RFC822.SIZE)"))
            for line in response.lines[:-1]:
                uid, size = _UID.search(bytes(line)), _SIZE.search(bytes(line))
                if uid and size:
                    out[int(uid.group(1))] = int(size.group(1))
        return out

    async def header_message_ids(self, uids: Sequence[int]) -> dict[int, str | None]:
        """Message-ID header per UID (None when absent), e.g. to resync after a UIDVALIDITY change."""
        out: dict[int, str | None] = {}
        for start in range(0, len(uids), _CHUNK):  # in chunks: see sizes()
            part = uids[start : start + _CHUNK]
            response = await self._ok(
                "fetch message-ids",
                self._imap.uid("fetch", _uid_set(part), "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"),
            )
            for uid, header in _literals(response.lines):
                if uid is not None:
                    value = BytesHeaderParser().parsebytes(header).get("Message-ID")
                    out[uid] = " ".join(str(value).split()) if value else None
        return out

    async def search_text(self, needle: str) -> list[int]:
        """UIDs whose header or body contains the ASCII `needle` (SEARCH TEXT, decoded by the server)."""
        if not needle.isascii() or '"' in needle or "\\" in needle:
            raise MailboxError("IMAP search: only plain ASCII text can be searched")
        response = await self._ok("search", self._imap.uid_search("TEXT", f'"{needle}"', charset=None))
        found: set[int] = set()
        for line in response.lines[:-1]:
            tokens = bytes(line).split()
            if tokens and all(t.isdigit() for t in tokens):
                found.update(int(t) for t in tokens)
        return sorted(found)

    # -- changing ---------------------------------------------------------------------------
    async def delete(self, uids: Sequence[int]) -> None:
        """Delete messages for good from the selected folder (\\Deleted + EXPUNGE)."""
        if not uids:
            return
        imap = self._imap
        await self._ok("store \\Deleted", imap.uid("store", _uid_set(uids), "+FLAGS.SILENT", r"(\Deleted)"))
        if imap.has_capability("UIDPLUS"):
            await self._ok("expunge", imap.uid("expunge", _uid_set(uids)))
        else:
            await self._ok("expunge", imap.expunge())

    async def move(self, uid: int, folder: str) -> None:
        """Move one message (see move_many)."""
        await self.move_many([uid], folder)

    async def move_many(self, uids: Sequence[int], folder: str) -> None:
        """Move messages to `folder` in one command (UID MOVE 1,5,7), else COPY + \\Deleted + UID EXPUNGE."""
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), _CHUNK):  # in chunks: one EXPUNGE line per message answers it (see sizes())
            await self._move_set(_uid_set(ordered[start : start + _CHUNK]), folder)

    async def _move_set(self, uid_set: str, folder: str) -> None:
        imap, target = self._imap, _quote(folder)
        if imap.has_capability("MOVE"):
            await self._ok(f"move to {folder}", imap.uid("move", uid_set, target))
            return
        await self._ok(f"copy to {folder}", imap.uid("copy", uid_set, target))
        await self._ok("store \\Deleted", imap.uid("store", uid_set, "+FLAGS.SILENT", r"(\Deleted)"))
        if imap.has_capability("UIDPLUS"):
            await self._ok("expunge", imap.uid("expunge", uid_set))
        else:  # plain EXPUNGE also removes other \Deleted messages: acceptable in our own folder
            await self._ok("expunge", imap.expunge())

    # -- waiting ----------------------------------------------------------------------------
    async def wait_for_change(self, timeout_s: float) -> bool:
        """Wait until new mail arrives (EXISTS/RECENT) or timeout_s passes; True if it changed.

        IDLE when the server has it; otherwise NOOP every poll_interval_s.
        """
        if self.use_idle and self._imap.has_capability("IDLE"):
            return await self._idle(timeout_s)
        return await self._poll(timeout_s)

    async def _idle(self, timeout_s: float) -> bool:
        imap = self._imap
        queue = imap.protocol.idle_queue
        stale = []
        while not queue.empty():  # pushes (or a stop marker) left over from an earlier IDLE
            stale.append(queue.get_nowait())
        if any(_CHANGE.match(bytes(line)) for push in stale if push != aioimaplib.STOP_WAIT_SERVER_PUSH for line in push):
            return True
        idle = await self._guard("idle", imap.idle_start(timeout=timeout_s))
        changed = False
        deadline = time.monotonic() + timeout_s
        try:
            while not changed and (left := deadline - time.monotonic()) > 0:
                push = await self._guard("idle", imap.wait_server_push(timeout=left + 5), timeout_s=left + 10)
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                changed = any(_CHANGE.match(bytes(line)) for line in push)
        finally:
            if not self._lost.is_set():
                imap.idle_done()
                await self._guard("idle done", idle)
        return changed

    async def _poll(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            response = await self._ok("noop", self._imap.noop())
            if any(_CHANGE.match(bytes(line)) for line in response.lines[:-1]):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval_s, left))

"""ImapMailbox against a real Dovecot (one fresh user per test)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from aioimaplib import aioimaplib

from mailflow.adapters.imap import FetchedMessage, ImapConfig, ImapMailbox, ImapTLSPolicyError
from mailflow.errors import MailboxError, TLSPolicyError
from tests.support.dovecot import DovecotServer


def raw(i: int) -> bytes:
    return (
        f"From: ann@example.test\r\nTo: bot@example.test\r\nSubject: msg {i}\r\n"
        f"Message-ID: <m{i}@example.test>\r\n\r\nbody {i} with a brace {{5}}\r\n"
    ).encode()


@pytest.fixture
def user(dovecot: DovecotServer) -> tuple[str, str]:
    return dovecot.new_user()


def cfg(dovecot: DovecotServer, user: tuple[str, str], **overrides: Any) -> ImapConfig:
    values: dict[str, Any] = {
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "tls": "none",
        "username": user[0],
        "password": user[1],
        "timeout_s": 10,
    }
    values.update(overrides)
    return ImapConfig(**values)


async def collect(box: ImapMailbox, uids: list[int], chunk: int = 100) -> list[FetchedMessage]:
    return [m async for m in box.fetch(uids, chunk=chunk)]


async def test_append_uids_fetch_move(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    for i in range(3):
        dovecot.append(raw(i), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.ensure_folders(["Processed", "Unmatched", "Quarantine"])
        await box.ensure_folders(["Processed"])  # idempotent
        uidvalidity = await box.select()
        assert uidvalidity > 0
        uids = await box.uids()
        assert uids == [1, 2, 3]
        assert await box.uids(since_uid=2) == [3]
        assert await box.uids(since_uid=3) == []  # IMAP "4:*" would answer 3: filtered
        fetched = await collect(box, uids, chunk=2)
        assert [m.uid for m in fetched] == uids
        assert [m.raw for m in fetched] == [raw(i) for i in range(3)]
        assert all(m.size == len(m.raw) for m in fetched)
        assert await box.sizes(uids) == {i + 1: len(raw(i)) for i in range(3)}
        ids = await box.header_message_ids(uids)
        assert ids == {i + 1: f"<m{i}@example.test>" for i in range(3)}
        await box.move(1, "Processed")
        assert await box.uids() == [2, 3]
        assert await box.select() == uidvalidity
    assert set(dovecot.folders(user[0])) >= {"INBOX", "Processed", "Unmatched", "Quarantine"}
    assert dovecot.list_folder("Processed", user=user[0]) == [raw(0)]


async def test_fetch_does_not_set_seen_and_skips_vanished_uids(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(raw(0), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        assert [m.uid for m in await collect(box, [1, 99])] == [1]
        assert await box.header_message_ids([99]) == {}
        response = await box._imap.uid_search("UNSEEN", charset=None)
        assert response.lines[0] == b"1"


async def test_message_without_message_id(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(b"Subject: none\r\n\r\nno id\r\n", user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        assert await box.header_message_ids([1]) == {1: None}


async def test_move_without_move_capability_uses_copy_store_expunge(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    for i in range(2):
        dovecot.append(raw(i), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.ensure_folders(["Processed"])
        await box.select()
        box._imap.protocol.capabilities.discard("MOVE")
        await box.move(2, "Processed")
        assert await box.uids() == [1]
    assert dovecot.list_folder("Processed", user=user[0]) == [raw(1)]


@pytest.mark.parametrize("capability", ["MOVE", None])
async def test_move_many_moves_exactly_the_given_uids(dovecot: DovecotServer, user: tuple[str, str], capability: str | None) -> None:
    for i in range(6):
        dovecot.append(raw(i), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.ensure_folders(["Processed", "Unmatched"])
        await box.select()
        if capability is None:  # COPY + \Deleted + UID EXPUNGE of the same UID set
            box._imap.protocol.capabilities.discard("MOVE")
        await box.move_many([5, 1, 3], "Processed")
        await box.move_many([6], "Unmatched")
        await box.move_many([], "Unmatched")
        assert await box.uids() == [2, 4]
    assert sorted(dovecot.list_folder("Processed", user=user[0])) == sorted([raw(0), raw(2), raw(4)])
    assert dovecot.list_folder("Unmatched", user=user[0]) == [raw(5)]


async def test_move_to_missing_folder_raises_mailbox_error(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(raw(0), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        with pytest.raises(MailboxError, match="move to Nowhere"):
            await box.move(1, "Nowhere")
        assert await box.uids() == [1]  # still usable


async def test_select_missing_folder(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    async with ImapMailbox(cfg(dovecot, user, folder="Missing Folder")) as box:
        with pytest.raises(MailboxError, match="select"):
            await box.select()


async def test_wrong_password_is_mailbox_error(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    box = ImapMailbox(cfg(dovecot, (user[0], "wrong")))
    with pytest.raises(MailboxError, match="login"):
        await box.connect()
    assert not box.connected


async def test_connection_refused_is_mailbox_error(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    from tests.support.ports import free_port

    with pytest.raises(MailboxError, match="connect"):
        await ImapMailbox(cfg(dovecot, user, port=free_port())).connect()


async def test_idle_sees_another_clients_append(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        assert box._imap.has_capability("IDLE")
        waiter = asyncio.create_task(box.wait_for_change(timeout_s=20))
        await asyncio.sleep(0.3)  # let IDLE start (an APPEND before IDLE would also be seen later)
        started = time.monotonic()
        await asyncio.to_thread(dovecot.append, raw(7), "INBOX", user[0])
        assert await waiter is True
        assert time.monotonic() - started < 5  # measured ~0.5 s
        assert await box.uids() == [1]  # the connection is usable after IDLE


async def test_idle_timeout_returns_false_and_connection_stays_usable(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        started = time.monotonic()
        assert await box.wait_for_change(timeout_s=1) is False
        assert 0.9 < time.monotonic() - started < 5
        assert await box.wait_for_change(timeout_s=0.5) is False  # no stale stop marker
        dovecot.append(raw(1), user=user[0])
        assert await box.wait_for_change(timeout_s=5) is True  # (a later EXISTS during IDLE)
        assert await box.uids() == [1]


async def test_polling_fallback_sees_append(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    async with ImapMailbox(cfg(dovecot, user), use_idle=False, poll_interval_s=0.2) as box:
        await box.select()
        assert await box.wait_for_change(timeout_s=0.5) is False
        waiter = asyncio.create_task(box.wait_for_change(timeout_s=20))
        await asyncio.to_thread(dovecot.append, raw(2), "INBOX", user[0])
        assert await waiter is True


async def test_imaps_with_trustme_ca(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(raw(0), user=user[0])
    config = cfg(dovecot, user, port=dovecot.imaps_port, tls="implicit", cafile=dovecot.cafile)
    async with ImapMailbox(config) as box:
        await box.select()
        assert [m.raw for m in await collect(box, await box.uids())] == [raw(0)]


async def test_imaps_with_wrong_ca_is_refused(dovecot: DovecotServer, user: tuple[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    config = cfg(dovecot, user, port=dovecot.imaps_port, tls="implicit", cafile=str(other))
    with pytest.raises(ImapTLSPolicyError):
        await ImapMailbox(config).connect()


async def test_password_in_clear_to_non_loopback_host_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_network(self: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no connection may be attempted")

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", no_network)
    config = ImapConfig("192.0.2.1", 143, "none", "bot@example.test", "pw", timeout_s=1)
    with pytest.raises(TLSPolicyError) as info:
        await ImapMailbox(config).connect()
    assert isinstance(info.value, MailboxError)


async def test_restart_old_connection_raises_mailbox_error_and_new_one_works(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(raw(0), user=user[0])
    box = ImapMailbox(cfg(dovecot, user))
    await box.connect()
    await box.select()
    idle_box = ImapMailbox(cfg(dovecot, user))
    await idle_box.connect()
    await idle_box.select()
    idle_waiter = asyncio.create_task(idle_box.wait_for_change(timeout_s=30))
    await asyncio.sleep(0.3)
    try:
        await asyncio.to_thread(dovecot.restart)
        with pytest.raises(MailboxError):
            await box.uids()
        assert not box.connected
        started = time.monotonic()
        with pytest.raises(MailboxError):  # an IDLE in progress ends at once, not at its timeout
            await idle_waiter
        assert time.monotonic() - started < 5
        await box.connect()  # a fresh connection on the same mailbox object
        await box.select()
        assert await box.uids() == [1]
    finally:
        await box.close()
        await idle_box.close()


async def test_client_constructed_inside_loop_only() -> None:
    # documents the aioimaplib fact the adapter relies on: the client needs a running loop
    assert asyncio.get_running_loop()
    assert aioimaplib.STOP_WAIT_SERVER_PUSH == [b"stop_wait_server_push"]


async def test_logs_carry_no_content(dovecot: DovecotServer, user: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # root at DEBUG: aioimaplib's logger stays capped at WARNING
    dovecot.append(raw(0), user=user[0])
    async with ImapMailbox(cfg(dovecot, user)) as box:
        await box.select()
        assert len(await collect(box, await box.uids())) == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "@" not in text and "body 0" not in text and user[1] not in text

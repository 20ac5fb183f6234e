"""SmtpSender against a real (aiosmtpd) relay: envelopes, reuse, scripted faults, TLS policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
import trustme

from mailflow.adapters.smtp import SmtpConfig, SmtpSender, SmtpTLSPolicyError
from mailflow.errors import (
    PermanentDeliveryError,
    RelayRejectedError,
    TLSPolicyError,
    TransientDeliveryError,
)
from tests.support.smtp import DROP, RecordingSMTPServer

RAW = b"From: bot@example.test\r\nTo: ann@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
Factory = Callable[..., RecordingSMTPServer]


def config(server: RecordingSMTPServer, **overrides: Any) -> SmtpConfig:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "tls": server.tls,
        "username": "bot",
        "password": "pw",
        "timeout_s": 10,
        "cafile": server.cafile,
    }
    values.update(overrides)
    return SmtpConfig(**values)


def email(i: int = 0) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "bot@example.test"
    msg["To"] = "ann@example.test"
    msg["Bcc"] = "hidden@example.test"
    msg["Subject"] = f"msg {i}"
    msg["Message-ID"] = f"<m{i}@example.test>"
    msg.set_content(f"body {i}\n")
    return msg


async def send_one(sender: SmtpSender, msg: EmailMessage | bytes = RAW) -> str:
    return await sender.send(msg, mail_from="bounce+x@example.test", rcpt_to="ann@example.test")


async def test_send_bytes_records_envelope_and_exact_bytes(smtp_server: RecordingSMTPServer) -> None:
    async with SmtpSender(config(smtp_server)) as sender:
        reply = await send_one(sender)
    assert "OK" in reply
    [got] = smtp_server.messages
    assert got.mail_from == "bounce+x@example.test"
    assert got.rcpt_tos == ("ann@example.test",)
    assert got.data == RAW
    assert smtp_server.logins == ["bot"]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("rcpt_to", "ann@example.test>\r\nRCPT TO:<evil@example.test"),
        ("rcpt_to", "ann@example.test> NOTIFY=NEVER"),
        ("mail_from", "<>"),
        ("mail_from", "bounce@example.test\nDATA"),
        ("rcpt_to", "Ann <ann@example.test>"),
    ],
)
async def test_bytes_path_refuses_unsafe_envelope_addresses_before_sending(smtp_server: RecordingSMTPServer, field: str, bad: str) -> None:
    """The bytes path puts the addresses on the command line as they are: they must be plain."""
    from mailflow.core.addresses import UnsafeHeaderError

    envelope = {"mail_from": "bounce+x@example.test", "rcpt_to": "ann@example.test", field: bad}
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(UnsafeHeaderError):
            await sender.send(RAW, **envelope)
        await send_one(sender)  # the connection is still usable
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ann@example.test",)]


async def test_email_message_envelope_overrides_headers_and_bcc_is_stripped(
    smtp_server: RecordingSMTPServer,
) -> None:
    async with SmtpSender(config(smtp_server, username=None, password=None)) as sender:
        await send_one(sender, email(1))
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("ann@example.test",)
    assert b"Message-ID: <m1@example.test>" in got.data
    assert b"hidden@example.test" not in got.data
    assert smtp_server.logins == []  # no AUTH without a username


async def test_one_connection_is_reused_for_many_messages(smtp_server: RecordingSMTPServer) -> None:
    async with SmtpSender(config(smtp_server)) as sender:
        for i in range(20):
            await send_one(sender, email(i))
    assert len(smtp_server.messages) == 20
    assert smtp_server.connections == 1


async def test_idle_connection_is_probed_and_reused(smtp_server: RecordingSMTPServer) -> None:
    async with SmtpSender(config(smtp_server), probe_after_idle_s=0) as sender:
        await send_one(sender)
        await send_one(sender)
    assert smtp_server.connections == 1


async def test_before_data_runs_once_the_envelope_is_accepted_and_before_the_message_is(
    smtp_server: RecordingSMTPServer,
) -> None:
    """The outbox commits the previous message there: after RCPT's 250, before DATA can be accepted."""
    seen: list[int] = []
    smtp_server.script("RCPT", "550 5.1.1 unknown user")
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(PermanentDeliveryError):
            await sender.send(RAW, mail_from="bounce+x@example.test", rcpt_to="ann@example.test", before_data=lambda: seen.append(-1))
        assert seen == []  # refused envelope: not called
        await sender.send(
            RAW, mail_from="bounce+x@example.test", rcpt_to="ann@example.test", before_data=lambda: seen.append(len(smtp_server.messages))
        )
    assert seen == [0] and len(smtp_server.messages) == 1  # called once, before the relay had the message


async def test_451_three_times_then_250(smtp_server: RecordingSMTPServer) -> None:
    smtp_server.script("DATA", *["451 4.3.0 try again later"] * 3)
    async with SmtpSender(config(smtp_server)) as sender:
        for _ in range(3):
            with pytest.raises(TransientDeliveryError) as info:
                await send_one(sender)
            assert info.value.code == 451
        await send_one(sender)
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 1  # a 4xx reply does not cost the connection


@pytest.mark.parametrize("code", [550, 551, 553])
async def test_5xx_at_rcpt_is_permanent(smtp_server: RecordingSMTPServer, code: int) -> None:
    smtp_server.script("RCPT", f"{code} 5.1.1 <ann@example.test>: unknown user")
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(PermanentDeliveryError) as info:
            await send_one(sender)
        assert info.value.code == code
        assert "@" not in str(info.value)  # no address in the message (it ends up in logs)
        assert info.value.__cause__ is None and info.value.__suppress_context__
        await send_one(sender)  # the connection is still usable
    assert smtp_server.connections == 1


@pytest.mark.parametrize(
    ("command", "reply", "error", "code"),
    [
        ("RCPT", "554 5.7.1 Relay access denied", RelayRejectedError, 554),
        ("RCPT", "452 4.2.2 mailbox full", TransientDeliveryError, 452),
        ("RCPT", "552 5.2.2 mailbox full", TransientDeliveryError, 552),
        ("MAIL", "530 5.7.0 Authentication required", RelayRejectedError, 530),
        ("MAIL", "553 5.7.1 sender not owned", RelayRejectedError, 553),
        ("DATA", "554 5.7.1 transaction failed", RelayRejectedError, 554),
        ("DATA", "550 5.1.1 unknown recipient", PermanentDeliveryError, 550),
        ("DATA", "552 5.3.4 message too big", PermanentDeliveryError, 552),
    ],
)
async def test_mapping_by_phase_and_code(smtp_server: RecordingSMTPServer, command: str, reply: str, error: type, code: int) -> None:
    smtp_server.script(command, reply)
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(error) as info:
            await send_one(sender)
    assert type(info.value) is error
    assert info.value.code == code


async def test_535_on_auth_is_relay_rejected(smtp_server: RecordingSMTPServer) -> None:
    async with SmtpSender(config(smtp_server, password="wrong")) as sender:
        with pytest.raises(RelayRejectedError) as info:
            await send_one(sender)
    assert info.value.code == 535
    assert smtp_server.messages == []


async def test_scripted_535_on_every_mechanism(smtp_server: RecordingSMTPServer) -> None:
    # aiosmtplib tries each advertised mechanism (PLAIN, LOGIN) before giving up
    smtp_server.script("AUTH", "535 5.7.8 no", "535 5.7.8 no")
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(RelayRejectedError) as info:
            await send_one(sender)
    assert info.value.code == 535


async def test_554_greeting_is_relay_rejected(smtp_server: RecordingSMTPServer) -> None:
    smtp_server.script("CONNECT", "554 5.3.2 no service for you")
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(RelayRejectedError) as info:
            await send_one(sender)
    assert info.value.code == 554


async def test_421_then_close_is_transient_and_next_send_reconnects(
    smtp_server: RecordingSMTPServer,
) -> None:
    async with SmtpSender(config(smtp_server)) as sender:
        await send_one(sender)
        smtp_server.script("MAIL", "421 4.3.2 shutting down")
        with pytest.raises(TransientDeliveryError) as info:
            await send_one(sender)
        assert info.value.code == 421
        await send_one(sender)
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


async def test_dropped_connection_is_transient_and_next_send_reconnects(
    smtp_server: RecordingSMTPServer,
) -> None:
    async with SmtpSender(config(smtp_server)) as sender:
        await send_one(sender)
        smtp_server.script("DATA", DROP)
        with pytest.raises(TransientDeliveryError) as info:
            await send_one(sender)
        assert info.value.code is None
        await send_one(sender)
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


async def test_relay_down_is_transient(smtp_server: RecordingSMTPServer) -> None:
    smtp_server.stop()
    async with SmtpSender(config(smtp_server)) as sender:
        with pytest.raises(TransientDeliveryError):
            await send_one(sender)


async def test_server_that_never_answers_times_out_as_transient() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never sends the greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = SmtpConfig("127.0.0.1", port, "none", None, None, timeout_s=0.5)
        async with SmtpSender(cfg) as sender:
            with pytest.raises(TransientDeliveryError, match="timed out"):
                await send_one(sender)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# -- TLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_with_trusted_ca(smtp_server_factory: Factory, tls: str) -> None:
    server = smtp_server_factory(tls=tls)
    async with SmtpSender(config(server)) as sender:
        await send_one(sender)
        await send_one(sender)
    assert len(server.messages) == 2
    assert server.logins == ["bot"]
    assert server.connections == 1


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_with_wrong_ca_is_refused(smtp_server_factory: Factory, tls: str, tmp_path: Any) -> None:
    server = smtp_server_factory(tls=tls)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    async with SmtpSender(config(server, cafile=str(other_ca))) as sender:
        with pytest.raises(TLSPolicyError) as info:
            await send_one(sender)
    assert isinstance(info.value, RelayRejectedError)  # sending pauses
    assert server.logins == [] and server.messages == []


async def test_tls_without_cafile_uses_system_store_and_refuses_test_ca(
    smtp_server_factory: Factory,
) -> None:
    server = smtp_server_factory(tls="implicit")
    async with SmtpSender(config(server, cafile=None)) as sender:
        with pytest.raises(SmtpTLSPolicyError):
            await send_one(sender)


async def test_starttls_required_but_not_offered_is_refused(smtp_server: RecordingSMTPServer) -> None:
    """aiosmtplib's default (start_tls=None) would carry on in clear and send the password."""
    async with SmtpSender(config(smtp_server, tls="starttls")) as sender:
        with pytest.raises(TLSPolicyError):
            await send_one(sender)
    assert smtp_server.logins == [] and smtp_server.messages == []


@pytest.mark.parametrize("host", ["192.0.2.1", "relay.example.test", "10.0.0.1"])
async def test_password_in_clear_to_non_loopback_host_is_refused_before_connecting(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    attempts: list[Any] = []

    async def no_network(self: Any, *args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError("no connection may be attempted")

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", no_network)
    cfg = SmtpConfig(host, 25, "none", "bot", "pw", timeout_s=1)
    with pytest.raises(TLSPolicyError):
        async with SmtpSender(cfg) as sender:
            await send_one(sender)
    assert attempts == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_may_use_a_password_in_clear(host: str) -> None:
    SmtpSender(SmtpConfig(host, 25, "none", "bot", "pw"))  # no error


def test_no_username_in_clear_to_remote_host_is_allowed() -> None:
    SmtpSender(SmtpConfig("192.0.2.1", 25, "none", None, None))  # nothing secret to leak


async def test_logs_carry_no_addresses_or_content(smtp_server: RecordingSMTPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # root at DEBUG: the library loggers stay capped at WARNING
    async with SmtpSender(config(smtp_server)) as sender:
        await send_one(sender)
        smtp_server.script("RCPT", "550 5.1.1 <ann@example.test>: unknown user")
        with pytest.raises(PermanentDeliveryError):
            await send_one(sender)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "@" not in text and "hello" not in text

"""SMTP adapter: send one email over a reused aiosmtplib connection and translate its failures.

Security policy (checked before any byte leaves the machine):
- tls="implicit": TLS from the first byte; tls="starttls": STARTTLS is REQUIRED (a server that
  does not offer it is refused; aiosmtplib's default, start_tls=None, would go on in clear).
  Certificates are verified (system store, or `cafile`).
- tls="none" with a username is refused unless the host is loopback (127.0.0.0/8, ::1,
  localhost): a password never travels in clear over a network.
- No AUTH when username is None.

Error mapping (code AND phase; aiosmtplib's exceptions carry `.code`):

| phase            | reply                          | raised                    |
|------------------|--------------------------------|---------------------------|
| any              | 4xx, timeout, dropped link     | TransientDeliveryError    |
| connect/greeting | 5xx (554 "no service")         | RelayRejectedError        |
| EHLO             | 5xx                            | RelayRejectedError        |
| TLS              | no STARTTLS, bad certificate,  | SmtpTLSPolicyError (a     |
|                  | STARTTLS refused (5xx)         | TLSPolicyError AND a      |
|                  |                                | RelayRejectedError)       |
| AUTH             | 5xx (535, 534, 538), no AUTH   | RelayRejectedError        |
| MAIL FROM        | 552 (size)                     | PermanentDeliveryError    |
| MAIL FROM        | other 5xx (530, 550, 553, 554) | RelayRejectedError        |
| RCPT             | 552 (RFC 5321 4.5.3.1.10)      | TransientDeliveryError    |
| RCPT             | 530, 554 (Postfix: relay       | RelayRejectedError        |
|                  | access denied)                 |                           |
| RCPT             | other 5xx (550, 551, 553, ...) | PermanentDeliveryError    |
| DATA             | 554                            | RelayRejectedError        |
| DATA             | other 5xx (550/551/553 from an | PermanentDeliveryError    |
|                  | LMTP-style relay, 552 size)    |                           |

Why 554 at DATA pauses sending rather than bouncing the recipient: we send one recipient per
message, so "554 transaction failed" cannot be told apart from a relay refusing all our mail,
and a wrong bounce flags a participant for a call and holds their mail, while a wrong pause
only needs the operator to resume. RelayRejectedError means: pause sending, alert the operator,
set no flag on the pair.

Messages of the raised errors hold the phase, the code and the enhanced status code only:
never addresses or server text (which often quotes the address).
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Literal

import aiosmtplib

from mailflow.core.addresses import check_address
from mailflow.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RelayRejectedError,
    TLSPolicyError,
    TransientDeliveryError,
)
from mailflow.net import is_loopback

_log = logging.getLogger(__name__)
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


class SmtpTLSPolicyError(TLSPolicyError, RelayRejectedError):
    """The relay cannot be used with the configured TLS policy: pause sending and fix the setup."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    username: str | None
    password: str | None
    timeout_s: float = 30
    cafile: str | None = None


def quiet_mail_loggers() -> None:
    """Cap the SMTP libraries' loggers at WARNING: at DEBUG/INFO they log addresses and content."""
    for name in ("aiosmtplib", "mail.log"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def check_tls_policy(config: SmtpConfig) -> None:
    """Raise SmtpTLSPolicyError when config would send a password in clear over a network."""
    if config.tls not in ("none", "starttls", "implicit"):
        raise SmtpTLSPolicyError(f"unknown SMTP tls mode {config.tls!r}")
    if config.tls == "none" and config.username is not None and not is_loopback(config.host):
        raise SmtpTLSPolicyError("refusing to send an SMTP password in clear to a non-loopback host: set smtp.tls to starttls or implicit")


def _describe(phase: str, code: int | None, text: str = "") -> str:
    match = _ENHANCED.match(text or "")
    enhanced = f" {match.group(1)}" if match else ""
    return f"SMTP {phase} failed: {code if code is not None else 'no reply'}{enhanced}"


def _by_code(phase: str, code: int, text: str) -> DeliveryError:
    """Map a server reply to an error, by phase then code (table in the module docstring)."""
    message = _describe(phase, code, text)
    if code < 500:
        return TransientDeliveryError(message, code)
    if phase in ("connect", "EHLO", "AUTH"):
        return RelayRejectedError(message, code)
    if phase == "STARTTLS":
        return SmtpTLSPolicyError(message, code)
    if phase == "MAIL FROM":
        cls: type[DeliveryError] = PermanentDeliveryError if code == 552 else RelayRejectedError
        return cls(message, code)
    if phase == "RCPT":
        if code == 552:
            return TransientDeliveryError(message, code)
        if code in (530, 554):
            return RelayRejectedError(message, code)
        return PermanentDeliveryError(message, code)
    if phase == "DATA" and code == 554:
        return RelayRejectedError(message, code)
    return PermanentDeliveryError(message, code)


def translate_error(exc: BaseException, phase: str = "send") -> DeliveryError:
    """Translate an aiosmtplib/OS error raised in `phase` into a mailflow DeliveryError."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return _by_code("RCPT", first.code, first.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        phase = {
            aiosmtplib.SMTPRecipientRefused: "RCPT",
            aiosmtplib.SMTPSenderRefused: "MAIL FROM",
            aiosmtplib.SMTPDataError: "DATA",
            aiosmtplib.SMTPAuthenticationError: "AUTH",
            aiosmtplib.SMTPConnectResponseError: "connect",
            aiosmtplib.SMTPHeloError: "EHLO",
        }.get(type(exc), phase)
        return _by_code(phase, exc.code, exc.message)
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return SmtpTLSPolicyError(f"SMTP TLS failed in {phase}: {cause.reason or 'handshake'}")
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return TransientDeliveryError(f"SMTP {phase} timed out")
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)):
        return TransientDeliveryError(f"SMTP connection lost or refused in {phase}")
    return TransientDeliveryError(f"SMTP {phase} failed: {type(exc).__name__}")


async def _transaction(client: aiosmtplib.SMTP, mail_from: str, rcpt_to: str, message: bytes, before_data: Callable[[], None] | None = None) -> str:
    """MAIL, RCPT, DATA for one recipient: `SMTP.sendmail` without its address parsing.

    The addresses were checked by mailflow.core.addresses (plain `local@domain`, ASCII atext, no
    whitespace or control character), so they go on the command line as they are; sendmail would
    parse each one twice with `email.utils.parseaddr`, ~15% of the sender's CPU for our long VERP
    addresses. The replies map to the same exceptions as sendmail's (and RSET after a refusal).
    """
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    options = [f"SIZE={len(message)}".encode("ascii")] if client.supports_extension("size") else []
    try:
        reply = await client.execute_command(b"MAIL", b"FROM:<" + mail_from.encode("ascii") + b">", *options)
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, mail_from)
        reply = await client.execute_command(b"RCPT", b"TO:<" + rcpt_to.encode("ascii") + b">")
        if reply.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt_to)
        if before_data is not None:
            before_data()
        reply = await client.data(message)
    except aiosmtplib.SMTPResponseException:
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()  # disconnected or refused: the original error is the one to report
        raise
    return reply.message


class SmtpSender:
    """One reused SMTP connection; reconnects lazily when it was dropped.

    `probe_after_idle_s`: before reusing a connection idle that long, a NOOP checks it is still
    alive (relays close idle sessions), so a stale link costs a reconnect instead of a failure.
    """

    def __init__(self, config: SmtpConfig, *, probe_after_idle_s: float = 10.0) -> None:
        quiet_mail_loggers()
        check_tls_policy(config)
        self.config = config
        self.probe_after_idle_s = probe_after_idle_s
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self.connections_opened = 0

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.config.cafile)

    async def connect(self) -> None:
        """Open the connection (STARTTLS and AUTH included); send() calls it when needed."""
        cfg = self.config
        check_tls_policy(cfg)
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout_s,
            use_tls=cfg.tls == "implicit",
            start_tls=False,  # STARTTLS is done below, explicitly, so that it can be required
            tls_context=self._tls_context() if cfg.tls != "none" else None,
        )
        phase = "connect"
        try:
            await client.connect()
            self.connections_opened += 1
            if cfg.tls == "starttls":
                phase = "EHLO"
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise SmtpTLSPolicyError("SMTP server does not offer STARTTLS (required)")
                phase = "STARTTLS"
                await client.starttls()
            if cfg.username is not None:
                phase = "AUTH"
                await client.ehlo()
                if not client.supports_extension("auth"):
                    raise RelayRejectedError("SMTP server offers no AUTH but a username is set")
                await client.login(cfg.username, cfg.password or "")
        except BaseException as exc:
            client.close()
            if isinstance(exc, (DeliveryError, aiosmtplib.SMTPResponseException)):
                raise translate_error(exc, phase) from None  # replies may quote addresses
            if isinstance(exc, Exception):
                raise translate_error(exc, phase) from exc
            raise
        self._client = client
        self._last_used = time.monotonic()

    async def _connected(self) -> aiosmtplib.SMTP:
        client = self._client
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used < self.probe_after_idle_s:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        self._client = None
        await self.connect()
        assert self._client is not None
        return self._client

    async def send(self, msg: EmailMessage | bytes, *, mail_from: str, rcpt_to: str, before_data: Callable[[], None] | None = None) -> str:
        """Send one message to one recipient; return the server's reply text (e.g. a queue id).

        `before_data` (bytes only) runs once the relay accepted the envelope, just before DATA: the
        last moment before this message can be accepted (the outbox records the previous one there).
        """
        client = await self._connected()
        try:
            if isinstance(msg, EmailMessage):
                _, reply = await client.send_message(msg, sender=mail_from, recipients=[rcpt_to])
            else:
                reply = await _transaction(client, check_address(mail_from), check_address(rcpt_to), msg, before_data)
        except aiosmtplib.SMTPException as exc:
            if not client.is_connected:
                self._client = None
            error = translate_error(exc)
            _log.warning("smtp send failed", extra={"action": "smtp_send", "code": error.code})
            raise error from None  # aiosmtplib's message carries the addresses
        except OSError as exc:
            client.close()
            self._client = None
            raise translate_error(exc) from exc
        self._last_used = time.monotonic()
        return reply

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit(timeout=min(self.config.timeout_s, 5))
        except (aiosmtplib.SMTPException, OSError):
            client.close()

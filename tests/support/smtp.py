"""A recording, scriptable aiosmtpd relay on a free loopback port (runs in its own thread).

    server = RecordingSMTPServer(tls="none"|"starttls"|"implicit", users={"bot": "pw"})
    server.start()
    server.script("DATA", "451 4.3.0 try later", "451 4.3.0 try later")  # then 250 again
    server.script("RCPT", "550 5.1.1 no such user")
    server.script("AUTH", "535 5.7.8 bad credentials")
    server.script("MAIL", "421 4.3.2 closing")      # a 421 reply is followed by a close
    server.script("DATA", DROP)                       # close without any reply
    server.script("CONNECT", "554 5.3.2 no service")  # the greeting
    server.messages -> [Received(mail_from, rcpt_tos, data)], server.connections -> int

Each scripted command pops its next answer; with none left the server behaves normally.
Scripted MAIL/RCPT/DATA answers reject: nothing is recorded for them.
"""

from __future__ import annotations

import collections
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.ports import free_port

HOST = "127.0.0.1"
DROP = "DROP"  # scripted answer: close the connection without replying
SCRIPTABLE = ("CONNECT", "EHLO", "AUTH", "MAIL", "RCPT", "DATA")


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class _Script:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)

    def add(self, command: str, answers: tuple[str, ...]) -> None:
        with self._lock:
            self._queues[command].extend(answers)

    def pop(self, command: str) -> str | None:
        with self._lock:
            queue = self._queues[command]
            return queue.popleft() if queue else None


class _QuietSession(Session):
    """aiosmtpd logs a deprecation warning on every successful AUTH via login_data: skip it."""

    @property  # type: ignore[override]
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with a scriptable greeting, close-after-421 and DROP."""

    def __init__(self, owner: RecordingSMTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._greeted = False

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None and self.transport is None:  # not the STARTTLS upgrade
            self._owner._count_connection()
        super().connection_made(transport)

    async def push(self, status: Any) -> None:
        if not self._greeted:
            self._greeted = True
            status = self._owner._scripted.pop("CONNECT") or status
        text = status.decode() if isinstance(status, bytes) else status
        if text == DROP:
            self.transport.close()
            return
        await super().push(status)
        if text.startswith("421"):  # "service closing transmission channel"
            self.transport.close()


class _Handler:
    def __init__(self, owner: RecordingSMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        scripted = self.owner._scripted.pop("EHLO")
        return [scripted] if scripted else responses

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: Any) -> Any:
        return self.owner._scripted.pop("AUTH") or MISSING

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        scripted = self.owner._scripted.pop("MAIL")
        if scripted:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        scripted = self.owner._scripted.pop("RCPT")
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        scripted = self.owner._scripted.pop("DATA")
        if scripted:
            return scripted
        raw = envelope.original_content or b""
        self.owner._record(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), raw))
        return f"250 2.0.0 OK queued as q{len(self.owner.messages)}"


class _Controller(Controller):
    def __init__(self, owner: RecordingSMTPServer, *args: Any, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.owner, self.handler, **self.SMTP_kwargs)


class RecordingSMTPServer:
    def __init__(
        self,
        *,
        tls: Literal["none", "starttls", "implicit"] = "none",
        users: dict[str, str] | None = None,
        auth_required: bool = False,
        ca: trustme.CA | None = None,
        cert_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.host = HOST
        self.port = free_port()
        self.tls = tls
        self.users = dict(users or {})
        self.messages: list[Received] = []
        self.logins: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._scripted = _Script()
        self.ca = ca or trustme.CA()
        self.cafile: str | None = None
        server_ctx = None
        if tls != "none":
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(*cert_names).configure_cert(server_ctx)
        kwargs: dict[str, Any] = {
            "hostname": HOST,
            "port": self.port,
            "server_hostname": "relay.test",
            "auth_require_tls": False,
            "auth_required": auth_required,
            "authenticator": self._authenticate,
        }
        if tls == "starttls":
            kwargs["tls_context"] = server_ctx
        elif tls == "implicit":
            kwargs["ssl_context"] = server_ctx
        self._controller = _Controller(self, _Handler(self), **kwargs)

    def write_cafile(self, path: str) -> str:
        self.ca.cert_pem.write_to_path(path)
        self.cafile = path
        return path

    # -- recording ----------------------------------------------------------------------------
    def _record(self, received: Received) -> None:
        with self._lock:
            self.messages.append(received)

    def _count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        if self.users.get(user) != password:
            return AuthResult(success=False, handled=False)
        with self._lock:
            self.logins.append(user)
        return AuthResult(success=True)

    # -- control ------------------------------------------------------------------------------
    def script(self, command: str, *answers: str) -> None:
        """Queue answers for the next occurrences of command (see module docstring)."""
        if command not in SCRIPTABLE:
            raise ValueError(f"cannot script {command!r}; one of {SCRIPTABLE}")
        self._scripted.add(command, answers)

    def start(self) -> None:
        self._controller.start()
        with self._lock:
            self.connections = 0  # Controller.start() opened one connection to check readiness

    def stop(self) -> None:
        if self._controller._thread is not None:  # idempotent: tests may stop it themselves
            self._controller.stop()

    def __enter__(self) -> RecordingSMTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

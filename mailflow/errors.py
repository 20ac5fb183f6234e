"""The MailflowError hierarchy: subclasses say what the operator (or the caller) does next."""

from __future__ import annotations


class MailflowError(Exception):
    """mailflow failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "mailflow failed").strip())


class ConfigError(MailflowError):
    """The configuration is invalid: fix the named setting."""


class InputError(MailflowError):
    """An input file is invalid: fix the named rows."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        super().__init__("\n".join(problems))


class NotFoundError(MailflowError):
    """The named object does not exist."""


class DeliveryError(MailflowError):
    """An email could not be delivered."""

    def __init__(self, message: str | None = None, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """A temporary SMTP failure (4xx, timeout, dropped connection): retry later."""


class PermanentDeliveryError(DeliveryError):
    """The relay refused this recipient for good (550/551/553): do not retry."""


class RelayRejectedError(DeliveryError):
    """The relay refuses us, not the recipient (535 auth, 554 for all): pause sending and tell the operator."""


class MailboxError(MailflowError):
    """The IMAP mailbox could not be read or changed (retry with backoff)."""


class TLSPolicyError(MailflowError):
    """The server cannot be reached with the configured TLS policy (refused rather than sent in clear)."""

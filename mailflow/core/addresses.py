"""Header safety: neutralise or reject values before they reach an email header; plus-addresses.

Display names and subjects come from spreadsheets and templates, so they are *neutralised*
(control characters and line breaks become a space, encoded-word openers are broken, length is
capped). Addresses and message ids are *rejected* (`UnsafeHeaderError`) when malformed: an
address silently rewritten would deliver to someone else.

Python 3.11.7 has CVE-2024-6923 (a newline inside an encoded word could be emitted as a real
line break while folding), which is why nothing that could hold a line break of any kind
(CR, LF, VT, FF, NEL, U+2028/2029, ...) is ever handed to the `email` package.
"""

from __future__ import annotations

import re
import unicodedata

from mailflow.errors import MailflowError

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DISPLAY_NAME = 120
MAX_SUBJECT = 200

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
# dot-atom text (RFC 5322 atext) without quoted forms: what we accept for our own and
# participants' addresses. Non-ASCII local parts (SMTPUTF8) are refused: the relay may not take them.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_MSGID_RE = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.\[\]:-]+>")
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
# the same set as `_neutral`, as one character class (Cc, Zl, Zp, Cs and the bidi overrides): one C scan
_SPACE_RE = re.compile(r"\s")  # str.isspace(), as one scan
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


class UnsafeHeaderError(MailflowError, ValueError):
    """A value cannot be put in an email header safely."""


def _neutral(ch: str) -> bool:
    """True when `ch` must not reach a header (control, line/paragraph separator, bidi override).

    The readable definition: `_UNSAFE_RE` is the same set as one regex (tests check every code point).
    """
    return unicodedata.category(ch) in {"Cc", "Zl", "Zp", "Cs"} or ch in _BIDI


def clean_header_text(value: str, max_len: int = MAX_SUBJECT) -> str:
    """Return `value` fit for an unstructured header or a display name (never raises).

    Control characters and line breaks become spaces, runs of whitespace collapse, `=?` (the start
    of an RFC 2047 encoded word) is broken so the receiving side cannot decode a hidden payload,
    and the result is capped at `max_len` characters.
    """
    text = _UNSAFE_RE.sub(" ", str(value))
    text = " ".join(text.split())
    text = text.replace("=?", "= ?").replace("?=", "? =")
    if len(text) > max_len:
        text = text[: max_len - 1].rstrip() + "…"
    return text


def clean_display_name(value: str) -> str:
    return clean_header_text(value, MAX_DISPLAY_NAME)


def split_address(address: str) -> tuple[str, str]:
    """Split a bare `local@domain` into its parts; raise UnsafeHeaderError when it is not one."""
    if not isinstance(address, str) or _UNSAFE_RE.search(address) or _SPACE_RE.search(address):
        raise UnsafeHeaderError("email address contains whitespace or control characters")
    local, sep, domain = address.rpartition("@")
    if not sep or not _LOCAL_RE.fullmatch(local) or not _DOMAIN_RE.fullmatch(domain):
        raise UnsafeHeaderError(f"not a plain email address: {address!r}")
    if len(local) > MAX_LOCAL_PART:
        raise UnsafeHeaderError("email address local part is longer than 64 characters")
    return local, domain


def check_address(address: str) -> str:
    """Return `address` unchanged when it is a plain, header-safe `local@domain`; else raise."""
    split_address(address)
    return address


def check_message_id(value: str) -> str:
    """Return a `<id@domain>` message id unchanged when it is header-safe; else raise."""
    if not isinstance(value, str) or not _MSGID_RE.fullmatch(value) or len(value) > 250:
        raise UnsafeHeaderError(f"not a safe Message-ID: {value!r}")
    return value


def is_safe_message_id(value: str) -> bool:
    try:
        check_message_id(value)
    except UnsafeHeaderError:
        return False
    return True


def plus_address(from_address: str, token: str) -> str:
    """`local@domain` + token -> `local+TOKEN@domain` (the Reply-To / VERP envelope sender)."""
    if not _TOKEN_RE.fullmatch(token):
        raise UnsafeHeaderError("token must be letters, digits, '-' or '_'")
    local, domain = split_address(from_address)
    address = f"{local}+{token}@{domain}"
    split_address(address)  # checks the 64-character local part limit
    return address

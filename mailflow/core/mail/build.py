"""Write an outgoing email as bytes: RFC 5322 headers, RFC 2047 encoded words, multipart/alternative.

Why not `email.message.EmailMessage`: with `policy=default` building one message costs ~2 ms (every
header value is parsed back by the header registry, then folded again when flattened), which made
composing, not SMTP, the limit of the outbox. Our messages have one fixed shape, so they are
written directly, and the output is exactly what the code below says.

Header safety does not depend on the `email` package here (CVE-2024-6923 is in its folder):
- every value reaching this module was neutralised or checked by `mailflow.core.addresses`
  (no control character or line break of any kind, addresses and Message-IDs validated);
- `header()` refuses (ValueError) any value that still holds CR, LF or another control character;
- non-ASCII text is carried only inside base64 encoded words (`=?utf-8?b?...?=`), whose alphabet
  cannot hold a line break; the only line breaks in a header are the folds this module writes
  (CRLF followed by a space), at most 78 characters apart for everything but an over-long token;
- bodies are quoted-printable (`binascii.b2a_qp`), lines of at most 76 characters, CRLF endings;
  the MIME boundary starts with `=_`, which quoted-printable output can never contain.
tests/unit/test_build.py re-parses the output with the stdlib's strict parser and checks all of this.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence

MAX_LINE = 78
_CTL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029\u0085]")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_ENCODED_WORD_BYTES = 39  # 52 base64 characters: a 64-character word ("=?utf-8?b?" + 52 + "?=")


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text


def encoded_words(text: str) -> list[str]:
    """`text` as base64 encoded words, split on character boundaries (never inside a UTF-8 sequence)."""
    data = text.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _ENCODED_WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back to the character's start
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return words


def _phrase_tokens(text: str) -> list[str]:
    """Unstructured text as foldable tokens: its words, or encoded words when it is not plain ASCII."""
    return encoded_words(text) if _needs_encoding(text) else text.split(" ")


def display_name_tokens(name: str) -> list[str]:
    """A display name as tokens: plain atoms, one quoted-string, or encoded words (RFC 5322 3.2.5, RFC 2047 5(3))."""
    if not name:
        return []
    if _needs_encoding(name):
        return encoded_words(name)
    if _SPECIALS.search(name):
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return name.split(" ")


def fold(name: str, tokens: Iterable[str]) -> str:
    """`Name: tok tok ...` folded (CRLF + space) so that lines stay within 78 characters."""
    line, lines = f"{name}:", []
    for token in tokens:
        if not token:
            continue
        if len(line) + 1 + len(token) > MAX_LINE and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = " " + token
        else:
            line = f"{line} {token}"
    lines.append(line)
    return "\r\n".join(lines)


def header(name: str, tokens: Sequence[str]) -> str:
    for token in tokens:
        if _CTL.search(token):
            raise ValueError(f"refusing a control character or line break in the {name} header")
    return fold(name, tokens)


def address_header(name: str, display_name: str, addr_spec: str) -> str:
    """`Name: Display <local@domain>`; `addr_spec` was checked by mailflow.core.addresses.check_address."""
    return header(name, [*display_name_tokens(display_name), f"<{addr_spec}>"])


def text_header(name: str, value: str) -> str:
    return header(name, _phrase_tokens(value))


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line endings (soft breaks at 76 characters)."""
    body = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def alternative(headers: Sequence[str], text: str, html: str, boundary: str | None = None) -> bytes:
    """A multipart/alternative message (text, then HTML) under `headers` (each already folded)."""
    boundary = boundary or f"=_mf_{secrets.token_hex(12)}"
    head = "\r\n".join([*headers, "MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"'])
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    out = [
        head.encode("ascii"), b"\r\n\r\n",
        f"--{boundary}\r\n".encode(), part.format("plain").encode(), quoted_printable(text), b"\r\n",
        f"--{boundary}\r\n".encode(), part.format("html").encode(), quoted_printable(html), b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]  # fmt: skip
    return b"".join(out)

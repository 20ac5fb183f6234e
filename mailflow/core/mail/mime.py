"""Safe MIME reading: bounded parsing, tolerant headers and charsets, the visible text part.

Every function here tolerates malformed input: a header that does not decode comes back as
best-effort text, a part in an unknown charset is decoded with a fallback, a structure deeper
or wider than the limits is cut (and the caller is told why), never an exception.

We parse with the compat32 policy: its headers are plain strings that are never parsed lazily,
so no header access can raise (the default policy's header objects raise on some malformed
headers). Headers are decoded here, on demand, inside guards.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses

from mailflow.core.mail.htmltext import html_to_text

_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")
_CONTAINER_RE = re.compile(rb"boundary\s*=|message/(?:rfc822|global|delivery-status)", re.I)


class LimitExceeded(Exception):
    """Raised inside this package only, to abandon a message that exceeds a limit."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def parse_bytes(raw: bytes, *, max_parts: int) -> Message:
    """Parse raw bytes into a compat32 Message, refusing structures that are too big to parse.

    A cheap pre-scan counts container declarations (multipart boundaries, embedded messages):
    the stdlib parser recurses once per nesting level and is quadratic in nesting, so a
    message declaring more containers than we accept parts is refused before parsing.
    """
    if len(_CONTAINER_RE.findall(raw)) > max_parts:
        raise LimitExceeded("too_many_parts")
    try:
        return BytesParser(policy=policy.compat32).parsebytes(raw)
    except RecursionError as exc:
        raise LimitExceeded("too_deep") from exc


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text bytes: declared charset if it is real and fits, else utf-8, cp1252, latin-1."""
    declared = _codec_name(charset)
    if declared in {"ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}:
        # Mislabelled UTF-8 is common; valid multi-byte UTF-8 is almost never accidental.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    for name in ((declared,) if declared else ()) + _FALLBACK_CHARSETS:
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1", errors="replace")  # pragma: no cover - latin-1 never fails


def _codec_name(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"').lower()).name
    except (LookupError, ValueError, TypeError):
        return None


def _unescape(value: str) -> str:
    """compat32 keeps raw 8-bit header bytes as surrogate escapes: recover them as text."""
    if value.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in value):  # isascii: the common case, in C
        return value
    return decode_bytes(value.encode("ascii", errors="surrogateescape"))


def decode_header_value(value: object) -> str:
    """RFC 2047-decode and unfold one raw header value; never raises."""
    text = _unescape(str(value)) if not isinstance(value, str) else _unescape(value)
    if "=?" not in text:  # no encoded-word: what decode_header would hand back, unfolded (its regex is the cost)
        return " ".join(text.split())
    try:
        chunks = decode_header(text)
    except Exception:  # malformed encoded-words: keep the raw text
        return " ".join(text.split())
    out: list[str] = []
    for chunk, charset in chunks:
        out.append(decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk)
    # decode_header drops the whitespace between encoded and plain words inconsistently.
    return " ".join("".join(out).split()) if len(chunks) == 1 else _join_chunks(out)


def _join_chunks(parts: list[str]) -> str:
    return " ".join(" ".join(p.split()) for p in parts if p.strip())


def header(msg: Message, name: str) -> str | None:
    """The first value of a header, decoded, or None."""
    values = headers(msg, name)
    return values[0] if values else None


def raw_values(msg: Message, name: str) -> list[str]:
    """All stored values of a header as text (8-bit bytes recovered), nothing decoded yet.

    compat32 would hand back 8-bit values as Header objects whose str() loses the bytes, so
    this reads the stored strings directly.
    """
    wanted = name.lower()
    try:
        items = msg.raw_items()
        return [_unescape(str(v)) for k, v in items if str(k).lower() == wanted]
    except Exception:
        return []


def headers(msg: Message, name: str) -> list[str]:
    """All values of a header, decoded."""
    return [decode_header_value(v) for v in raw_values(msg, name)]


def raw_header(msg: Message, name: str) -> str | None:
    """The first raw (undecoded, unfolded) value: for ids and addresses, which are ASCII."""
    values = raw_values(msg, name)
    return " ".join(values[0].split()) if values else None


def addresses(msg: Message, name: str) -> list[str]:
    """addr-specs of an address header (case kept), skipping empty and malformed ones."""
    try:
        pairs = getaddresses(raw_values(msg, name))
    except Exception:
        return []
    return [addr.strip() for _, addr in pairs if "@" in addr and " " not in addr.strip()]


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def param(part: Message, name: str, header_name: str = "content-type") -> str | None:
    try:
        value = part.get_param(name, header=header_name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231 value
        try:
            return decode_bytes(value[2].encode("latin-1", "surrogateescape"), value[0])
        except Exception:
            return None
    return str(value) if value is not None else None


def is_attachment(part: Message) -> bool:
    try:
        disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    except Exception:
        return False
    return disposition == "attachment"


def payload_bytes(part: Message) -> bytes:
    """The decoded payload of a leaf part (base64 / quoted-printable), never raising."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("ascii", errors="surrogateescape")
    return b""


def part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(payload_bytes(part), charset)


@dataclass(frozen=True)
class Walk:
    parts: tuple[tuple[Message, int, bool], ...]  # (part, depth, inside an embedded message)
    problem: str | None


def walk(msg: Message, *, max_parts: int, max_depth: int) -> Walk:
    """Iterate the MIME tree without recursion, within the limits (a cut sets `problem`)."""
    out: list[tuple[Message, int, bool]] = []
    problem: str | None = None
    stack: list[tuple[Message, int, bool]] = [(msg, 0, False)]
    while stack:
        part, depth, embedded = stack.pop()
        if len(out) >= max_parts:
            problem = "too_many_parts"
            break
        if depth > max_depth:
            problem = problem or "too_deep"
            continue
        out.append((part, depth, embedded))
        children = _children(part)
        inner = embedded or content_type(part) in {"message/rfc822", "message/global"}
        stack.extend((child, depth + 1, inner) for child in reversed(children))
    return Walk(tuple(out), problem)


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def iter_leaves(w: Walk) -> Iterator[tuple[Message, bool]]:
    for part, _, embedded in w.parts:
        if not _children(part):
            yield part, embedded


def visible_text(w: Walk) -> str:
    """The text a person wrote: the first inline text/plain part, else the first HTML one.

    Parts inside an embedded message (a forwarded or quoted original) and attachments are not
    the reply. An empty text/plain alternative yields to the HTML one.
    """
    plain: str | None = None
    html: str | None = None
    for part, embedded in iter_leaves(w):
        if embedded or is_attachment(part):
            continue
        ctype = content_type(part)
        if ctype == "text/plain" and plain is None:
            text = part_text(part)
            if text.strip():
                plain = text
        elif ctype == "text/html" and html is None:
            html = part_text(part)
    if plain is not None:
        return plain
    if html is not None:
        return html_to_text(html)
    return ""

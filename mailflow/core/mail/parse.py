"""Entry points: raw inbound bytes -> ParsedMessage (never raises), and the `parse --json` report.

Classification order: bounce (DSN or known non-standard bounce) > auto-reply (headers, then
subject) > human reply (some visible text) > other. Problems are short codes, never personal
data: too_large, too_many_parts, too_deep, no_headers, no_text, unparseable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.message import Message
from typing import Any

from mailflow.core.mail import autoreply, mime, quotes
from mailflow.core.mail.bounce import BounceInfo, detect_bounce
from mailflow.core.mail.intent import Vocabulary, classify_intent
from mailflow.core.model import EmailKind, MessageKind

__all__ = ["BounceInfo", "ParsedMessage", "classify_intent", "parse_message", "parse_report"]

_MSGID_RE = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class ParsedMessage:
    kind: MessageKind
    message_id: str | None  # "<...>" as in the header, or None
    raw_sha256: str  # hex digest of the raw bytes (dedup key when no Message-ID)
    from_addr: str | None  # lower-cased addr-spec of From
    recipients: tuple[str, ...]  # To, Cc, Delivered-To, X-Original-To (case kept: tokens)
    references: tuple[str, ...]  # In-Reply-To then References, deduplicated
    subject: str
    text: str  # visible reply text; "" for bounces
    bounce: BounceInfo | None
    auto_submitted: bool  # any auto-reply marker present
    problem: str | None  # why it is `other` or degraded; never personal data
    auth_results: tuple[str, ...] = ()  # Authentication-Results headers, top (newest) first


def parse_message(raw: bytes, *, max_bytes: int = 25 * 1024 * 1024, max_parts: int = 500, max_depth: int = 20) -> ParsedMessage:
    """Read one inbound message. Never raises: unreadable input is kind `other` with a problem."""
    digest = hashlib.sha256(raw if isinstance(raw, bytes | bytearray) else b"").hexdigest()
    if not isinstance(raw, bytes | bytearray) or len(raw) > max_bytes:
        return _other(digest, "too_large" if isinstance(raw, bytes | bytearray) else "unparseable")
    try:
        msg = mime.parse_bytes(bytes(raw), max_parts=max_parts)
        return _read(msg, digest, max_parts=max_parts, max_depth=max_depth)
    except mime.LimitExceeded as exc:
        return _other(digest, exc.problem)
    except RecursionError:
        return _other(digest, "too_deep")
    except Exception:  # the contract: a bad email is data, never a crash
        return _other(digest, "unparseable")


def _other(digest: str, problem: str) -> ParsedMessage:
    return ParsedMessage(MessageKind.OTHER, None, digest, None, (), (), "", "", None, False, problem)


def _read(msg: Message, digest: str, *, max_parts: int, max_depth: int) -> ParsedMessage:
    if not msg.keys():
        return _other(digest, "no_headers")  # not an email: garbage or a bare body
    w = mime.walk(msg, max_parts=max_parts, max_depth=max_depth)
    subject = mime.header(msg, "subject") or ""
    from_list = mime.addresses(msg, "from")
    from_addr = from_list[0].lower() if from_list else None
    auto = autoreply.is_auto_reply(msg, subject)
    bounce = _guarded(lambda: detect_bounce(msg, w, from_addr, subject))
    text = "" if bounce else _guarded(lambda: quotes.visible_reply(mime.visible_text(w))) or ""
    if bounce:
        kind = MessageKind.BOUNCE
    elif auto:
        kind = MessageKind.AUTO_REPLY
    elif text:
        kind = MessageKind.REPLY
    else:
        kind = MessageKind.OTHER
    problem = w.problem or (None if text or kind is not MessageKind.OTHER else "no_text")
    return ParsedMessage(
        kind=kind,
        message_id=_message_id(msg),
        raw_sha256=digest,
        from_addr=from_addr,
        recipients=_recipients(msg),
        references=_references(msg),
        subject=subject,
        text=text,
        bounce=bounce,
        auto_submitted=auto,
        problem=problem,
        auth_results=tuple(" ".join(v.split()) for v in _raw_all(msg, "authentication-results")),
    )


def _guarded(fn: Any) -> Any:
    """Run one reading step; a failure there degrades the result instead of losing it."""
    try:
        return fn()
    except RecursionError:
        return None
    except Exception:
        return None


def _message_id(msg: Message) -> str | None:
    match = _MSGID_RE.search(mime.raw_header(msg, "message-id") or "")
    return match.group(0) if match else None


def _references(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("in-reply-to", "references"):
        for value in _raw_all(msg, name):
            for ref in _MSGID_RE.findall(value):
                if ref not in found:
                    found.append(ref)
    return tuple(found)


def _raw_all(msg: Message, name: str) -> list[str]:
    return mime.raw_values(msg, name)


def _recipients(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("to", "cc", "delivered-to", "x-original-to"):
        for addr in mime.addresses(msg, name):
            if addr not in found:
                found.append(addr)
    return tuple(found)


def parse_report(raw: bytes, vocabulary: Vocabulary, replied_kind: EmailKind | None = None) -> dict[str, Any]:
    """Exactly the JSON shape of `mailflow parse FILE.eml --json`."""
    parsed = parse_message(raw)
    intent = None
    if parsed.kind is MessageKind.REPLY:
        intent = str(classify_intent(parsed.text, replied_kind=replied_kind, vocabulary=vocabulary))
    bounce = None
    if parsed.bounce is not None:
        bounce = {"recipients": list(parsed.bounce.recipients), "permanent": parsed.bounce.permanent}
    return {"kind": str(parsed.kind), "intent": intent, "text": parsed.text, "bounce": bounce}

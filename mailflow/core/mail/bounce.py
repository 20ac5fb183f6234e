"""Is a message a bounce or a delay notice? Which addresses failed, permanently or not?

RFC 3464 DSNs are read directly (per recipient: Action and Status; 5.x.x is permanent, 4.x.x or
`Action: delayed` temporary). Non-standard bounces go to flufl.bounce's detectors, but only
when the message looks machine-made (a DSN part, a daemon sender or a bounce subject): its
heuristic detectors would otherwise fire on human text that merely mentions a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from flufl.bounce import all_failures

from mailflow.core.mail.mime import (
    Walk,
    content_type,
    decode_bytes,
    param,
    payload_bytes,
    raw_header,
)

_DAEMON_LOCALPARTS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon", "ndr"}
_DAEMON_NAME_RE = re.compile(r"mail delivery (?:system|subsystem)|mailer.?daemon|postmaster", re.I)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|non-?delivery|delivery (?:status notification|failure|has failed|failed|notification)|"
    r"mail delivery failed|returned mail|failure notice|could not be delivered|"
    r"delivery problem|nondeliverable|non[- ]remis|non distribu|echec de (?:la )?remise|"
    r"remise impossible|delayed mail|delivery delayed|warning: could not send|"
    r"message not delivered|unzustellbar|nicht zugestellt|mail error|returned to sender",
    re.I,
)
_DELAY_RE = re.compile(
    r"delay|warning|retard|temporar|will (?:retry|continue)|still (?:being )?(?:retried|trying)|"
    r"not yet been delivered",
    re.I,
)
_ADDR_RE = re.compile(r"[^\s<>;\"']+@[^\s<>;\"']+")


@dataclass(frozen=True)
class BounceInfo:
    recipients: tuple[str, ...]  # lower-cased failed addresses
    permanent: bool  # 5.x.x -> True; 4.x.x / delay notices -> False
    original_message_id: str | None  # Message-ID of the attached original ("<...>" form)


def detect_bounce(msg: Message, w: Walk, from_addr: str | None, subject: str) -> BounceInfo | None:
    """A BounceInfo when `msg` reports a failed or delayed delivery, else None."""
    original_id = _original_message_id(w)
    status_parts = [p for p, _, _ in w.parts if content_type(p) == "message/delivery-status"]
    for part in status_parts:
        found = _read_dsn(part)
        if found is not None:
            return BounceInfo(found[0], found[1], original_id)
    if status_parts and all(_only_successes(p) for p in status_parts):
        return None  # a success notification (Action: delivered/relayed) is no bounce
    dsn = bool(status_parts) or report_type(msg) == "delivery-status"
    machine = dsn or _is_daemon(msg, from_addr) or bool(_BOUNCE_SUBJECT_RE.search(subject))
    if not machine:
        return None
    temporary, hard = _flufl(msg)
    if temporary or hard:
        return BounceInfo(tuple(sorted(hard | temporary)), bool(hard), original_id)
    if dsn or (_BOUNCE_SUBJECT_RE.search(subject) and (_is_daemon(msg, from_addr) or original_id or _has_original(w))):
        return BounceInfo((), not _DELAY_RE.search(subject), original_id)
    return None


def report_type(msg: Message) -> str | None:
    """`report-type` of a top-level multipart/report (delivery-status, disposition-notification)."""
    if content_type(msg) != "multipart/report":
        return None
    value = param(msg, "report-type")
    return value.strip().lower() if value else None


def _has_original(w: Walk) -> bool:
    return any(content_type(p) in {"message/rfc822", "text/rfc822-headers"} for p, _, _ in w.parts)


def _is_daemon(msg: Message, from_addr: str | None) -> bool:
    if from_addr and from_addr.split("@")[0] in _DAEMON_LOCALPARTS:
        return True
    if not from_addr and "<>" in (raw_header(msg, "from") or ""):
        return True
    return bool(_DAEMON_NAME_RE.search(raw_header(msg, "from") or ""))


def _flufl(msg: Message) -> tuple[set[str], set[str]]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd input: no verdict from flufl
        return set(), set()
    return _addresses(temporary), _addresses(permanent)


def _addresses(found: object) -> set[str]:
    out: set[str] = set()
    for item in found or ():  # type: ignore[attr-defined]
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        text = text.strip().strip("<>").lower()
        if "@" in text:
            out.add(text)
    return out


def _read_dsn(part: Message) -> tuple[tuple[str, ...], bool] | None:
    """(failed recipients, permanent) from a delivery-status part; None when nothing failed."""
    permanent = False
    recipients: list[str] = []
    for fields in _dsn_blocks(part):
        addr = _dsn_recipient(fields)
        action = fields.get("action", "").split()[0].lower() if fields.get("action") else ""
        status = fields.get("status", "").strip()
        if addr is None or action in {"delivered", "relayed", "expanded"}:
            continue
        if not action and not status:
            continue
        if status.startswith("2") and action != "failed":
            continue
        # "failed" means the MTA gave up (even on a 4.x.x, e.g. 4.4.7 expired): permanent.
        if action == "failed" or (action != "delayed" and status.startswith("5")):
            permanent = True
        recipients.extend(a for a in addr if a not in recipients)
    return (tuple(recipients), permanent) if recipients else None


def _only_successes(part: Message) -> bool:
    actions = [f.get("action", "").lower() for f in _dsn_blocks(part) if _dsn_recipient(f)]
    return bool(actions) and all(a.startswith(("delivered", "relayed", "expanded")) for a in actions)


def _dsn_blocks(part: Message) -> list[dict[str, str]]:
    """Field groups of a delivery-status body: per-message first, then one per recipient."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append({k.lower(): " ".join(str(v).split()) for k, v in sub.items()})
        return blocks
    text = decode_bytes(payload_bytes(part))
    for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        for line in chunk.split("\n"):
            key, sep, value = line.partition(":")
            if sep and key.strip() and " " not in key.strip():
                fields[key.strip().lower()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _dsn_recipient(fields: dict[str, str]) -> list[str] | None:
    """The address we sent to (Original-Recipient) first, then the final one."""
    found: list[str] = []
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = fields.get(name)
        match = _ADDR_RE.search(value.split(";", 1)[-1]) if value else None
        if match and match.group(0).strip("<>.,").lower() not in found:
            found.append(match.group(0).strip("<>.,").lower())
    return found or None


def _original_message_id(w: Walk) -> str | None:
    for part, _, _ in w.parts:
        ctype = content_type(part)
        headers: Message | None = None
        if ctype in {"message/rfc822", "message/global"}:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]
        elif ctype == "text/rfc822-headers":
            try:
                text = decode_bytes(payload_bytes(part))
                headers = HeaderParser(policy=compat32).parsestr(text, headersonly=True)
            except Exception:
                headers = None
        if headers is not None:
            value = raw_header(headers, "message-id")
            match = re.search(r"<[^<>\s]+>", value or "")
            if match:
                return match.group(0)
    return None

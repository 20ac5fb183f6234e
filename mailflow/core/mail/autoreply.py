"""Is a message an automatic reply (out-of-office, vacation, auto-responder)? Headers, then subject.

`X-Auto-Response-Suppress` is deliberately not a marker: Outlook puts it on ordinary mail.
"""

from __future__ import annotations

import re
import unicodedata
from email.message import Message

from mailflow.core.mail.mime import content_type, header, param

_PRESENT_MARKERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-autoreply-from",
    "x-mail-autoreply",
    "x-ms-exchange-inbox-rules-loop",
    "x-vacation",
)
_PRECEDENCE = {"auto_reply", "auto-reply", "bulk", "junk"}

_SUBJECT_RE = re.compile(
    r"reponse automatique|absence du bureau|absent(?:e)? du bureau|message d'absence|"
    r"notification d'absence|"
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse|"
    r"vacation (?:reply|message|notice)|away from (?:the )?office|"
    r"abwesenheitsnotiz|automatische antwort|"
    r"respuesta automatica|fuera de la oficina|risposta automatica|fuori ufficio|"
    r"automatisch antwoord|autosvar|automaattinen vastaus"
)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("’", "'")


def has_auto_headers(msg: Message) -> bool:
    """Header markers of an automatic message (RFC 3834 and the common vendor ones)."""
    auto_submitted = header(msg, "auto-submitted")
    if auto_submitted is not None:
        value = auto_submitted.split(";")[0].strip().lower()
        if value and value != "no":
            return True
    for name in _PRESENT_MARKERS:
        marker = header(msg, name)
        if marker is not None and marker.strip().lower() not in {"no", "false", "0"}:
            return True
    precedence = (header(msg, "precedence") or "").strip().lower()
    return precedence in _PRECEDENCE


def has_auto_subject(subject: str) -> bool:
    return bool(_SUBJECT_RE.search(_fold(subject)))


def is_auto_reply(msg: Message, subject: str) -> bool:
    """Auto-reply headers or subject; read receipts (MDNs) are automatic too."""
    return has_auto_headers(msg) or has_auto_subject(subject) or _is_receipt(msg)


def _is_receipt(msg: Message) -> bool:
    if content_type(msg) != "multipart/report":
        return False
    return (param(msg, "report-type") or "").strip().lower() == "disposition-notification"

"""Which of our emails a reply answers, from its subject alone (when no token or Message-ID says it)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from mailflow.core.model import EmailKind
from mailflow.render import KIND_ROLES, LANGUAGES, Renderer, sample_context

_PREFIX = re.compile(r"^\s*((re|r[ée]f|rep|tr|fw|fwd|aw|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.replace("\u00a0", " ").replace("\u202f", " "))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.lower().split())


@lru_cache(maxsize=1)
def _subject_stems() -> tuple[tuple[str, EmailKind], ...]:
    renderer = Renderer()
    stems = []
    for kind, roles in KIND_ROLES.items():
        if kind in (EmailKind.DIGEST, EmailKind.URGENT_ALERT):
            continue
        for lang in LANGUAGES:
            for role in roles:
                subject = renderer.render(kind, lang, sample_context(kind, lang, role)).subject
                stems.append((_fold(subject.split(" — ")[0]), kind))
    return tuple(sorted(set(stems), key=lambda s: -len(s[0])))


def kind_from_subject(subject: str) -> EmailKind | None:
    """The kind whose subject a reply's `Re: ...` subject repeats, or None."""
    stripped = _fold(_PREFIX.sub("", subject or ""))
    for stem, kind in _subject_stems():
        if stem and stripped.startswith(stem):
            return kind
    return None

"""Visible reply text -> Intent: quick codes, vocabulary phrases with negation, reply context.

Order of reasoning:
1. `support_needed` phrases win over everything, negated or not (we err toward escalation).
2. Candidates: a quick code on the first line ("1", "2 -", "3.") and every vocabulary phrase
   not negated within its clause ("pas de problème", "je ne souhaite pas arrêter").
3. The strongest candidate wins: stop > difficulty > met > unavailable/available/continue > ok.
4. When nothing beyond `ok` was found, the email answered (`replied_kind`) gives meaning to a
   short yes/no: "oui" to a checkpoint is `continue`, "non" to a closure `unavailable`.
Matching is case- and accent-insensitive (text and patterns are folded the same way).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from mailflow.core.model import EmailKind, Intent

PRECEDENCE: tuple[Intent, ...] = (
    Intent.STOP,
    Intent.DIFFICULTY,
    Intent.MET,
    Intent.UNAVAILABLE,
    Intent.AVAILABLE,
    Intent.CONTINUE,
    Intent.OK,
)
_CODE_RE = re.compile(r"^\s*\(?([0-9])\)?\s*(?:$|[.):=\]/-]|\s+[-:=/])")
_CLAUSE_BREAK_RE = re.compile(r"[.,!?;:\n()]|\b(?:mais|but|pour|et|and|car|because|parce|donc|so|puis|then|however|cependant)\b")
_TOKEN_RE = re.compile(r"[\w']+")
_NEGATION_WINDOW = 5
_SECOND_PARTICLES = {"plus", "rien", "guere", "jamais", "personne"}


@dataclass(frozen=True)
class Answers:
    """What a short yes/no means in reply to one kind of email."""

    yes: Intent | None = None
    no: Intent | None = None


@dataclass(frozen=True)
class Vocabulary:
    """Plain data the intent classifier works on (built from a TOML file by the shell)."""

    phrases: Mapping[Intent, tuple[str, ...]]  # regexes, matched on folded text
    negations: tuple[str, ...] = ()  # regexes matching one negating token
    codes: Mapping[str, Intent] = field(default_factory=dict)  # "1" -> ok
    yes_words: tuple[str, ...] = ()
    no_words: tuple[str, ...] = ()
    max_answer_words: int = 6
    context: Mapping[EmailKind | None, Answers] = field(default_factory=dict)


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes and spaces made plain."""
    text = text.replace("’", "'").replace("‘", "'").replace("\u00a0", " ").replace("\u202f", " ")
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    valid: list[str] = []
    for pattern in patterns:
        source = fold(pattern)
        try:
            re.compile(source)
        except re.error:
            source = re.escape(source)
        valid.append(f"(?:{source})")
    if not valid:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(valid) + r")(?![\w])")


def classify_intent(text: str, *, replied_kind: EmailKind | None, vocabulary: Vocabulary) -> Intent:
    """The intent of a reply's visible text; `unknown` when empty or unrecognised."""
    folded = fold(text)
    if not folded.strip():
        return Intent.UNKNOWN
    if _matches(folded, vocabulary.phrases.get(Intent.SUPPORT_NEEDED, ()), vocabulary, negatable=False):
        return Intent.SUPPORT_NEEDED
    candidates = set(_phrase_candidates(folded, vocabulary))
    code = _code(folded, vocabulary)
    if code is not None:
        candidates.add(code)
    best = next((intent for intent in PRECEDENCE if intent in candidates), None)
    if best in (None, Intent.OK):
        best = _contextual(folded, best, replied_kind, vocabulary)
    return best or Intent.UNKNOWN


def _phrase_candidates(folded: str, vocabulary: Vocabulary) -> list[Intent]:
    return [
        intent
        for intent, patterns in vocabulary.phrases.items()
        if intent is not Intent.SUPPORT_NEEDED and _matches(folded, patterns, vocabulary, negatable=True)
    ]


def _matches(folded: str, patterns: tuple[str, ...], vocabulary: Vocabulary, *, negatable: bool) -> bool:
    regex = _compile(tuple(patterns))
    if regex is None:
        return False
    for match in regex.finditer(folded):
        if not negatable or _self_negated(match.group(0), vocabulary):
            return True  # "pas de nouvelles", "ne répond pas": the phrase carries its negation
        if not _negated(folded[: match.start()], vocabulary):
            return True
    return False


def _self_negated(matched: str, vocabulary: Vocabulary) -> bool:
    negation = _compile(tuple(vocabulary.negations))
    first = _TOKEN_RE.match(matched)
    if not first:
        return False
    # "plus disponible", "rien à signaler": second halves of ne...plus / ne...rien
    return first.group(0) in _SECOND_PARTICLES or bool(negation and negation.fullmatch(first.group(0)))


def _negated(before: str, vocabulary: Vocabulary) -> bool:
    """A negating word among the last few words of the clause before a match."""
    negation = _compile(tuple(vocabulary.negations))
    if negation is None:
        return False
    clause = _CLAUSE_BREAK_RE.split(before[-200:])[-1]
    tokens = _TOKEN_RE.findall(clause)[-_NEGATION_WINDOW:]
    return any(negation.fullmatch(token) for token in tokens)


def _code(folded: str, vocabulary: Vocabulary) -> Intent | None:
    first = next((line for line in folded.split("\n") if line.strip()), "")
    match = _CODE_RE.match(first)
    return vocabulary.codes.get(match.group(1)) if match else None


def _contextual(folded: str, best: Intent | None, replied_kind: EmailKind | None, vocabulary: Vocabulary) -> Intent | None:
    answers = vocabulary.context.get(replied_kind) or vocabulary.context.get(None)
    if answers is None:
        return best
    words = _TOKEN_RE.findall(folded)
    short = 0 < len(words) <= vocabulary.max_answer_words
    bare = " ".join(words)
    if short and answers.no and _starts_with(bare, vocabulary.no_words):
        return answers.no
    if answers.yes and (best is Intent.OK or (short and _starts_with(bare, vocabulary.yes_words))):
        return answers.yes
    return best


def _starts_with(bare: str, words: tuple[str, ...]) -> bool:
    regex = _compile(tuple(words))
    return bool(regex and regex.match(bare))

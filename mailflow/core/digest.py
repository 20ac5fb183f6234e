"""A referent's daily digest, as plain data: their pairs, open flags and recent facts + `now` -> sections and counts.

Pure (no database, no clock). What goes into an email is decided here, so the privacy rules are
tested here: pair refs and first names only; the text of a `support_needed` reply never appears
(its flag carries no excerpt: the caller never reads one for it, and `build_digest` ignores any);
review excerpts are short and stripped of URLs, addresses and phone numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from mailflow.core.calendar import add_months, local_date
from mailflow.core.commands import SYNTAX
from mailflow.core.model import FlagKind, FlagReason, Role, State
from mailflow.core.policy import Policy

EXCERPT_CHARS = 160
CHECKPOINT_HORIZON_DAYS = 7


@dataclass(frozen=True)
class PersonFacts:
    first_name: str
    phone: str = ""
    bounced: bool = False


@dataclass(frozen=True)
class PairFacts:
    ref: str
    state: State
    matched_on: date
    mentor: PersonFacts
    mentee: PersonFacts
    paused_until: date | None = None
    # local date of the introduction (day 0 of the first-contact window); read, and so gathered, only while awaiting first contact
    intro_on: date | None = None

    def person(self, who: Role | None) -> PersonFacts:
        return self.mentor if who is Role.MENTOR else self.mentee


@dataclass(frozen=True)
class FlagFacts:
    ref: str
    kind: FlagKind
    who: Role | None
    reason: str
    since: datetime
    attempt: int = 1
    excerpt: str = ""  # review flags only: the raw text of the reply that raised it (sanitised here)


@dataclass(frozen=True)
class Availability:
    ref: str
    first_name: str  # the mentor who said they are available again
    at: datetime


@dataclass(frozen=True)
class Ack:
    """A referent command recorded since the previous digest (from the audit log)."""

    at: datetime
    command: str  # call_done | close | pause | resume | read | urgent_handled | unknown
    outcome: str  # done | not_your_pair | no_open_call | refused | invalid_date | no_flag | not_understood
    ref: str = ""
    line: str = ""  # unknown commands: the line, truncated


@dataclass(frozen=True)
class DigestInput:
    language: str
    pairs: Sequence[PairFacts]
    flags: Sequence[FlagFacts]
    available: Sequence[Availability] = ()
    acks: Sequence[Ack] = ()


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Digest:
    date: date
    sections: tuple[Section, ...]
    counts: Mapping[str, int]
    commands_help: tuple[str, ...]
    nothing_new: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nothing_new", not any(s.items for s in self.sections))

    def payload(self) -> dict[str, Any]:
        """The outbox payload (JSON) that compose.digest_from_payload reads back."""
        return {
            "date": self.date.isoformat(),
            "sections": [{"key": s.key, "title": s.title, "items": list(s.items)} for s in self.sections if s.items],
            "counts": dict(self.counts),
            "commands_help": list(self.commands_help),
        }


# ---- sanitising ----

_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"\S+@\S+")
_PHONE = re.compile(r"\+?\d[\d\s.\-()/]{6,}\d")
_WS = re.compile(r"\s+")


def sanitise_excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short one-line excerpt without URLs, email addresses or phone numbers."""
    out = _URL.sub("[lien]", text)
    out = _EMAIL.sub("[adresse]", out)
    out = _PHONE.sub("[numéro]", out)
    out = _WS.sub(" ", out).strip()
    if len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"
    return out


# ---- labels ----

L: dict[str, dict[str, str]] = {
    "fr": {
        "urgent": "Urgent : à appeler en priorité",
        "calls": "Appels à passer",
        "review": "Réponses à lire",
        "first_contact": "Premier contact en retard / nouveau binôme à trouver",
        "closure": "Demandes d'arrêt à confirmer",
        "checkpoints": "Bilans des 6 mois cette semaine",
        "bounced": "Adresses e-mail refusées",
        "available": "Mentors disponibles pour un nouveau binôme",
        "acks": "Vos commandes prises en compte",
        "unknown": "Commandes non comprises (voir la syntaxe en bas)",
        "mentor": "mentor", "mentee": "mentoré(e)",
        "urgent_item": "{ref} — {name} ({role}) a écrit le {since} et a besoin d'aide. Le message n'est pas recopié ici : "
        "lisez-le avec « mailflow pairs show {ref} », puis appelez au {phone}. Ensuite : « urgent traité {ref} ».",
        "call_item": "{ref} — {name} ({role}), {phone} : {why} depuis le {since} ({days} j), tentative n° {attempt}",
        "no_reply": "pas de réponse au suivi", "bounce": "adresse e-mail refusée",
        "review_item": "{ref} — {name} ({role}), le {since} : « {excerpt} »",
        "review_bare": "{ref} — {name} ({role}), le {since} : message à lire avec « mailflow pairs show {ref} »",
        "overdue_item": "{ref} — {mentor} et {mentee} : pas de premier contact depuis {days} j (présentés le {intro})",
        "rematch_item": "{ref} — {name} (mentor) : binôme terminé sans contact le {since}, un(e) autre mentoré(e) à proposer",
        "closure_item": "{ref} — {name} ({role}) demande l'arrêt depuis le {since}. Pour confirmer : « clôture {ref} »",
        "closure_item_pair": "{ref} — {mentor} et {mentee} : arrêt demandé le {since}. Pour confirmer : « clôture {ref} »",
        "checkpoint_item": "{ref} — {mentor} et {mentee} : bilan des 6 mois le {day}",
        "bounced_item": "{ref} — adresse de {name} ({role}) refusée : corrigez-la (ré-import du binôme)",
        "available_item": "{ref} — {name} est disponible pour un(e) nouveau/nouvelle mentoré(e) (le {since})",
        "ack_item": "{ref} — {command} : {outcome}",
        "unknown_item": "non comprise : « {line} »",
        "call_done": "appel noté", "close": "clôture", "pause": "pause", "resume": "reprise", "read": "réponses lues",
        "urgent_handled": "urgence traitée",
        "done": "fait", "not_your_pair": "refusé, ce n'est pas un de vos binômes", "no_open_call": "aucun appel en attente",
        "refused": "impossible dans l'état actuel du binôme", "invalid_date": "date invalide (JJ/MM ou AAAA-MM-JJ, dans le futur)",
        "no_flag": "rien à effacer",
        "count_active": "binômes actifs", "count_awaiting": "en attente du premier contact", "count_closed": "clos",
        "count_ended": "terminés sans contact", "count_paused": "en pause", "count_calls": "appels à passer",
        "count_urgent": "urgences ouvertes", "count_review": "réponses à lire",
    },
    "en": {
        "urgent": "Urgent: call first",
        "calls": "Calls to make",
        "review": "Replies to read",
        "first_contact": "First contact overdue / new match needed",
        "closure": "Closure requests to confirm",
        "checkpoints": "Six-month reviews this week",
        "bounced": "Refused email addresses",
        "available": "Mentors available for a new mentee",
        "acks": "Your commands, done",
        "unknown": "Commands not understood (see the syntax below)",
        "mentor": "mentor", "mentee": "mentee",
        "urgent_item": "{ref} — {name} ({role}) wrote on {since} and needs help. The message is not copied here: "
        "read it with \"mailflow pairs show {ref}\", then call {phone}. Then: \"urgent handled {ref}\".",
        "call_item": "{ref} — {name} ({role}), {phone}: {why} since {since} ({days} d), attempt {attempt}",
        "no_reply": "no reply to the follow-up", "bounce": "email address refused",
        "review_item": "{ref} — {name} ({role}), {since}: \"{excerpt}\"",
        "review_bare": "{ref} — {name} ({role}), {since}: read it with \"mailflow pairs show {ref}\"",
        "overdue_item": "{ref} — {mentor} and {mentee}: no first contact for {days} d (introduced {intro})",
        "rematch_item": "{ref} — {name} (mentor): pair ended without contact on {since}, propose another mentee",
        "closure_item": "{ref} — {name} ({role}) asked to stop on {since}. To confirm: \"close {ref}\"",
        "closure_item_pair": "{ref} — {mentor} and {mentee}: stop requested on {since}. To confirm: \"close {ref}\"",
        "checkpoint_item": "{ref} — {mentor} and {mentee}: six-month review on {day}",
        "bounced_item": "{ref} — {name}'s address ({role}) was refused: correct it (re-import the pair)",
        "available_item": "{ref} — {name} is available for a new mentee ({since})",
        "ack_item": "{ref} — {command}: {outcome}",
        "unknown_item": "not understood: \"{line}\"",
        "call_done": "call recorded", "close": "close", "pause": "pause", "resume": "resume", "read": "replies read",
        "urgent_handled": "urgent handled",
        "done": "done", "not_your_pair": "refused, not one of your pairs", "no_open_call": "no call pending",
        "refused": "not possible in the pair's current state", "invalid_date": "invalid date (DD/MM or YYYY-MM-DD, in the future)",
        "no_flag": "nothing to clear",
        "count_active": "active pairs", "count_awaiting": "awaiting first contact", "count_closed": "closed",
        "count_ended": "ended without contact", "count_paused": "paused", "count_calls": "calls to make",
        "count_urgent": "open urgent items", "count_review": "replies to read",
    },
}  # fmt: skip


def _lang(language: str) -> str:
    return language if language in L else "fr"


def display_phone(phone: str) -> str:
    """+33612345678 -> 06 12 34 56 78 (non-breaking spaces: a number never wraps); others as stored."""
    if re.fullmatch(r"\+33\d{9}", phone):
        local = "0" + phone[3:]
        return "\u00a0".join(local[i : i + 2] for i in range(0, 10, 2))
    return phone or "?"


def _d(value: date | datetime, policy: Policy) -> str:
    day = local_date(value, policy) if isinstance(value, datetime) else value
    return day.strftime("%d/%m")


# ---- building ----


@dataclass(frozen=True)
class _Ctx:
    lang: str
    policy: Policy
    now: datetime
    pairs: Mapping[str, PairFacts]
    today: date  # local_date(now): read once per pair in several sections

    def t(self, key: str, **values: Any) -> str:
        return L[self.lang][key].format(**values)

    def role(self, who: Role | None) -> str:
        return L[self.lang][who.value] if who in (Role.MENTOR, Role.MENTEE) else ""

    def d(self, value: date | datetime) -> str:
        return _d(value, self.policy)

    def person(self, flag: FlagFacts) -> PersonFacts:
        return self.pairs[flag.ref].person(flag.who)


def _of(flags: Sequence[FlagFacts], kind: FlagKind) -> list[FlagFacts]:
    return sorted((f for f in flags if f.kind is kind), key=lambda f: (f.since, f.ref))


def _urgent(c: _Ctx, flags: Sequence[FlagFacts]) -> list[str]:
    # who wrote and since when -- never a word of what they wrote (the flag's excerpt is not read)
    return [
        c.t("urgent_item", ref=f.ref, name=c.person(f).first_name, role=c.role(f.who), since=c.d(f.since),
            phone=display_phone(c.person(f).phone))
        for f in _of(flags, FlagKind.URGENT)
    ]  # fmt: skip


def _calls(c: _Ctx, flags: Sequence[FlagFacts]) -> list[str]:
    out = []
    for f in _of(flags, FlagKind.CALL):
        why = c.t("bounce" if f.reason == FlagReason.BOUNCE else "no_reply")
        days = (c.today - local_date(f.since, c.policy)).days
        person = c.person(f)
        out.append(c.t("call_item", ref=f.ref, name=person.first_name, role=c.role(f.who), phone=display_phone(person.phone),
                       why=why, since=c.d(f.since), days=days, attempt=f.attempt))  # fmt: skip
    return out


def _reviews(c: _Ctx, flags: Sequence[FlagFacts]) -> list[str]:
    out = []
    for f in _of(flags, FlagKind.REVIEW):
        pair = c.pairs[f.ref]
        name = c.person(f).first_name if f.who else f"{pair.mentor.first_name} / {pair.mentee.first_name}"
        excerpt = sanitise_excerpt(f.excerpt) if f.reason != FlagReason.SUPPORT_NEEDED else ""
        key = "review_item" if excerpt else "review_bare"
        out.append(c.t(key, ref=f.ref, name=name, role=c.role(f.who), since=c.d(f.since), excerpt=excerpt))
    return out


def _first_contact(c: _Ctx, flags: Sequence[FlagFacts]) -> list[str]:
    overdue_after = c.policy.reminder_days[0] if c.policy.reminder_days else 7
    out = []
    for p in sorted(c.pairs.values(), key=lambda p: p.ref):
        if p.state is not State.AWAITING_FIRST_CONTACT or (p.paused_until and p.paused_until >= c.today):
            continue
        intro = p.intro_on or p.matched_on
        days = (c.today - intro).days
        if days >= overdue_after:
            out.append(c.t("overdue_item", ref=p.ref, mentor=p.mentor.first_name, mentee=p.mentee.first_name,
                           days=days, intro=c.d(intro)))  # fmt: skip
    for f in _of(flags, FlagKind.REMATCH):
        out.append(c.t("rematch_item", ref=f.ref, name=c.pairs[f.ref].mentor.first_name, since=c.d(f.since)))
    return out


def _closures(c: _Ctx, flags: Sequence[FlagFacts]) -> list[str]:
    out = []
    for f in _of(flags, FlagKind.CLOSURE_REQUESTED):
        pair = c.pairs[f.ref]
        if f.who in (Role.MENTOR, Role.MENTEE):
            out.append(c.t("closure_item", ref=f.ref, name=c.person(f).first_name, role=c.role(f.who), since=c.d(f.since)))
        else:
            out.append(c.t("closure_item_pair", ref=f.ref, mentor=pair.mentor.first_name, mentee=pair.mentee.first_name,
                           since=c.d(f.since)))  # fmt: skip
    return out


def _checkpoints(c: _Ctx) -> list[str]:
    out = []
    horizon = c.today + timedelta(days=CHECKPOINT_HORIZON_DAYS)
    for p in sorted(c.pairs.values(), key=lambda p: p.ref):
        if p.state is not State.ACTIVE:
            continue
        day = add_months(p.matched_on, c.policy.checkpoint_months)
        if c.today <= day < horizon:
            out.append(c.t("checkpoint_item", ref=p.ref, mentor=p.mentor.first_name, mentee=p.mentee.first_name,
                           day=c.d(day)))  # fmt: skip
    return out


def _bounced(c: _Ctx) -> list[str]:
    out = []
    for p in sorted(c.pairs.values(), key=lambda p: p.ref):
        if p.state is State.CLOSED:
            continue
        for who, person in ((Role.MENTOR, p.mentor), (Role.MENTEE, p.mentee)):
            if person.bounced:
                out.append(c.t("bounced_item", ref=p.ref, name=person.first_name, role=c.role(who)))
    return out


def _available(c: _Ctx, available: Sequence[Availability]) -> list[str]:
    return [
        c.t("available_item", ref=a.ref, name=a.first_name, since=c.d(a.at))
        for a in sorted(available, key=lambda a: (a.at, a.ref))
        if a.ref in c.pairs
    ]


def _acks(c: _Ctx, acks: Sequence[Ack]) -> tuple[list[str], list[str]]:
    done, unknown = [], []
    for a in sorted(acks, key=lambda a: a.at):
        if a.command == "unknown":
            unknown.append(c.t("unknown_item", line=a.line[:80]))
            continue
        command = L[c.lang].get(a.command, a.command)
        outcome = L[c.lang].get(a.outcome, a.outcome)
        done.append(c.t("ack_item", ref=a.ref or "?", command=command, outcome=outcome))
    return done, unknown


def _counts(c: _Ctx, flags: Sequence[FlagFacts]) -> dict[str, int]:
    by_state = {State.ACTIVE: "count_active", State.AWAITING_FIRST_CONTACT: "count_awaiting",
                State.CLOSED: "count_closed", State.ENDED_NO_CONTACT: "count_ended"}  # fmt: skip
    counts = {c.t(label): sum(1 for p in c.pairs.values() if p.state is state) for state, label in by_state.items()}
    counts[c.t("count_paused")] = sum(1 for p in c.pairs.values() if p.paused_until and p.paused_until >= c.today)
    for kind, label in ((FlagKind.CALL, "count_calls"), (FlagKind.URGENT, "count_urgent"), (FlagKind.REVIEW, "count_review")):
        counts[c.t(label)] = sum(1 for f in flags if f.kind is kind)
    return counts


def build_digest(inp: DigestInput, now: datetime, policy: Policy) -> Digest:
    """The digest of one referent at `now`: sections in the order of urgency, counts, the command syntax."""
    lang = _lang(inp.language)
    pairs = {p.ref: p for p in inp.pairs}
    c = _Ctx(lang, policy, now, pairs, local_date(now, policy))
    flags = [f for f in inp.flags if f.ref in pairs]  # only the referent's own pairs, whatever the caller passed
    acks, unknown = _acks(c, inp.acks)
    parts = [
        ("urgent", _urgent(c, flags)),
        ("calls", _calls(c, flags)),
        ("review", _reviews(c, flags)),
        ("first_contact", _first_contact(c, flags)),
        ("closure", _closures(c, flags)),
        ("checkpoints", _checkpoints(c)),
        ("bounced", _bounced(c)),
        ("available", _available(c, inp.available)),
        ("acks", acks),
        ("unknown", unknown),
    ]
    sections = tuple(Section(key, L[lang][key], tuple(items)) for key, items in parts)
    return Digest(c.today, sections, _counts(c, flags), SYNTAX[lang])

"""The digest's content, from plain data: sections, privacy rules, counts, the nothing-new case."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from mailflow.compose import digest_from_payload
from mailflow.core.commands import SYNTAX
from mailflow.core.digest import (
    Ack,
    Availability,
    DigestInput,
    FlagFacts,
    PairFacts,
    PersonFacts,
    build_digest,
    sanitise_excerpt,
)
from mailflow.core.model import FlagKind, Role, State
from mailflow.core.policy import Policy
from mailflow.render import RecipientInfo, Renderer, sample_context

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 10, 12, 8, 0, tzinfo=PARIS)  # a Monday
POLICY = Policy()


def pair(ref: str, state: State = State.ACTIVE, matched_on: date = date(2026, 9, 1), **kw: object) -> PairFacts:
    n = ref[1:]
    return PairFacts(ref, state, matched_on, PersonFacts(f"Claire{n}", "+33612345678"), PersonFacts(f"Yanis{n}", "+33761234567"), **kw)  # type: ignore[arg-type]


def flag(ref: str, kind: FlagKind, who: Role | None, reason: str, day: int = 5, **kw: object) -> FlagFacts:
    return FlagFacts(ref, kind, who, reason, datetime(2026, 10, day, 10, 0, tzinfo=PARIS), **kw)  # type: ignore[arg-type]


def sections(inp: DigestInput) -> dict[str, tuple[str, ...]]:
    return {s.key: s.items for s in build_digest(inp, NOW, POLICY).sections if s.items}


def test_nothing_new_still_has_counts_and_syntax() -> None:
    d = build_digest(DigestInput("fr", [pair("P1")], []), NOW, POLICY)
    assert d.nothing_new and d.date == date(2026, 10, 12)
    assert d.counts["binômes actifs"] == 1 and d.commands_help == SYNTAX["fr"]
    assert d.payload()["sections"] == []
    ctx = {**sample_context(*_digest_kind()), "recipient": RecipientInfo("Sophie", "", Role.REFERENT, "fr"),
           "digest": digest_from_payload(json.loads(json.dumps(d.payload())))}  # fmt: skip
    rendered = Renderer().render(_digest_kind()[0], "fr", ctx)
    assert "Rien de nouveau aujourd'hui — le service fonctionne" in rendered.text
    assert "urgent traité P4" in rendered.text


def _digest_kind() -> tuple:  # type: ignore[type-arg]
    from mailflow.core.model import EmailKind

    return (EmailKind.DIGEST, "fr", Role.REFERENT)


@pytest.mark.parametrize(
    ("flag_", "key", "expected"),
    [
        (flag("P1", FlagKind.CALL, Role.MENTEE, "no_reply", attempt=2), "calls",
         "P1 — Yanis1 (mentoré(e)), 07\u00a061\u00a023\u00a045\u00a067 : pas de réponse au suivi depuis le 05/10 (7 j), tentative n° 2"),
        (flag("P1", FlagKind.CALL, Role.MENTOR, "bounce"), "calls",
         "P1 — Claire1 (mentor), 06\u00a012\u00a034\u00a056\u00a078 : adresse e-mail refusée depuis le 05/10 (7 j), tentative n° 1"),
        (flag("P1", FlagKind.CLOSURE_REQUESTED, None, "stop"), "closure",
         "P1 — Claire1 et Yanis1 : arrêt demandé le 05/10. Pour confirmer : « clôture P1 »"),
        (flag("P1", FlagKind.REMATCH, Role.MENTOR, "no_contact"), "first_contact",
         "P1 — Claire1 (mentor) : binôme terminé sans contact le 05/10, un(e) autre mentoré(e) à proposer"),
        (flag("P1", FlagKind.REVIEW, Role.MENTOR, "unclear_reply", excerpt="Je   ne sais\npas"), "review",
         "P1 — Claire1 (mentor), le 05/10 : « Je ne sais pas »"),
        (flag("P1", FlagKind.REVIEW, Role.MENTOR, "sender_mismatch"), "review",
         "P1 — Claire1 (mentor), le 05/10 : message à lire avec « mailflow pairs show P1 »"),
    ],
)  # fmt: skip
def test_flag_items(flag_: FlagFacts, key: str, expected: str) -> None:
    assert sections(DigestInput("fr", [pair("P1")], [flag_]))[key] == (expected,)


def test_urgent_says_who_and_when_never_what() -> None:
    f = flag("P1", FlagKind.URGENT, Role.MENTEE, "support_needed", excerpt="SECRET je vais très mal")
    out = sections(DigestInput("fr", [pair("P1")], [f]))
    assert out["urgent"][0].startswith("P1 — Yanis1 (mentoré(e)) a écrit le 05/10")
    assert "SECRET" not in json.dumps(build_digest(DigestInput("fr", [pair("P1")], [f]), NOW, POLICY).payload())


def test_other_referents_flags_are_ignored() -> None:
    out = sections(DigestInput("fr", [pair("P1")], [flag("P9", FlagKind.CALL, Role.MENTEE, "no_reply")]))
    assert "calls" not in out


@pytest.mark.parametrize(
    ("text", "absent"),
    [
        ("appelez-moi au 06 12 34 56 78 svp", "06 12"),
        ("mon numéro +33 6 12 34 56 78", "+33"),
        ("écrivez à jean.dupont@example.org", "@"),
        ("voir https://evil.example/x?y=1 merci", "evil"),
        ("voir www.example.org/page", "www"),
    ],
)
def test_excerpt_is_sanitised(text: str, absent: str) -> None:
    assert absent not in sanitise_excerpt(text)


def test_excerpt_is_short() -> None:
    out = sanitise_excerpt("mot " * 200)
    assert len(out) <= 160 and out.endswith("…")


def test_first_contact_checkpoints_bounced_available_and_counts() -> None:
    pairs = [
        pair("P1", State.AWAITING_FIRST_CONTACT, matched_on=date(2026, 10, 1)),  # 11 days: overdue
        pair("P2", State.AWAITING_FIRST_CONTACT, matched_on=date(2026, 10, 8)),  # 4 days: not yet
        pair("P3", matched_on=date(2026, 4, 15)),  # month 6 on 15/10: this week
        pair("P4", matched_on=date(2026, 4, 30)),  # month 6 on 30/10: not this week
        PairFacts("P5", State.ACTIVE, date(2026, 9, 1), PersonFacts("Lou"), PersonFacts("Max", bounced=True)),
        pair("P6", State.CLOSED, paused_until=None),
    ]
    available = [Availability("P6", "Claire6", datetime(2026, 10, 10, 9, tzinfo=PARIS))]
    out = sections(DigestInput("fr", pairs, [flag("P3", FlagKind.CALL, Role.MENTOR, "no_reply")], available))
    assert out["first_contact"] == ("P1 — Claire1 et Yanis1 : pas de premier contact depuis 11 j (présentés le 01/10)",)
    assert out["checkpoints"] == ("P3 — Claire3 et Yanis3 : bilan des 6 mois le 15/10",)
    assert out["bounced"] == ("P5 — adresse de Max (mentoré(e)) refusée : corrigez-la (ré-import du binôme)",)
    assert out["available"] == ("P6 — Claire6 est disponible pour un(e) nouveau/nouvelle mentoré(e) (le 10/10)",)
    counts = build_digest(DigestInput("fr", pairs, [flag("P3", FlagKind.CALL, Role.MENTOR, "no_reply")]), NOW, POLICY).counts
    assert counts["binômes actifs"] == 3 and counts["en attente du premier contact"] == 2 and counts["clos"] == 1
    assert counts["appels à passer"] == 1


def test_acks_and_unknown_lines_in_english() -> None:
    acks = [
        Ack(NOW, "call_done", "done", "P1"),
        Ack(NOW, "close", "not_your_pair", "P9"),
        Ack(NOW, "unknown", "not_understood", line="hello " * 30),
    ]
    out = sections(DigestInput("en", [pair("P1")], [], acks=acks))
    assert out["acks"] == ("P1 — call recorded: done", "P9 — close: refused, not one of your pairs")
    assert out["unknown"] == (f"not understood: \"{('hello ' * 30)[:80]}\"",)
    assert build_digest(DigestInput("en", [pair("P1")], [], acks=acks), NOW, POLICY).commands_help == SYNTAX["en"]

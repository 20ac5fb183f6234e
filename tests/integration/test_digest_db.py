"""Digests, referent commands and stats against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import make_engine, migrate, session_scope
from mailflow.adapters.tables import InboundMessage, OutboxMessage, Pair, PairEvent, Person
from mailflow.config import CalendarSettings, DatabaseSettings, Settings
from mailflow.core.model import Event, EventKind, Intent, Role
from mailflow.core.roster import parse_roster
from mailflow.digest import apply_referent_reply, queue_digests
from mailflow.effects import advance
from mailflow.importer import import_roster
from mailflow.operator import call_done, close_pair
from mailflow.scheduler import run_pass
from mailflow.service import outgoing
from mailflow.stats import compute_stats
from mailflow.store import get_pair, open_flags
from tests.support.world import pair_row, roster_csv

PARIS = ZoneInfo("Europe/Paris")


def at(y: int, m: int, d: int, hh: int = 9, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=PARIS)


def make_world(db_url: str, n: int = 4, matched_on: str = "2026-09-01", **calendar: object) -> tuple[Engine, Settings]:
    settings = Settings(database=DatabaseSettings(url=db_url), calendar=CalendarSettings(**calendar))  # type: ignore[arg-type]
    engine = make_engine(db_url)
    migrate(engine)
    rows = [pair_row(i, referent=i % 2, matched_on=matched_on, mentee_first_name=f"Mentee{i}x") for i in range(n)]
    import_roster(engine, parse_roster(roster_csv(rows)), at(2026, 9, 1, 7))
    return engine, settings


def referent_id(engine: Engine, k: int) -> int:
    with Session(engine) as s:
        person = s.exec(select(Person).where(Person.email == f"referent{k}@example.org")).one()
        assert person.id is not None
        return person.id


def digests(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as s:
        return list(s.exec(select(OutboxMessage).where(OutboxMessage.kind == "digest").order_by(col(OutboxMessage.id))))


def digest_text(engine: Engine, referent: int, day: date) -> str:
    rows = [r for r in digests(engine) if r.person_id == referent and r.slot == day.isoformat()]
    assert len(rows) == 1
    return rows[0].payload


def reply(engine: Engine, settings: Settings, ref: str, who: Role, intent: Intent, now: datetime, text: str = "") -> None:
    with session_scope(engine) as s:
        pair = get_pair(s, ref, for_update=True)
        msg = InboundMessage(dedup_key=f"{ref}-{now.isoformat()}-{who}", received_at=now, kind="reply", outcome="processed",
                             pair_id=pair.id, intent=intent.value, text=text)  # fmt: skip
        s.add(msg)
        s.flush()
        advance(s, pair, now, settings.policy(), outgoing(settings), [Event(EventKind.REPLY, now, who=who, intent=intent)], msg.id)


# ---- exactly once ----


def test_one_digest_per_referent_per_window_day(db_url: str) -> None:
    engine, settings = make_world(db_url)
    r0, r1 = referent_id(engine, 0), referent_id(engine, 1)
    assert queue_digests(engine, settings, at(2026, 9, 1, 7, 59)) == 0  # before 08:00
    assert queue_digests(engine, settings, at(2026, 9, 1, 8, 0)) == 2
    assert queue_digests(engine, settings, at(2026, 9, 1, 15)) == 0  # second pass, same day
    fresh = make_engine(db_url)  # a restart: a new process, a new engine
    assert queue_digests(fresh, settings, at(2026, 9, 1, 19, 59)) == 0
    assert queue_digests(fresh, settings, at(2026, 9, 1, 20, 30)) == 0  # outside the window
    assert queue_digests(fresh, settings, at(2026, 9, 2, 8, 1)) == 2  # next day
    assert queue_digests(fresh, settings, at(2026, 9, 6, 10)) == 0  # Sunday
    # downtime Thursday to Saturday: catch-up on Saturday sends Saturday's digest only
    assert queue_digests(fresh, settings, at(2026, 9, 5, 11)) == 2
    keys = sorted(r.idem_key for r in digests(engine))
    assert keys == sorted(f"digest:{r}:{d}" for r in (r0, r1) for d in ("2026-09-01", "2026-09-02", "2026-09-05"))
    assert {r.role for r in digests(engine)} == {"referent"} and {r.pair_id for r in digests(engine)} == {None}


@pytest.mark.parametrize("sunday", [date(2026, 3, 29), date(2026, 10, 25)])  # the DST Sundays of 2026
def test_dst_weekends(db_url: str, sunday: date) -> None:
    engine, settings = make_world(db_url, n=2)
    sat, mon = sunday - timedelta(days=1), sunday + timedelta(days=1)
    for day in (sat, mon):
        assert queue_digests(engine, settings, at(day.year, day.month, day.day, 7, 59)) == 0
        assert queue_digests(engine, settings, at(day.year, day.month, day.day, 8, 0)) == 2
    assert queue_digests(engine, settings, at(sunday.year, sunday.month, sunday.day, 8, 30)) == 0
    assert sorted({r.slot for r in digests(engine)}) == [sat.isoformat(), mon.isoformat()]
    # a programme whose window includes Sunday gets a digest that Sunday, at 08:00 local time
    seven = Settings(database=settings.database, calendar=CalendarSettings(window_days=list(range(7))))
    assert queue_digests(engine, seven, at(sunday.year, sunday.month, sunday.day, 7, 59)) == 0
    assert queue_digests(engine, seven, at(sunday.year, sunday.month, sunday.day, 8, 0)) == 2
    assert queue_digests(engine, seven, at(sunday.year, sunday.month, sunday.day, 19, 0)) == 0
    assert len({r.slot for r in digests(engine)}) == 3


# ---- content ----


def test_digest_lists_only_own_pairs(db_url: str) -> None:
    engine, settings = make_world(db_url, n=8)
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    queue_digests(engine, settings, at(2026, 9, 10, 8, 5))  # day 9: first contact overdue for everyone
    for k in (0, 1):
        payload = json.dumps(json.loads(digest_text(engine, referent_id(engine, k), date(2026, 9, 10)))["sections"])
        mine = {f"P{i:02d}" for i in range(8) if i % 2 == k}
        assert set(re.findall(r"\bP\d\d\b", payload)) == mine
        assert set(re.findall(r"Mentee\d+x", payload)) == {f"Mentee{i}x" for i in range(8) if i % 2 == k}
        assert "@" not in payload


def test_review_excerpt_is_sanitised_and_support_text_never_shows(db_url: str) -> None:
    engine, settings = make_world(db_url, n=2)
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    reply(engine, settings, "P00", Role.MENTOR, Intent.UNKNOWN, at(2026, 9, 2, 10),
          "Bonjour, je ne comprends pas. Appelez-moi au 06 12 34 56 78, ou jean.d@example.org, voir https://x.example/a " + "bla " * 80)  # fmt: skip
    reply(engine, settings, "P00", Role.MENTEE, Intent.SUPPORT_NEEDED, at(2026, 9, 2, 11), "SECRET-HEALTH je vais mal")
    queue_digests(engine, settings, at(2026, 9, 3, 8))
    payload = json.loads(digest_text(engine, referent_id(engine, 0), date(2026, 9, 3)))
    sections = {s["key"]: s["items"] for s in payload["sections"]}
    assert "SECRET" not in json.dumps(payload) and "vais mal" not in json.dumps(payload)
    assert sections["urgent"][0].startswith("P00 — Mentee0x (mentoré(e)) a écrit le 02/09")
    review = sections["review"][0]
    assert "je ne comprends pas" in review and "06 12" not in review and "@" not in review and "https" not in review
    excerpt = review.split("« ", 1)[1].rsplit(" »", 1)[0]
    assert len(excerpt) <= 160


def test_digests_gathered_in_groups_equal_each_referent_alone(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """queue_digests reads a group of referents at once (set-based queries); each payload is that referent's own digest."""
    import mailflow.digest as digest

    settings = Settings(database=DatabaseSettings(url=db_url))
    engine = make_engine(db_url)
    migrate(engine)
    rows = [pair_row(i, referent=i % 3, mentee_first_name=f"Mentee{i}x") for i in range(9)]
    import_roster(engine, parse_roster(roster_csv(rows)), at(2026, 9, 1, 7))
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    reply(engine, settings, "P00", Role.MENTOR, Intent.UNKNOWN, at(2026, 9, 2, 10), "Je ne comprends pas la question")
    reply(engine, settings, "P01", Role.MENTEE, Intent.SUPPORT_NEEDED, at(2026, 9, 2, 11), "SECRET")
    reply(engine, settings, "P05", Role.MENTEE, Intent.STOP, at(2026, 9, 2, 12))
    monkeypatch.setattr(digest, "GATHER_REFERENTS", 2)  # 3 referents: a group of 2, then 1
    for day, command_at in ((date(2026, 9, 3), at(2026, 9, 3, 9)), (date(2026, 9, 4), None)):
        now = at(day.year, day.month, day.day, 8)
        assert queue_digests(engine, settings, now) == 3
        for k in range(3):
            _, alone = digest.build_for(engine, settings, f"referent{k}@example.org", now)
            assert json.loads(digest_text(engine, referent_id(engine, k), day)) == alone.payload()
        if command_at is not None:  # acknowledged in the next digest of this referent only
            apply_referent_reply(engine, settings, referent_id(engine, 1), "clôture P04\nbonjour", command_at)
    payloads = {k: json.loads(digest_text(engine, referent_id(engine, k), date(2026, 9, 4))) for k in range(3)}
    assert [k for k in range(3) if any(s["key"] == "acks" for s in payloads[k]["sections"])] == [1]


# ---- referent commands ----


def test_commands_are_applied_and_acknowledged(db_url: str) -> None:
    engine, settings = make_world(db_url, n=4)
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    r0 = referent_id(engine, 0)
    bounce = Event(EventKind.BOUNCE, at(2026, 9, 1, 10), who=Role.MENTEE, data={"permanent": "true"})
    with session_scope(engine) as s:
        advance(s, get_pair(s, "P00", for_update=True), at(2026, 9, 1, 10), settings.policy(), outgoing(settings), [bounce])
    reply(engine, settings, "P02", Role.MENTEE, Intent.STOP, at(2026, 9, 1, 11))
    queue_digests(engine, settings, at(2026, 9, 2, 8))
    first = json.loads(digest_text(engine, r0, date(2026, 9, 2)))
    assert any("P00 — Mentee0x" in i for s in first["sections"] if s["key"] == "calls" for i in s["items"])
    assert apply_referent_reply(engine, settings, r0, "\n\n", at(2026, 9, 2, 9)) == []
    outcomes = apply_referent_reply(
        engine, settings, r0, "Appel p00 fait : joint, adresse corrigée bientôt\nMerci pour tout\nclôture P02\nclôture P01\nlu P02",
        at(2026, 9, 2, 9),
    )  # fmt: skip
    assert [(o.command, o.ref, o.outcome) for o in outcomes] == [
        ("call_done", "P00", "done"), ("unknown", "", "not_understood"), ("close", "P02", "done"),
        ("close", "P01", "not_your_pair"), ("read", "P02", "no_flag"),
    ]  # fmt: skip
    with Session(engine) as s:
        assert [f.kind for f in open_flags(s, [get_pair(s, "P00").id or 0])] == []
        assert get_pair(s, "P02").state == "closed" and get_pair(s, "P01").state == "awaiting_first_contact"
    queue_digests(engine, settings, at(2026, 9, 3, 8))
    second = {s["key"]: s["items"] for s in json.loads(digest_text(engine, r0, date(2026, 9, 3)))["sections"]}
    assert "calls" not in second
    assert second["acks"] == ["P00 — appel noté : fait", "P02 — clôture : fait", "P01 — clôture : refusé, ce n'est pas un de vos binômes",
                              "P02 — réponses lues : rien à effacer"]  # fmt: skip
    assert second["unknown"] == ["non comprise : « Merci pour tout »"]
    queue_digests(engine, settings, at(2026, 9, 4, 8))  # acknowledged once, not again
    third = json.loads(digest_text(engine, r0, date(2026, 9, 4)))
    assert not any(s["key"] in ("acks", "unknown") for s in third["sections"])


def test_forged_command_changes_nothing(db_url: str) -> None:
    engine, settings = make_world(db_url, n=2)
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    with Session(engine) as s:
        before = len(list(s.exec(select(PairEvent))))
        mentor = s.exec(select(Person).where(Person.role == "mentor")).first()
        assert mentor is not None and mentor.id is not None
    # P01 belongs to referent1; referent0 tries to close and pause it
    out = apply_referent_reply(engine, settings, referent_id(engine, 0), "clôture P01\npause P01 jusqu'au 01/12", at(2026, 9, 2))
    assert {o.outcome for o in out} == {"not_your_pair"}
    assert apply_referent_reply(engine, settings, mentor.id, "clôture P00", at(2026, 9, 2)) == []  # not a referent
    with Session(engine) as s:
        assert len(list(s.exec(select(PairEvent)))) == before
        assert {p.state for p in s.exec(select(Pair))} == {"awaiting_first_contact"}
        assert all(p.paused_until is None for p in s.exec(select(Pair)))


def test_pause_resume_urgent_handled(db_url: str) -> None:
    engine, settings = make_world(db_url, n=2)
    run_pass(engine, at(2026, 9, 1), settings.policy(), outgoing(settings))
    r0 = referent_id(engine, 0)
    reply(engine, settings, "P00", Role.MENTEE, Intent.SUPPORT_NEEDED, at(2026, 9, 2, 10), "x")
    out = apply_referent_reply(engine, settings, r0, "pause P00 jusqu'au 01/09\npause P00 jusqu'au 15/10\nurgent traité P00\nreprise P00",
                               at(2026, 9, 2, 11))  # fmt: skip
    assert [o.outcome for o in out] == ["done", "done", "done", "done"]  # 01/09 is next year's 1 September
    with Session(engine) as s:
        pair = get_pair(s, "P00")
        assert pair.paused_until is None and open_flags(s, [pair.id or 0]) == []
    assert apply_referent_reply(engine, settings, r0, "reprise P00", at(2026, 9, 2, 12))[0].outcome == "refused"


# ---- stats ----


def _programme(db_url: str) -> tuple[Engine, Settings]:
    engine, settings = make_world(db_url, n=5, checkpoint_months=1)
    script = {
        date(2026, 9, 2): [("P01", Role.MENTOR, Intent.MET), ("P04", Role.MENTEE, Intent.OK)],
        date(2026, 9, 4): [("P00", Role.MENTEE, Intent.OK)],
        date(2026, 9, 8): [("P04", Role.MENTOR, Intent.STOP)],
        date(2026, 9, 11): [("P02", Role.MENTEE, Intent.OK)],
        date(2026, 9, 12): [("P04", Role.MENTOR, Intent.AVAILABLE)],
        date(2026, 10, 3): [("P01", Role.MENTOR, Intent.OK), ("P01", Role.MENTEE, Intent.OK)],
        date(2026, 10, 6): [("P00", Role.MENTOR, Intent.OK)],
    }
    day = date(2026, 9, 1)
    while day <= date(2026, 10, 20):
        now = at(day.year, day.month, day.day, 9)
        run_pass(engine, now, settings.policy(), outgoing(settings))
        for ref, who, intent in script.get(day, []):
            reply(engine, settings, ref, who, intent, now + timedelta(hours=1))
        if day == date(2026, 9, 10):
            close_pair(engine, settings, "P04", now + timedelta(hours=2))
        if day == date(2026, 10, 13):
            call_done(engine, settings, "P00", Role.MENTEE, "joint", now + timedelta(hours=2))
        day += timedelta(days=1)
    return engine, settings


def test_stats_match_a_hand_computed_programme(db_url: str) -> None:
    engine, settings = _programme(db_url)
    stats = compute_stats(engine, None, None, settings.policy())
    assert stats["pairs_by_state"] == {"awaiting_first_contact": 0, "active": 3, "closed": 1, "ended_no_contact": 1}
    # first contact: P00 3 d, P01 1 d, P02 10 d, P04 1 d -> median 2, p90 (nearest rank, 4th of 4) 10
    assert stats["first_contact_days"] == {"count": 4, "median": 2.0, "p90": 10}
    # rounds: f1 to both of P00 (10-05), P01 (10-02), P02 (10-12) = 6; answered: P00 mentor, P01 both = 3
    assert stats["followup_response"] == {"rounds_sent": 6, "rounds_answered": 3, "rate": 0.5}
    # calls: P00 mentee (10-12), P02 mentor and mentee (10-19); one done
    assert stats["calls"] == {"raised": 3, "done": 1, "raised_by_reason": {"no_reply": 3}}
    assert stats["pairs_reaching_6_months"] == 3  # checkpoint_months=1 here: P00, P01, P02
    assert stats["closures_by_reason"] == {"closed_by_operator": 0, "closed_on_request": 1, "ended_no_contact": 1}
    assert stats["ended_without_contact"] == 1 and stats["mentors_available_again"] == 1
    october = compute_stats(engine, date(2026, 10, 1), date(2026, 10, 31), settings.policy())
    assert october["first_contact_days"]["count"] == 0 and october["followup_response"]["rounds_sent"] == 6
    assert october["closures_by_reason"] == {"closed_by_operator": 0, "closed_on_request": 0, "ended_no_contact": 0}
    assert october["mentors_available_again"] == 0 and october["pairs_total"] == 5


def test_export_neutralises_formulas_and_holds_no_identities(db_url: str, tmp_path: Path) -> None:
    from mailflow.export import export_pairs_csv, neutralise

    assert [neutralise(v) for v in ("=1+1", "+33", "-2", "@SUM(A1)", "\tx", "\rx", "ok", None)] == [
        "'=1+1", "'+33", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "ok", "",
    ]  # fmt: skip
    engine, settings = make_world(db_url, n=2)
    with session_scope(engine) as s:
        person = s.exec(select(Person).where(Person.role == "mentor")).first()
        assert person is not None
        person.sector = '=HYPERLINK("http://x","y")'
        s.add(person)
    assert export_pairs_csv(engine, tmp_path / "p.csv", at(2026, 9, 2)) == 2
    text = (tmp_path / "p.csv").read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in text and "@" not in text and "Mentee0x" not in text and "Durand" not in text

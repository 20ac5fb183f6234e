"""Referents end to end through the real CLI: a simulated month of digests, a call item, commands, stats."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import InboundMessage, Person
from mailflow.core.model import Event, EventKind, Intent, Role
from mailflow.digest import apply_referent_reply
from mailflow.effects import advance
from mailflow.service import outgoing
from mailflow.store import get_pair
from tests.support.cli import run_cli
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row, roster_csv

PARIS = ZoneInfo("Europe/Paris")
START = date(2026, 9, 1)  # a Tuesday


def inject_reply(world: World, ref: str, who: Role, intent: Intent, now: datetime, text: str = "") -> None:
    """What the inbox does for a reply (until it is driven through Dovecot here): an event with its message."""
    settings = world.settings
    with session_scope(world.engine) as s:
        pair = get_pair(s, ref, for_update=True)
        msg = InboundMessage(dedup_key=f"{ref}-{who}-{now.isoformat()}", received_at=now, kind="reply",
                             outcome="processed", pair_id=pair.id, intent=intent.value, text=text)  # fmt: skip
        s.add(msg)
        s.flush()
        advance(s, pair, now, settings.policy(), outgoing(settings), [Event(EventKind.REPLY, now, who=who, intent=intent)], msg.id)


def _flat(text: str) -> str:
    """Text as a reader sees it: French non-breaking spaces and line wrapping as plain spaces."""
    return re.sub(r"[ \u00a0\u202f]+", " ", re.sub(r"\r?\n +", " ", text))


def digests_by(world: World) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for msg in world.sent(kind="digest"):
        day = re.search(r"(\d\d/\d\d/\d{4})", str(msg["Subject"]))
        assert day is not None
        out.setdefault((msg["To"].addresses[0].addr_spec, day.group(1)), []).append(_flat(msg.get_body(("plain",)).get_content()))
    return out


def test_a_month_of_digests(db_url: str, smtp_server: RecordingSMTPServer, tmp_path: Path) -> None:
    world = World(db_url, smtp_server, MAILFLOW_DIGEST__ENABLED="true", MAILFLOW_CALENDAR__FOLLOWUP_INTERVAL_DAYS="10")
    rows = [pair_row(i, referent=i % 2, mentee_first_name=f"Mentee{i}x") for i in range(20)]
    (tmp_path / "r.csv").write_bytes(roster_csv(rows))
    assert run_cli("--now", "2026-09-01T07:00", "pairs", "import", str(tmp_path / "r.csv"), env=world.env).code == 0
    day, window_days = START, []
    while day < START + timedelta(days=30):
        if day == date(2026, 9, 2):  # every pair makes first contact (the mentee replies)
            for i in range(20):
                inject_reply(world, f"P{i:02d}", Role.MENTEE, Intent.OK, datetime(2026, 9, 2, 7, tzinfo=PARIS))
        result = run_cli("--now", f"{day.isoformat()}T08:05", "run", "--once", env=world.env)
        assert result.code == 0, result.err
        assert "@" not in result.out + result.err  # no addresses in the console or logs
        if day.weekday() < 6:
            window_days.append(day)
        if day == date(2026, 9, 19):  # the referent answers the digest that shows the call
            out = apply_referent_reply(world.engine, world.settings, _person_id(world, "referent0@example.org"),
                                       "appel P00 fait: joint, tout va bien", datetime(2026, 9, 19, 10, tzinfo=PARIS))  # fmt: skip
            assert [o.outcome for o in out] == ["done"]  # both were silent: one line records both calls
        day += timedelta(days=1)

    got = digests_by(world)
    for k in (0, 1):
        addr = f"referent{k}@example.org"
        days = sorted(d for (to, d) in got if to == addr)
        assert days == sorted(d.strftime("%d/%m/%Y") for d in window_days)  # Mon-Sat, none on Sundays
        assert all(len(got[(addr, d)]) == 1 for d in days)  # exactly one a day
        text = "\n".join(t for d in days for t in got[(addr, d)])
        names = set(re.findall(r"Mentee\d+x", text))
        assert names and names <= {f"Mentee{i}x" for i in range(20) if i % 2 == k}
    # followups on 12/09 (activation 02/09 + 10 days); nobody answers: call items on day +7 (19/09), not before
    ref0 = "referent0@example.org"
    assert "Appels à passer" not in got[(ref0, "18/09/2026")][0]
    on_19 = got[(ref0, "19/09/2026")][0]
    assert "Appels à passer" in on_19 and re.search(r"P00 — Mentee0x \(mentoré\(e\)\), 07 61 23 00 00", on_19)
    on_21 = got[(ref0, "21/09/2026")][0]  # the next digest (Monday): P00 gone, the command acknowledged
    assert "P00 — Mentee0x (mentoré(e)), 07" not in on_21 and "P02 — Mentee2x" in on_21
    assert "P00 — appel noté : fait" in on_21
    # one digest per referent per day, counted from the relay
    per_day = Counter((to, d) for (to, d), texts in got.items() for _ in texts)
    assert set(per_day.values()) == {1}

    stats = json.loads(run_cli("stats", "--json", env=world.env).out)
    assert stats["pairs_by_state"]["active"] == 20 and stats["calls"]["done"] == 2
    assert stats["first_contact_days"] == {"count": 20, "median": 1, "p90": 1}
    preview = run_cli("--now", "2026-09-30T09:00", "digest", "preview", "--referent", ref0, "--html", str(tmp_path / "d.html"), env=world.env)
    assert preview.code == 0 and "Point du jour du 30/09/2026" in preview.out and (tmp_path / "d.html").read_text().startswith("<")
    export = run_cli("export", "pairs", "--csv", str(tmp_path / "p.csv"), env=world.env)
    assert export.code == 0
    csv_text = (tmp_path / "p.csv").read_text(encoding="utf-8-sig")
    assert len(csv_text.splitlines()) == 21 and "@" not in csv_text and "Mentee" not in csv_text and "+33" not in csv_text and "07 61" not in csv_text


def _person_id(world: World, email: str) -> int:
    from sqlmodel import Session, select

    with Session(world.engine) as s:
        person = s.exec(select(Person).where(Person.email == email)).one()
        assert person.id is not None
        return person.id


def test_urgent_alert_goes_in_the_same_pass_and_the_digest_holds_no_text(db_url: str, smtp_server: RecordingSMTPServer, tmp_path: Path) -> None:
    world = World(db_url, smtp_server, MAILFLOW_DIGEST__ENABLED="true")
    (tmp_path / "r.csv").write_bytes(roster_csv([pair_row(i, referent=i % 2) for i in range(4)]))
    assert run_cli("--now", "2026-09-01T07:00", "pairs", "import", str(tmp_path / "r.csv"), env=world.env).code == 0
    assert run_cli("--now", "2026-09-01T08:05", "run", "--once", env=world.env).code == 0
    inject_reply(world, "P01", Role.MENTEE, Intent.SUPPORT_NEEDED, datetime(2026, 9, 1, 14, tzinfo=PARIS), "DISTRESS-TEXT je vais mal")
    assert run_cli("--now", "2026-09-01T14:00:30", "run", "--once", env=world.env).code == 0
    alerts = world.sent(kind="urgent_alert")
    assert [a["To"].addresses[0].addr_spec for a in alerts] == ["referent1@example.org"]
    assert run_cli("--now", "2026-09-02T08:05", "run", "--once", env=world.env).code == 0
    digest = [m for m in world.sent(kind="digest", to="referent1@example.org") if "02/09/2026" in str(m["Subject"])]
    assert len(digest) == 1
    body = digest[0].get_body(("plain",)).get_content() + digest[0].get_body(("html",)).get_content()
    assert "P01 — Mentee1 (mentoré(e)) a écrit le 01/09" in _flat(body)
    assert "DISTRESS" not in body and "vais mal" not in body
    # a forged command (another referent's pair) changes nothing
    out = apply_referent_reply(world.engine, world.settings, _person_id(world, "referent0@example.org"), "urgent traité P01",
                               datetime(2026, 9, 2, 9, tzinfo=PARIS))  # fmt: skip
    assert out[0].outcome == "not_your_pair"
    shown = json.loads(run_cli("pairs", "show", "P01", "--json", env=world.env).out)
    assert [f["kind"] for f in shown["flags"]] == ["urgent"]

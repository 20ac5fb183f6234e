"""Privacy tools: `people export`, `people erase` (database + mailbox, byte-level), `purge` by retention, audit events."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import AuditEvent, InboundMessage, Person
from tests.support.cli import run_cli
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import World, pair_row

EMAIL = "zephyrine.quaglio@example.net"
FIRST, LAST = "Zéphyrine", "Quaglio"
PHONE = "06 48 27 39 15"
PHONE_FORMS = ("0648273915", "06 48 27 39 15", "06.48.27.39.15", "06-48-27-39-15", "+33648273915", "+33 6 48 27 39 15", "33648273915")
NEEDLES = (EMAIL, FIRST, LAST, "zephyrine", "Z\\u00e9phyrine", *PHONE_FORMS)


def target_row() -> dict[str, str]:
    return pair_row(1, mentee_first_name=FIRST, mentee_last_name=LAST, mentee_email=EMAIL, mentee_phone=PHONE)


def find_needles(blob: bytes) -> set[str]:
    low = blob.lower()
    found = {n for n in NEEDLES if n.lower().encode() in low}
    digits = re.sub(rb"[^0-9]", b"", blob)
    if b"648273915" in digits:  # the phone number in any spacing
        found.add("phone digits")
    return found


def cli(world: World, *args: str, now: str = "2026-09-03T10:00") -> tuple[int, str, str]:
    r = run_cli("--now", now, *args, env=world.env)
    return r.code, r.out, r.err


def db_files(world: World) -> list[Path]:
    path = Path(world.db_url.removeprefix("sqlite:///"))
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def maildir_files(world: World) -> list[Path]:
    assert world.dovecot is not None
    root = Path(world.dovecot.dir) / "mail" / world.user
    return [p for p in root.rglob("*") if p.is_file()]


def build_history(world: World) -> list[str]:
    """Intros, replies from both (hers with name + phone in the signature), a digest, closure, a late message."""
    logs = []
    code, out, err = cli(world, "run", "--once", now="2026-09-01T09:00")
    assert code == 0, err
    logs.append(out + err)
    (intro_mentee,) = world.sent("introduction", to=EMAIL)
    (intro_mentor,) = world.sent("introduction", to="mentor1@example.org")
    world.deliver(world.reply_to(intro_mentee, f"Bonjour, merci ! On s'est appelées hier.\n\n{FIRST} {LAST}\n{PHONE}"))
    world.deliver(world.reply_to(intro_mentor, "Premier rendez-vous fait avec elle, tout va bien."))  # quotes her name and address
    (intro_other,) = world.sent("introduction", to="mentee2@example.net")
    world.deliver(world.reply_to(intro_other, "Bonjour, nous nous sommes rencontrés."))
    code, out, err = cli(world, "run", "--once", now="2026-09-02T09:00")
    assert code == 0, err
    logs.append(out + err)
    code, out, err = cli(world, "pairs", "close", "P01", now="2026-09-02T11:00")
    assert code == 0, err
    code, out, err = cli(world, "run", "--once", now="2026-09-02T11:05")
    assert code == 0, err
    logs.append(out + err)
    late = world.reply_to(intro_mentee, f"Encore merci pour tout ! Mon numéro : {PHONE}", quote=False)
    world.deliver(late)
    code, out, err = cli(world, "run", "--once", now="2026-09-03T09:00")
    assert code == 0, err
    logs.append(out + err)
    return logs


@pytest.fixture
def world(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> World:
    w = World(f"sqlite:///{tmp_path / 'privacy.db'}", smtp_server, dovecot, MAILFLOW_DIGEST__ENABLED="true")
    w.import_rows([target_row(), pair_row(2), pair_row(3)])
    return w


def test_export_holds_everything_and_is_audited(world: World, tmp_path: Path) -> None:
    build_history(world)
    code, out, err = cli(world, "people", "export", EMAIL.upper())
    assert code == 0, err
    data = json.loads(out)
    assert data["person"]["first_name"] == FIRST and data["person"]["phone"] == "+33648273915"
    assert [(p["ref"], p["role"], p["state"]) for p in data["pairs"]] == [("P01", "mentee", "closed")]
    assert any(e["kind"] == "reply" for e in data["pairs"][0]["events"])
    assert {o["kind"] for o in data["outbox"]} >= {"introduction", "closure"}
    assert all("body" not in o for o in data["outbox"])
    assert any(PHONE in m["text"] for m in data["inbound"])
    target = tmp_path / "export.json"
    code, out, err = cli(world, "people", "export", EMAIL, "--out", str(target))
    assert code == 0 and EMAIL not in out and json.loads(target.read_text())["person"]["email"] == EMAIL
    code, _, err = cli(world, "people", "export", "nobody@example.org")
    assert code == 1 and "no person" in err and "Traceback" not in err
    with Session(world.engine) as s:
        audits = [a for a in s.exec(select(AuditEvent)) if a.action == "export"]
    assert len(audits) == 2
    assert all(EMAIL not in a.detail and "@" not in a.detail for a in audits)


def test_erase_leaves_no_byte_anywhere(world: World) -> None:
    logs = build_history(world)
    stats_before = json.loads(cli(world, "stats", "--json")[1])
    pairs_before = json.loads(cli(world, "pairs", "list", "--json")[1])
    other_before = json.loads(cli(world, "pairs", "show", "P02", "--json")[1])
    # the data really is there before
    assert find_needles(b"".join(p.read_bytes() for p in db_files(world)))
    assert find_needles(b"".join(p.read_bytes() for p in maildir_files(world)))
    other_mail = len(world.folder("Processed"))

    refused = run_cli("--now", "2026-09-03T10:00", "people", "erase", EMAIL, env=world.env)
    assert refused.code == 1 and "--yes" in refused.err  # no tty: confirmation is required
    code, out, err = cli(world, "people", "erase", EMAIL, "--yes")
    assert code == 0, err
    logs.append(out + err)
    assert "mailbox message(s) deleted" in out
    # a pass after the erasure still works and changes nothing for the others
    code, out, err = cli(world, "run", "--once", now="2026-09-03T11:00")
    assert code == 0, err
    logs.append(out + err)

    leaks = {}
    for path in db_files(world) + maildir_files(world):
        found = find_needles(path.read_bytes())
        if found:
            leaks[str(path)] = found
    for i, text in enumerate(logs):
        found = find_needles(text.encode())
        if found:
            leaks[f"log {i}"] = found
    assert leaks == {}
    # the others are intact
    assert json.loads(cli(world, "stats", "--json")[1]) == stats_before
    pairs_after = json.loads(cli(world, "pairs", "list", "--json")[1])
    assert [(p["ref"], p["state"]) for p in pairs_after] == [(p["ref"], p["state"]) for p in pairs_before]
    other_after = json.loads(cli(world, "pairs", "show", "P02", "--json")[1])
    assert other_after["mentee"] == other_before["mentee"] and other_after["events"] == other_before["events"]
    assert 0 < len(world.folder("Processed")) < other_mail  # P02's reply is still there
    shown = json.loads(cli(world, "pairs", "show", "P01", "--json")[1])
    assert shown["mentee"]["first_name"] == "effacé" and shown["mentee"]["email"].endswith("@invalid")
    assert [e["kind"] for e in shown["events"]].count("reply") == 3  # two before closure, one late
    with Session(world.engine) as s:
        (audit,) = [a for a in s.exec(select(AuditEvent)) if a.action == "erase"]
        assert "@" not in audit.detail and json.loads(audit.detail)["mailbox_deleted"] >= 3
    # erasing again: the address is unknown now
    code, _, err = cli(world, "people", "erase", EMAIL, "--yes")
    assert code == 1 and "no person" in err


def test_erase_refuses_a_participant_of_an_open_pair(world: World) -> None:
    code, out, err = cli(world, "people", "erase", "mentee2@example.net", "--yes")
    assert code == 1 and "P02" in err and "close" in err
    with Session(world.engine) as s:
        person = s.exec(select(Person).where(Person.email == "mentee2@example.net")).one()
        assert not person.erased and person.first_name == "Mentee2"


def test_erase_on_postgresql(pg_url: str, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> None:
    world = World(pg_url, smtp_server, dovecot, MAILFLOW_DIGEST__ENABLED="true")
    world.import_rows([target_row(), pair_row(2)])
    build_history(world)
    code, out, err = cli(world, "people", "erase", EMAIL, "--yes")
    assert code == 0, err
    with world.engine.connect() as conn:
        dump = []
        for table in ("people", "pairs", "pair_events", "flags", "outbox", "inbound_messages", "audit_events"):
            dump += [repr(tuple(row)) for row in conn.exec_driver_sql(f"SELECT * FROM {table}")]  # noqa: S608
    assert find_needles("\n".join(dump).encode()) == set()
    assert not any(find_needles(p.read_bytes()) for p in maildir_files(world))
    world.engine.dispose()


def test_purge_applies_retention(world: World) -> None:
    build_history(world)
    # 40 days later: inbound messages (30 days) go, the closed pair's people stay (12 months)
    code, out, err = cli(world, "purge", "--dry-run", "--json", now="2026-10-15T10:00")
    assert code == 0, err
    assert json.loads(out) == {"dry_run": True, "people_erased": 0, "messages_blanked": 4, "mailbox_deleted": 0}
    assert len(world.folder("Processed")) == 4  # dry run: nothing removed
    code, out, err = cli(world, "purge", "--json", now="2026-10-15T10:00")
    assert code == 0, err
    assert json.loads(out)["messages_blanked"] == 4 and json.loads(out)["mailbox_deleted"] == 4
    assert world.folder("Processed") == []
    with Session(world.engine) as s:
        assert all(m.text == "" for m in s.exec(select(InboundMessage)))
        assert s.exec(select(Person).where(Person.email == EMAIL)).one().first_name == FIRST
    # 13 months after closure: the people of P01 go (P02/P03 are open: theirs stay)
    code, out, err = cli(world, "purge", "--json", now="2027-10-15T10:00")
    assert code == 0, err
    assert json.loads(out)["people_erased"] == 2
    with Session(world.engine) as s:
        people = {p.email: p for p in s.exec(select(Person))}
        assert EMAIL not in people and "mentor1@example.org" not in people
        assert "mentee2@example.net" in people and "referent0@example.org" in people
        actions = [a.action for a in s.exec(select(AuditEvent))]
    assert actions.count("purge") == 3
    assert find_needles(b"".join(p.read_bytes() for p in db_files(world))) == set()

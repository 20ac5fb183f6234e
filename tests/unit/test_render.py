"""Email templates -> RenderedEmail -> EmailMessage: every kind, escaping, privacy, header safety."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import pytest
from markupsafe import escape

from mailflow.core.addresses import UnsafeHeaderError
from mailflow.core.model import EmailKind, Role
from mailflow.render import (
    KIND_ROLES,
    LANGUAGES,
    SENSITIVE_SUBJECT_WORDS,
    DigestInfo,
    RenderedEmail,
    Renderer,
    RenderError,
    build_message_bytes,
    check_templates,
    make_message_id,
    sample_context,
)

CASES = [(kind, lang, role) for kind, roles in KIND_ROLES.items() for lang in LANGUAGES for role in roles]
NASTY = '<b>Zoé</b> & "Co"'
MENTOR_PHONE, MENTEE_PHONE = "06 98 76 54 32", "07 11 22 33 44"
NOW = datetime(2025, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def flat(text: str) -> str:
    return " ".join(text.split())


_ARGS: dict[str, Any] = dict(
    kind=EmailKind.FOLLOWUP,
    from_name="Programme de mentorat",
    from_address="mentorat@example.org",
    to_name="Zoé Martin",
    to_address="zoe@example.net",
    reply_to="mentorat+AbC-12_x@example.org",
    message_id="<abc123@example.org>",
    date=NOW,
)


def message(rendered: RenderedEmail, **overrides: Any) -> bytes:
    """The bytes the outbox sends (build_message_bytes), for these fields."""
    args = {**_ARGS, **overrides}
    return build_message_bytes(rendered, **args)


def reparse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=default).parsebytes(raw)  # type: ignore[return-value]


def test_check_templates_is_clean(renderer: Renderer) -> None:
    assert check_templates(renderer) == []


@pytest.mark.parametrize(("kind", "lang", "role"), CASES)
def test_every_kind_renders(renderer: Renderer, kind: EmailKind, lang: str, role: Role) -> None:
    out = renderer.render(kind, lang, sample_context(kind, lang, role))
    assert out.subject and "\n" not in out.subject
    assert out.text.strip() and out.html.lstrip().startswith("<!DOCTYPE html>")
    assert f'<html lang="{lang}">' in out.html
    assert "{{" not in out.text + out.html and "{%" not in out.text + out.html
    assert not re.search(r"<(p|a|div|table)\b", out.text)
    assert not re.search(r"<img|<link|@import|url\(|<script", out.html, re.I)  # nothing external
    for word in SENSITIVE_SUBJECT_WORDS:
        assert not re.search(rf"\b{word}", out.subject.lower())
    greeting = {"fr": "Bonjour", "en": "Hello"}[lang]
    assert greeting in out.text and greeting in out.html


def test_english_and_french_differ(renderer: Renderer) -> None:
    fr = renderer.render(EmailKind.FOLLOWUP, "fr", sample_context(EmailKind.FOLLOWUP, "fr", Role.MENTOR))
    en = renderer.render(EmailKind.FOLLOWUP, "en", sample_context(EmailKind.FOLLOWUP, "en", Role.MENTOR))
    assert "Bonjour" in fr.text and "Hello" in en.text
    # anything but "en" is French
    other = renderer.render(EmailKind.FOLLOWUP, "de", sample_context(EmailKind.FOLLOWUP, "de", Role.MENTOR))
    assert other.text == fr.text


@pytest.mark.parametrize("kind", [EmailKind.FOLLOWUP, EmailKind.FOLLOWUP_REMINDER])
@pytest.mark.parametrize(
    ("lang", "codes"),
    [
        ("fr", ["1 = tout va bien", "2 = nous rencontrons une difficulté", "3 = nous souhaitons arrêter"]),
        ("en", ["1 = all good", "2 = we have a difficulty", "3 = we want to stop"]),
    ],
)
def test_followup_codes_at_the_top(renderer: Renderer, kind: EmailKind, lang: str, codes: list[str]) -> None:
    out = renderer.render(kind, lang, sample_context(kind, lang, Role.MENTEE))
    text = flat(out.text)
    positions = [text.index(code) for code in codes]
    assert positions == sorted(positions)
    assert positions[0] < len(text) // 3  # in the first third of the email
    assert ("répondre à cet e-mail" if lang == "fr" else "reply to this email") in text


@pytest.mark.parametrize(("lang", "words"), [("fr", ["oui", "continuer", "arrêter"]), ("en", ["yes", "continue", "stop"])])
def test_checkpoint_reply_words(renderer: Renderer, lang: str, words: list[str]) -> None:
    out = renderer.render(EmailKind.CHECKPOINT, lang, sample_context(EmailKind.CHECKPOINT, lang, Role.MENTOR))
    for word in words:
        assert word in out.text


@pytest.mark.parametrize(("lang", "words"), [("fr", ["disponible", "pas disponible"]), ("en", ["available", "not available"])])
def test_closure_asks_mentor_availability_only(renderer: Renderer, lang: str, words: list[str]) -> None:
    ctx = sample_context(EmailKind.CLOSURE, lang, Role.MENTOR)
    mentor = renderer.render(EmailKind.CLOSURE, lang, ctx)
    mentee = renderer.render(EmailKind.CLOSURE, lang, sample_context(EmailKind.CLOSURE, lang, Role.MENTEE))
    for out in (mentor, mentee):
        assert ctx["programme"].survey_url in out.text and ctx["programme"].survey_url in out.html
        assert ctx["programme"].review_guide_url in out.text
    assert f"{words[1]} =" in mentor.text
    assert f"{words[1]} =" not in mentee.text


def test_introductions_show_what_each_side_needs(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.INTRODUCTION, "fr", Role.MENTOR)
    to_mentor = renderer.render(EmailKind.INTRODUCTION, "fr", ctx).text
    assert "Yanis" in to_mentor and "yanis.b@example.net" in to_mentor and "stage ou d'alternance" in to_mentor
    ctx = sample_context(EmailKind.INTRODUCTION, "fr", Role.MENTEE)
    to_mentee = renderer.render(EmailKind.INTRODUCTION, "fr", ctx).text
    assert "Claire" in to_mentee and "Cheffe de projet informatique" in to_mentee and "Numérique" in to_mentee
    assert "Dumas" not in to_mentee  # the other person's last name is not needed


def _with_phones(ctx: dict[str, Any]) -> dict[str, Any]:
    """A careless caller: participants' phones and last names are in the context."""
    plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in ctx.items()}
    plain["mentor"] |= {"phone": MENTOR_PHONE, "last_name": "Dumas"}
    plain["mentee"] |= {"phone": MENTEE_PHONE, "last_name": "Benali"}
    return plain


@pytest.mark.parametrize(("kind", "lang", "role"), [c for c in CASES if c[2] is not Role.REFERENT])
def test_no_participant_phone_in_any_email(renderer: Renderer, kind: EmailKind, lang: str, role: Role) -> None:
    out = renderer.render(kind, lang, _with_phones(sample_context(kind, lang, role)))
    raw = message(out, kind=kind).decode("ascii", "replace")
    for phone in (MENTOR_PHONE, MENTEE_PHONE):
        digits = phone.replace(" ", "")
        for blob in (out.subject, out.text, out.html, raw):
            squeezed = re.sub(r"[\s.\-\u00a0]", "", blob)  # spaced, dotted or NBSP-joined forms
            assert phone not in blob and digits not in squeezed


def test_names_are_escaped_in_html_and_intact_in_text(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.INTRODUCTION, "fr", Role.MENTOR)
    ctx["recipient"] = dataclasses.replace(ctx["recipient"], first_name=NASTY)
    ctx["mentee"] = dataclasses.replace(ctx["mentee"], first_name=NASTY, sector="R&D <script>")
    out = renderer.render(EmailKind.INTRODUCTION, "fr", ctx)
    assert NASTY in flat(out.text) and "R&D <script>" in out.text
    assert str(escape(NASTY)) in out.html
    assert NASTY not in out.html and "<b>Zoé" not in out.html and "<script>" not in out.html


def test_digest_lists_sections_and_says_when_nothing_is_new(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.DIGEST, "fr", Role.REFERENT)
    full = renderer.render(EmailKind.DIGEST, "fr", ctx)
    assert "Appels à passer" in full.text and "P12" in full.text and "clôture P7" in full.text
    assert "Rien de nouveau" not in full.text
    ctx["digest"] = DigestInfo(date=NOW.date(), sections=(), counts={})
    for lang, words in (("fr", "Rien de nouveau aujourd'hui — le service fonctionne"), ("en", "Nothing new today")):
        empty = renderer.render(EmailKind.DIGEST, lang, ctx)
        assert words in empty.text and words in empty.html


def test_urgent_alert_names_who_and_where_not_what(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.URGENT_ALERT, "fr", Role.REFERENT)
    out = renderer.render(EmailKind.URGENT_ALERT, "fr", ctx)
    assert "mailflow pairs show P12" in out.text and "Yanis" in out.text and "P12" in out.subject


def test_missing_variable_is_an_error(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.INTRODUCTION, "fr", Role.MENTOR)
    del ctx["mentee"]
    with pytest.raises(RenderError, match="mentee"):
        renderer.render(EmailKind.INTRODUCTION, "fr", ctx)


def test_bad_url_is_refused(renderer: Renderer) -> None:
    ctx = sample_context(EmailKind.CLOSURE, "fr", Role.MENTOR)
    ctx["programme"] = dataclasses.replace(ctx["programme"], survey_url="javascript:alert(1)")
    with pytest.raises(RenderError):
        renderer.render(EmailKind.CLOSURE, "fr", ctx)


# ---- EmailMessage ----


@pytest.fixture(scope="module")
def rendered(renderer: Renderer) -> RenderedEmail:
    return renderer.render(EmailKind.FOLLOWUP, "fr", sample_context(EmailKind.FOLLOWUP, "fr", Role.MENTEE))


def test_message_headers_and_parts(rendered: RenderedEmail) -> None:
    msg = message(rendered, in_reply_to="<prev@example.net>", references=["<first@example.net>"])
    parsed = reparse(msg)
    assert parsed["Message-ID"] == "<abc123@example.org>"
    assert parsed["From"].addresses[0].addr_spec == "mentorat@example.org"
    assert parsed["From"].addresses[0].display_name == "Programme de mentorat"
    assert [a.addr_spec for a in parsed["To"].addresses] == ["zoe@example.net"]
    assert parsed["Reply-To"].addresses[0].addr_spec == "mentorat+AbC-12_x@example.org"  # case kept
    assert parsed["Subject"] == rendered.subject
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["X-Mailflow-Kind"] == "followup"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["In-Reply-To"] == "<prev@example.net>"
    assert parsed["References"] == "<first@example.net> <prev@example.net>"
    assert parsed["Date"].datetime == NOW
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered.text  # type: ignore[union-attr]
    assert "Cc" not in parsed and "Bcc" not in parsed
    lines = msg.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)  # headers folded, quoted-printable bodies
    assert b"\n" not in msg.replace(b"\r\n", b"") and b"\r" not in msg.replace(b"\r\n", b"")


def test_no_reply_to_and_no_threading(rendered: RenderedEmail) -> None:
    parsed = reparse(message(rendered, reply_to=None))
    assert "Reply-To" not in parsed and "In-Reply-To" not in parsed and "References" not in parsed


EXPECTED = {
    "message-id", "date", "from", "to", "reply-to", "subject", "mime-version", "auto-submitted",
    "x-auto-response-suppress", "x-mailflow-kind", "content-type",
}  # fmt: skip

INJECTIONS = [
    "Zoé\r\nBcc: evil@x",
    "Zoé\nBcc: evil@x",
    "Zoé\rBcc: evil@x",
    "Zoé\u2028Bcc: evil@x",
    "Zoé\x85Bcc: evil@x",
    "Zoé\x0bBcc: evil@x\x0c",
    "=?utf-8?q?a=0AInjected:_x?=",
    "=?utf-8?b?YQpJbmplY3RlZDogeA==?=",
    "Zoé =?utf-8?q?=0D=0ABcc:_evil@x?= Martin",
    "Éloïse-Anaïs Françoise-Hélène " * 12 + "\nInjected: x",
    "Ζωή Παπαδοπούλου Ζωή Παπαδοπούλου Ζωή Παπαδοπούλου Ζωή Παπαδοπούλου\r\n Injected: x",
    '"Quoted" <b>Zoé</b> & Co, Inc. <evil@x>',
    "\x00\x01\x1b[31mZoé\x7f",
]


def _assert_clean(raw: bytes) -> EmailMessage:
    parsed = reparse(raw)
    assert {k.lower() for k in parsed} == EXPECTED
    for key in parsed:
        assert "\n" not in str(parsed[key]) and "\r" not in str(parsed[key])
    assert [a.addr_spec for a in parsed["To"].addresses] == ["zoe@example.net"]
    assert b"\nBcc" not in raw and b"\nInjected" not in raw.replace(b"\r\n ", b"")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"\r\n(Bcc|Injected|Cc):", head, re.I)
    assert all(b < 0x80 for b in head)  # headers are 7-bit (encoded words)
    return parsed


@pytest.mark.parametrize("name", INJECTIONS)
def test_display_name_injection_is_neutralised(rendered: RenderedEmail, name: str) -> None:
    parsed = _assert_clean(message(rendered, to_name=name, from_name=name))
    shown = parsed["To"].addresses[0].display_name
    assert "Bcc: evil@x" not in shown.replace("\n", "") or "\n" not in shown


@pytest.mark.parametrize("subject", INJECTIONS)
def test_subject_injection_is_neutralised(rendered: RenderedEmail, subject: str) -> None:
    _assert_clean(message(dataclasses.replace(rendered, subject=subject)))


def test_name_with_escapes_survives_round_trip(rendered: RenderedEmail) -> None:
    parsed = reparse(message(rendered, to_name=NASTY))
    assert parsed["To"].addresses[0].display_name == NASTY


@pytest.mark.parametrize(
    "field",
    ["to_address", "from_address", "reply_to"],
)
@pytest.mark.parametrize(
    "bad",
    [
        "zoe@example.net\r\nBcc: evil@x",
        "zoe@example.net, evil@x",
        "Zoé <zoe@example.net>",
        "no-at-sign",
        "a b@example.net",
        "zoé@example.net",
        "",
    ],
)
def test_bad_addresses_are_refused(rendered: RenderedEmail, field: str, bad: str) -> None:
    if field == "reply_to" and bad == "":
        return  # an empty Reply-To means none
    with pytest.raises(UnsafeHeaderError):
        message(rendered, **{field: bad})


@pytest.mark.parametrize("bad", ["abc@example.org", "<a@b>\r\nBcc: x", "<a b@c>", "<>", "<a@b> <c@d>"])
def test_bad_message_id_is_refused(rendered: RenderedEmail, bad: str) -> None:
    with pytest.raises(ValueError):
        message(rendered, message_id=bad)


def test_unsafe_threading_ids_are_dropped(rendered: RenderedEmail) -> None:
    parsed = reparse(message(rendered, in_reply_to="<a@b>\r\nBcc: x", references=["junk", "<ok@x>", "<b@c>\nX: y"]))
    assert "In-Reply-To" not in parsed
    assert parsed["References"] == "<ok@x>"


def test_naive_date_is_refused(rendered: RenderedEmail) -> None:
    with pytest.raises(ValueError):
        message(rendered, date=datetime(2025, 1, 1))


def test_make_message_id() -> None:
    first, second = make_message_id("example.org"), make_message_id("example.org")
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.org>", first) and first != second
    with pytest.raises(ValueError):
        make_message_id("bad domain\r\n")

"""The outgoing message writer (mailflow.core.mail.build): what it writes re-parses to what it was given."""

from __future__ import annotations

import binascii
import textwrap
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.policy import default, strict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core import addresses
from mailflow.core.mail import build
from mailflow.render import _wrap

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


def _decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


@given(TEXT)
@settings(max_examples=300, deadline=None)
def test_encoded_words_round_trip_and_stay_short(text: str) -> None:
    words = build.encoded_words(text)
    assert all(len(w) <= 75 for w in words)  # RFC 2047 2: an encoded word is at most 75 characters
    for word in words:  # each word is whole UTF-8 on its own: never split inside a character
        raw = decode_header(word)[0][0]
        assert isinstance(raw, bytes)
        raw.decode("utf-8")
    assert "".join(str(make_header(decode_header(w))) for w in words) == text


@given(st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30), max_size=20))
def test_fold_keeps_lines_short_and_tokens_whole(tokens: list[str]) -> None:
    folded = build.fold("Subject", tokens)
    lines = folded.split("\r\n")
    assert all(len(line) <= build.MAX_LINE for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])
    assert folded.replace("\r\n", "").split(" ")[1:] == tokens


@pytest.mark.parametrize("bad", ["a\r\nBcc: x", "a\nb", "a\rb", "a\x00", "a\x0bb", "a\u2028b", "a\x85b"])
def test_header_refuses_line_breaks_and_controls(bad: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        build.header("X-Test", [bad])


@pytest.mark.parametrize(
    ("name", "expected_token"),
    [("Zoé Martin", "=?utf-8?b?"), ('Dupont, "Jr."', '"Dupont, \\"Jr.\\""'), ("Claire Dumas", "Claire")],
)
def test_display_names_are_atoms_quoted_or_encoded(name: str, expected_token: str) -> None:
    value = build.address_header("To", name, "zoe@example.net")
    assert expected_token in value
    parsed = BytesParser(policy=default).parsebytes(value.encode("ascii") + b"\r\n\r\n")
    assert parsed["To"].addresses[0].display_name == name
    assert parsed["To"].addresses[0].addr_spec == "zoe@example.net"


@given(TEXT.filter(lambda t: "\r" not in t))
@settings(max_examples=200, deadline=None)
def test_quoted_printable_round_trip_with_crlf_lines(text: str) -> None:
    body = build.quoted_printable(text)
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert binascii.a2b_qp(body).decode("utf-8").replace("\r\n", "\n") == text


def test_alternative_parses_strictly_without_defects() -> None:
    text = "Bonjour Zoé,\n\n1 = tout va bien\n.\nFrom here\n" + "é" * 200 + "\n"
    html = "<!DOCTYPE html><html><body><p>Bonjour Zoé</p></body></html>\n"
    raw = build.alternative([build.text_header("Subject", "Votre point — mars"), "Message-ID: <a@b.c>"], text, html)
    msg = BytesParser(policy=strict).parsebytes(raw)
    assert msg.defects == [] and all(part.defects == [] for part in msg.walk())
    assert msg["Subject"] == "Votre point — mars" and msg.get_content_type() == "multipart/alternative"
    plain, rich = list(msg.iter_parts())
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n") == html
    boundary = msg.get_boundary()
    assert boundary is not None and boundary.startswith("=_")  # never produced by quoted-printable


@given(
    st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=1, max_size=25), min_size=1, max_size=40),
    st.sampled_from([10, 20, 40, 76]),
    st.sampled_from(["", "   ", "     "]),
    st.sampled_from([None, "", " - "]),
)
@settings(max_examples=500, deadline=None)
def test_fast_wrap_is_textwrap(words: list[str], width: int, indent: str, first: str | None) -> None:
    words = [w for w in ("".join(w.split()) for w in words) if w] or ["x"]
    text = " ".join(words)
    expected = textwrap.fill(
        text, width=width, initial_indent=indent if first is None else first, subsequent_indent=indent,
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip
    assert _wrap(text, width, indent, first) == expected


def test_unsafe_character_class_is_the_neutral_set() -> None:
    """The regex used to neutralise header text matches exactly the characters `_neutral` names."""
    differ = [c for c in range(0x110000) if addresses._neutral(chr(c)) != bool(addresses._UNSAFE_RE.match(chr(c)))]
    assert differ == []


def test_space_class_is_str_isspace() -> None:
    assert [c for c in range(0x110000) if chr(c).isspace() != bool(addresses._SPACE_RE.match(chr(c)))] == []

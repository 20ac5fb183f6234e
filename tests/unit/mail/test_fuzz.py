"""Property: parse_message never raises and always gives a kind, on arbitrary and mutated mail."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow.core.mail import classify_intent, parse_message
from mailflow.core.mail.intent import Vocabulary
from mailflow.core.model import Intent, MessageKind
from mailflow.vocabulary import load_vocabulary
from tests.unit.mail.corpus import corpus_files

SEEDS = [p.read_bytes() for folder in ("talon", "flufl_bounce", "cpython_test_email") for p in corpus_files(folder)][:120]
VOCABULARY: Vocabulary = load_vocabulary()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with a few byte-level edits: cut, splice, flip, duplicate a slice."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 200))]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\r\n", b"--", b"=?utf-8?b?", b">", b"\x00", b"Content-Type: multipart/mixed; boundary=x\r\n", b"\xc3", b"=\r\n"])
            )
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 400))]
    return bytes(data)


def _check(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.kind in MessageKind
    assert len(parsed.raw_sha256) == 64
    assert classify_intent(parsed.text, replied_kind=None, vocabulary=VOCABULARY) in Intent


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(raw: bytes) -> None:
    _check(raw)


@FAST
@given(mutated())
def test_mutated_real_messages(raw: bytes) -> None:
    _check(raw)


@pytest.mark.slow
@LONG
@given(st.one_of(st.binary(max_size=20000), mutated()))
def test_long_fuzz(raw: bytes) -> None:
    _check(raw)
